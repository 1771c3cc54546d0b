"""What every ``lossagent`` subcommand shares: exit codes, the usage error, the help
formatter and the parsers of command-line values."""

from __future__ import annotations

import argparse
import math
import tomllib
from collections.abc import Sequence
from typing import Any

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Formatter",
    "UsageError",
    "examples",
    "parse_objective",
    "parse_pairs",
    "parse_seeds",
    "parse_value",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


class Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions; keeps multi-line text (the examples) as written.
    Every subcommand gets it unless it names its own (:func:`benchmarks.cli.build_parser`)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def examples(*commands: str) -> str:
    """The closing text of a ``--help``: ``examples:``, then one command a line."""
    return "".join(["examples:\n", *(f"  {command}\n" for command in commands)])


def parse_value(text: str) -> Any:
    """A TOML value (``48``, ``1e-3``, ``true``, ``"x"``, ``[...]``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {pair!r} is not KEY=VALUE. Allowed: e.g. {what} patch_size=48")
        out[key.strip()] = parse_value(value.strip())
    return out


MAX_SEEDS = 10_000
"""Most seeds one ``--seeds`` may ask for (each seed is a run per agent and objective)."""


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix -> sorted unique seeds.

    Raises:
        UsageError: Not a seed list, an empty range, a negative seed, or more than
            :data:`MAX_SEEDS` seeds.
    """
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            bounds = [int(x) for x in part.split("-", 1)] if "-" in part[1:] else [int(part)]
        except ValueError:
            raise UsageError(f"--seeds {text!r} is not a seed list. Allowed: e.g. '0,1,2' or '0-4'") from None
        low, high = bounds[0], bounds[-1]
        if low > high:
            raise UsageError(
                f"--seeds {text!r}: the range {part!r} is empty (its first seed is above its last). "
                f"Allowed: e.g. '{high}-{low}'"
            )
        if high - low + 1 + len(seeds) > MAX_SEEDS:
            raise UsageError(f"--seeds {text!r} asks for more than {MAX_SEEDS} seeds. Allowed: at most {MAX_SEEDS}")
        seeds.update(range(low, high + 1))
    if not seeds or min(seeds) < 0:
        raise UsageError(f"--seeds {text!r}: seeds are integers >= 0, e.g. '0,1,2' or '0-4'")
    return sorted(seeds)


def parse_objective(text: str) -> str | dict[str, float]:
    """``"psnr"`` -> ``"psnr"``; ``"psnr:1,ssim:10"`` -> ``{"psnr": 1.0, "ssim": 10.0}``.

    Raises:
        UsageError: A weight is not a finite non-zero number.
    """
    if ":" not in text and "," not in text:
        return text.strip()
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            value = math.nan
        if not name.strip() or not math.isfinite(value) or value <= 0:
            raise UsageError(
                f"--objective {text!r}: {part!r} is not METRIC:WEIGHT with a weight > 0 "
                "(lower-is-better metrics are negated automatically). Allowed: e.g. psnr:1,ssim:10"
            )
        out[name.strip()] = value
    return out
