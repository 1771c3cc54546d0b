"""Where a key is in a TOML file: the line of a key path, for error messages.

``tomllib`` parses without positions; suites and tables are small, hand-written files,
so a scanner that follows table headers (``[a.b]``, ``[[a]]`` with their index) and
``key = value`` lines finds the line of any key path, or of its nearest enclosing key.

Paths (``loc``) are tuples of keys and list indices, as pydantic reports them:
``("agents", 2, "kwargs")`` is written ``agents[2].kwargs`` (:func:`dotted`).
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["decode_error_line", "dotted", "file_loc", "locate"]


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def _split_key(key: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'""", key)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def locate(text: str | None, loc: Sequence) -> int | None:
    """1-based line of the key at ``loc`` (or of its nearest enclosing key/table)."""
    if text is None or not loc:
        return None
    loc = tuple(loc)
    best_line, best_len = None, 0
    table: tuple = ()
    array_index: dict[tuple[str, ...], int] = {}
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count('"""') % 2 or line.count("'''") % 2:
            in_multiline = not in_multiline
            if not in_multiline:
                continue
        elif in_multiline:
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            names = _split_key(header.group(2))
            if header.group(1) == "[[":
                key = tuple(names)
                array_index[key] = array_index.get(key, -1) + 1
            path: list = []
            for i in range(len(names)):
                path.append(names[i])
                index = array_index.get(tuple(names[: i + 1]))
                if index is not None:
                    path.append(index)
            table = tuple(path)
            candidate = table
        else:
            key_match = _KEY.match(line)
            if not key_match:
                continue
            candidate = table + tuple(_split_key(key_match.group(1)))
        n = sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], zip(candidate, loc)))
        if n == len(candidate) and n > best_len:
            best_line, best_len = number, n
    return best_line


def file_loc(data: Any, loc: tuple, keep_missing: bool) -> tuple:
    """The part of a pydantic error location that names keys of the file.

    Union members add their type name (``'str'``, ``'dict[str,float]'``) to the
    location; those are not keys and are cut off. A missing key is kept if
    ``keep_missing`` (the error is about that key).
    """
    out: list = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            if keep_missing and isinstance(node, dict) and isinstance(part, str):
                out.append(part)
            break
        out.append(part)
    return tuple(out)


def dotted(loc: Iterable) -> str:
    """``("agents", 2, "kwargs")`` -> ``"agents[2].kwargs"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def decode_error_line(error: tomllib.TOMLDecodeError) -> int | None:
    """1-based line of a TOML syntax error, or None if it does not say."""
    lineno = getattr(error, "lineno", None)
    if lineno:
        return int(lineno)
    match = re.search(r"line (\d+)", str(error))
    return int(match.group(1)) if match else None
