"""Errors shared across the project that a person is expected to act on."""

from __future__ import annotations

import os

__all__ = ["ConfigError", "ConfigTypeError", "MissingWeightsError", "UnknownNameError"]


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

    def __init__(self, what: str, filename: str, expected_path: str | os.PathLike[str], install_hint: str) -> None:
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
        return (type(self), (self.what, self.filename, self.expected_path, self.install_hint))


class ConfigError(ValueError):
    """A configuration value refused, with the path of that value.

    The env's configuration (:class:`~lossagent_env.config.EnvConfig`) and the
    objective raise it, so that a caller that holds the settings in a file (a suite)
    locates the bad key from :attr:`loc`, never from the message.

    Attributes:
        loc: Path of the refused value: the ``EnvConfig`` field first (``"objective"``
            for the objective), then the part within it, e.g. ``("objective", "ssmi")``.
        message: One line that names the value and what is allowed.
    """

    def __init__(self, loc: tuple[str | int, ...] | str, message: str | None = None) -> None:
        if message is None:  # ConfigError(message), as code that re-raises type(e)(text) builds it
            loc, message = (), str(loc)
        self.loc = tuple(loc)
        self.message = message
        super().__init__(message)

    @property
    def field(self) -> str | int | None:
        """The ``EnvConfig`` field at fault (the first part of :attr:`loc`)."""
        return self.loc[0] if self.loc else None

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keeps the error picklable across worker processes
        return (type(self), (self.loc, self.message))


class UnknownNameError(ConfigError, KeyError):
    """A configuration value that names nothing known (e.g. a metric); the message has
    a "Did you mean" hint. A ``KeyError`` too, as every unknown name in this project."""


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value of the wrong type (a ``TypeError`` too)."""
