"""The answer schema of the LLM agent and the validation of its answers.

The schema is a Pydantic model built from the env's loss names: one float field per loss
(bounds ``[0, 1]`` stated in the JSON schema the model sees, every field listed as
required) plus a short ``rationale``. Parsing is lenient where a repair is safe, so that
the agent can count each repair instead of re-asking (:func:`validate_answer`: clipped,
filled); NaN and infinity do not parse, so such an answer is asked again.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = [
    "ANSWER_SCHEMA_NAME",
    "PRESET_SCHEMA_NAME",
    "RATIONALE_LIMIT",
    "RATIONALE_MAX_CHARS",
    "RationaleChars",
    "make_answer_schema",
    "make_preset_schema",
    "summary",
    "validate_answer",
    "validate_preset_answer",
]

ANSWER_SCHEMA_NAME = "LossWeights"
"""Name of the schema (the tool name under function calling)."""

PRESET_SCHEMA_NAME = "PresetChoice"
"""Name of the schema on a preset env (a choice among named weight vectors)."""

DEFAULT_WEIGHT = 0.5
"""Weight used for a missing value when there is no previous decision."""

_RESERVED = set(dir(BaseModel)) | {"rationale"}

RATIONALE_MAX_CHARS = 160
"""Default longest rationale, in characters (one or two short sentences), stated in the
JSON schema (``maxLength``, see :func:`_rationale`). The rationale never enters the
history, so its length does not change a greedy decoder's decisions; it is most of the
embedded model's generated tokens, and so most of its answer time."""


