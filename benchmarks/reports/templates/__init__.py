"""Markdown templates of the benchmark reports, as :class:`string.Template` fragments.

A template file holds named fragments: each starts at a line ``<!-- fragment NAME -->``
and runs to the next one, without the blank lines around it. ``$name`` is filled in
by the report (``$$`` is a dollar sign); lists and optional parts are put together in
Python, each fragment rendered once per item, and the blocks of a report are joined
by one blank line (:func:`join_blocks`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from importlib.resources import files
from string import Template

__all__ = ["fragments", "join_blocks"]

_MARKER = re.compile(r"^<!-- fragment ([a-z_]+) -->$", re.MULTILINE)


@cache
def fragments(name: str) -> dict[str, Template]:
    """The fragments of the template file ``name`` shipped in this package.

    Args:
        name: File name, e.g. ``"report.md"``.

    Returns:
        ``{fragment name: template}``, in the order of the file.
    """
    text = files(__package__).joinpath(name).read_text(encoding="utf-8")
    parts = _MARKER.split(text)[1:]  # the file's own comment, before the first marker, is dropped
    return {key: Template(body.strip("\n")) for key, body in zip(parts[::2], parts[1::2], strict=True)}


def join_blocks(blocks: Iterable[str]) -> str:
    """Markdown blocks separated by one blank line (empty ones left out), ending with a line break."""
    return "\n\n".join(block for block in blocks if block) + "\n"
