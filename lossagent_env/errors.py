"""Errors shared across the project that a person is expected to act on."""

from __future__ import annotations

import os

__all__ = ["MissingWeightsError"]


class MissingWeightsError(RuntimeError):
    """A weight file a metric or loss needs is not installed.

    This project never downloads at run time: every file is installed once from a
    local copy (``lossagent assets install NAME --from PATH``). The message is one
    paragraph that says what needs the file, where it is expected and how to
    install it.

    Attributes:
        what: The component that needs the file, e.g. ``"metric 'niqe'"``.
        filename: Base name of the missing file.
        expected_path: Full path where the file is looked up.
        install_hint: A shell command that installs the file from a local copy.
    """

    def __init__(
        self,
        what: str,
        filename: str,
        expected_path: str | os.PathLike[str],
        install_hint: str,
    ) -> None:
        self.what = what
        self.filename = filename
        self.expected_path = expected_path
        self.install_hint = install_hint
        super().__init__(
            f"{what} needs the weight file {filename}, expected at {expected_path}. "
            "It is not there and this project never downloads at run time. "
            f"Install it from a local copy with: {install_hint}"
        )

    def __reduce__(self):  # keeps the error picklable across worker processes
        return (
            type(self),
            (self.what, self.filename, self.expected_path, self.install_hint),
        )