def summary(description: str, max_chars: int = 160) -> str:
    """The first sentence of ``description``, at most ``max_chars`` characters."""
    text = " ".join(str(description).split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    first = match.group(1) if match else text
    if len(first) > max_chars:
        first = first[: max_chars - 3].rstrip() + "..."
    return first


RATIONALE_LIMIT = 1000
"""Longest rationale that may be asked for (``rationale_chars``): a paragraph, about 250
tokens. Every character asked for is one the embedded model may have to generate in
its small context, in every decision; a limit of millions makes it write until the
request fails, and the agent fall back at every stage."""

RationaleChars = Annotated[int, Field(strict=True, ge=1, le=RATIONALE_LIMIT)]
"""A valid ``rationale_chars``: an integer in ``[1, RATIONALE_LIMIT]``."""


def _field_name(loss: str, taken: set[str]) -> str:
    name = re.sub(r"\W", "_", loss)
    if not name or name[0].isdigit() or keyword.iskeyword(name) or name in _RESERVED or name.startswith("_"):
        name = f"w_{name}"
    base, k = name, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _schema_extra(schema: dict[str, Any], model: type[BaseModel]) -> None:
    # The model is told every field is required and sees no defaults; parsing stays
    # lenient (see the module docstring).
    properties = schema.get("properties", {})
    for prop in properties.values():
        prop.pop("default", None)
    schema["required"] = list(properties)


class _AnswerBase(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", json_schema_extra=_schema_extra)


def _rationale(why: str, chars: int) -> tuple[type, Any]:
    """The ``rationale`` field. Its length bounds are in the JSON schema only: a
    constrained decoder (the embedded model's grammar) enforces them, so a small model can
    neither ramble until its token limit nor leave it empty; other answers still parse."""
    description = f"One or two short sentences: why {why}, given the history."
    return str, Field(default="", description=description, json_schema_extra={"minLength": 1, "maxLength": chars})


def make_answer_schema(
    loss_names: Sequence[str],
    descriptions: Mapping[str, str] | None = None,
    *,
    rationale_chars: int = RATIONALE_MAX_CHARS,
) -> type[BaseModel]:
    """Build the answer model for ``loss_names``.

    Args:
        loss_names: The env's losses, in action order. Names that are not Python
            identifiers (``"iqa:lpips"``) become aliases: the JSON key is the loss name.
        descriptions: Loss name -> description; each field is described by its first
            sentence. None: fields name their loss only (the LLM agent's system prompt
            already holds the loss table, and the schema is shown to the model too).
        rationale_chars: Longest rationale stated in the JSON schema (``maxLength``), an
            integer in ``[1, RATIONALE_LIMIT]`` (checked by :class:`~agents.llm.LLMAgent`).

    Returns:
        A Pydantic model named ``LossWeights`` with one ``float`` field per loss (JSON
        key = loss name, ``None`` when missing, NaN/inf rejected, bounds ``[0, 1]`` in
        the JSON schema only) and ``rationale: str``. ``model.__loss_fields__`` maps
        loss name -> attribute name.
    """
    descriptions = descriptions or {}
    taken: set[str] = set()
    fields: dict[str, Any] = {}
    mapping: dict[str, str] = {}
    for loss in loss_names:
        attr = _field_name(loss, taken)
        mapping[loss] = attr
        text = summary(descriptions.get(loss, "")) if descriptions.get(loss) else ""
        description = f"Weight of the loss '{loss}' for the next stage, between 0 and 1 (0 switches it off). {text}"
        fields[attr] = (float, Field(
            default=None, alias=loss, description=description.strip(),
            json_schema_extra={"minimum": 0.0, "maximum": 1.0}, allow_inf_nan=False,
        ))
    fields["rationale"] = _rationale("these weights", rationale_chars)
    model = create_model(
        ANSWER_SCHEMA_NAME,
        __base__=_AnswerBase,
        __doc__="Loss weights for the next training stage: one number in [0, 1] per loss, and a short rationale.",
        **fields,
    )
    model.__loss_fields__ = mapping  # type: ignore[attr-defined]
    return model


def validate_answer(
    answer: BaseModel | Mapping[str, Any], loss_names: Sequence[str], previous: np.ndarray | None
) -> tuple[np.ndarray, list[dict[str, Any]], str]:
    """Turn a parsed answer into an action, repairing and recording what it must.

    Args:
        answer: An instance of :func:`make_answer_schema`'s model, or a dict keyed by
            loss name.
        loss_names: Action order.
        previous: The previous weights, ``(n_losses,)`` in ``[0, 1]``, or None at the
            first decision (missing values then become 0.5).

    Returns:
        ``(action, corrections, rationale)``: ``float32 (n_losses,)`` in ``[0, 1]``;
        one dict per repair, ``{"loss", "kind": "clipped" | "filled", "value", "to"}``;
        the rationale text.

    Raises:
        ValueError: A value is NaN or infinite (such answers are asked again).
    """
    if isinstance(answer, BaseModel):
        mapping = getattr(type(answer), "__loss_fields__", {n: n for n in loss_names})
        values = {loss: getattr(answer, mapping[loss], None) for loss in loss_names}
        rationale = str(getattr(answer, "rationale", "") or "")
    else:
        values = {loss: answer.get(loss) for loss in loss_names}
        rationale = str(answer.get("rationale", "") or "")
    action = np.empty(len(loss_names), dtype=np.float64)
    corrections: list[dict[str, Any]] = []
    for i, loss in enumerate(loss_names):
        value = values[loss]
        if value is None:
            fill = float(previous[i]) if previous is not None else DEFAULT_WEIGHT
            corrections.append({"loss": loss, "kind": "filled", "value": None, "to": fill})
            action[i] = fill
            continue
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"The weight of {loss!r} is {value!r}. Allowed: a finite number in [0, 1].")
        clipped = min(max(value, 0.0), 1.0)
        if clipped != value:
            corrections.append({"loss": loss, "kind": "clipped", "value": value, "to": clipped})
        action[i] = clipped
    return action.astype(np.float32), corrections, rationale


def make_preset_schema(preset_names: Sequence[str], *, rationale_chars: int = RATIONALE_MAX_CHARS) -> type[BaseModel]:
    """The answer model on a preset env: one preset by name (an enum) and a rationale.

    Args:
        preset_names: The env's presets, in action order.
        rationale_chars: Longest rationale stated in the JSON schema (``maxLength``).

    Returns:
        A Pydantic model named ``PresetChoice`` with ``preset`` (one of the names; the
        JSON schema lists them as an enum, which a constrained decoder enforces) and
        ``rationale: str``.
    """
    names = tuple(str(n) for n in preset_names)
    # A Literal over names known only at run time: a valid type for Pydantic, not for mypy.
    preset_type: Any = Literal[names]
    return create_model(
        PRESET_SCHEMA_NAME,
        __base__=_AnswerBase,
        __doc__="The preset of loss weights for the next training stage, and a short rationale.",
        preset=(preset_type, Field(description=f"The name of one preset: {', '.join(names)}.")),
        rationale=_rationale("this preset", rationale_chars),
    )


def validate_preset_answer(answer: BaseModel | Mapping[str, Any], preset_names: Sequence[str]) -> tuple[int, str]:
    """The preset index and rationale of a parsed :func:`make_preset_schema` answer.

    Raises:
        ValueError: The answer names no preset of the env (it is asked again).
    """
    if isinstance(answer, BaseModel):
        name, rationale = getattr(answer, "preset", None), getattr(answer, "rationale", "")
    else:
        name, rationale = answer.get("preset"), answer.get("rationale", "")
    if not isinstance(name, str) or name not in preset_names:
        raise ValueError(f"{name!r} is not a preset. Allowed: one of {list(preset_names)}.")
    return list(preset_names).index(name), str(rationale or "")
