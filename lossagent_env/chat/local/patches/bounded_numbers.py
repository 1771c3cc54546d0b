"""Patch: the grammar of a forced tool call honours ``minimum``/``maximum`` of numbers.

llama-cpp-python turns a JSON schema into a GBNF grammar but ignores the bounds of
numbers, so SmolLM2 may answer a weight in [0, 1] with ``2.35`` or ``6.79e+29``. This
patch wraps ``llama_grammar.SchemaConverter.visit`` so that a bounded, non-negative
number or integer gets the rule of :func:`bounded_number_rule` (added through the
converter's private ``_add_rule``).
"""

from __future__ import annotations

import math
from typing import Any

from lossagent_env.chat.local.patches.base import Patch, absent

__all__ = ["PATCH", "bounded_number_rule", "install", "internals"]


def bounded_number_rule(schema: Any, decimals: int = 2) -> str | None:
    """GBNF rule body for a JSON number or integer with non-negative bounds.

    The rule allows only plain decimals (no exponent, at most ``decimals`` digits after
    the point) whose integer part lies within the bounds; it is exact for integer bounds
    such as [0, 1] and a tight superset otherwise (Pydantic still validates the value).
    Two decimals is the precision the LLM agent's history shows weights in; every
    further digit is one more generated token (SmolLM2 otherwise writes weights such as
    0.256479, a third of its answer).

    Args:
        schema: One JSON-schema node.
        decimals: Most digits after the decimal point.

    Returns:
        The rule body, or None when the node is not a bounded non-negative number
        (the converter's own rule is used then).
    """
    if not isinstance(schema, dict) or schema.get("type") not in ("number", "integer"):
        return None
    lo: Any = schema.get("minimum", schema.get("exclusiveMinimum"))  # JSON: checked just below
    hi: Any = schema.get("maximum", schema.get("exclusiveMaximum"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi < lo:
        return None
    if schema["type"] == "integer":
        first, last = math.ceil(lo), math.floor(hi)
        if last < first or last - first > 1000:
            return None
        return "(" + " | ".join(f'"{k}"' for k in range(first, last + 1)) + ") space"
    first, last = math.floor(lo), math.ceil(hi)
    if last - first > 1000:
        return None
    digits = '("." [0-9]' + " [0-9]?" * (decimals - 1) + ")?"
    zeros = '("." "0"' + ' "0"?' * (decimals - 1) + ")?"
    options = []
    if last > first:
        integral = " | ".join(f'"{k}"' for k in range(first, last))
        options.append(f"({integral}) {digits}")
    options.append(f'"{last}" {zeros}')
    return "(" + " | ".join(options) + ") space"


def internals() -> list[str]:
    """What the patch replaces or calls, where this llama-cpp-python lacks it."""
    return absent("llama_grammar.SchemaConverter.visit", "llama_grammar.SchemaConverter._add_rule", "llama_grammar.RESERVED_NAMES")


def install() -> None:
    """Wrap ``SchemaConverter.visit`` with :func:`bounded_number_rule`."""
    from llama_cpp import llama_grammar

    converter: Any = llama_grammar.SchemaConverter  # its method is replaced below
    original = converter.visit

    def visit(self: Any, schema: Any, name: str) -> str:
        rule = bounded_number_rule(schema)
        if rule is None:
            return original(self, schema, name)
        reserved = name in llama_grammar.RESERVED_NAMES
        return self._add_rule(name + "-" if reserved else name or "root", rule)

    converter.visit = visit


PATCH = Patch("bounded_numbers", "numbers in answers may fall outside their bounds", internals, install)
