"""Arguments checked by a pydantic schema, refused in one line that names them.

A class that takes arguments a user writes (an agent, a text objective, the retry
settings of a chat) declares them as a pydantic model and checks them once, when it is
built, so a wrong value is refused up front, by name. The agents
(:mod:`agents.arguments`) and the chat models of this package share it.

Example:
    >>> class _Args(BaseModel):
    ...     hold: Annotated[int, Field(strict=True, ge=1)]
    >>> check_arguments(_Args, "RandomAgent", {"hold": 0})
    Traceback (most recent call last):
    ValueError: RandomAgent(hold=0): Input should be greater than or equal to 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

__all__ = ["Finite", "NonNegative", "Positive", "check_arguments", "describe_problem"]

Model = TypeVar("Model", bound=BaseModel)

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite number (an integer is a number too; a bool or a string is not)."""
Positive = Annotated[float, Field(strict=True, gt=0.0, allow_inf_nan=False)]
"""A finite number ``> 0``."""
NonNegative = Annotated[float, Field(strict=True, ge=0.0, allow_inf_nan=False)]
"""A finite number ``>= 0``."""


def describe_problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``field: what is wrong (got value)``.

    Args:
        error: An entry of ``ValidationError.errors()``.
    """
    where = ".".join(map(str, error["loc"])) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if error["type"] == "missing" or isinstance(value, (dict, list)) or where == "(top level)":
        return f"{where}: {message}"
    return f"{where}: {message} (got {_short(value)})"


def check_arguments(model: type[Model], owner: str, values: Mapping[str, Any]) -> Model:
    """``values`` validated by ``model``, or a one-line error naming the first bad one.

    Args:
        model: The pydantic schema of the arguments.
        owner: Who takes them, for the message (e.g. ``"PPOAgent"``).
        values: Argument name -> value.

    Returns:
        The validated model.

    Raises:
        ValueError: ``"Owner(name=value): what is allowed."``; a rule over several
            arguments is reported as ``"Owner: ..."``.
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as e:
        error = e.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ").rstrip(".")
        if not error["loc"]:
            raise ValueError(f"{owner}: {message}.") from None
        name = ".".join(map(str, error["loc"]))
        value = values.get(name, error.get("input"))
        raise ValueError(f"{owner}({name}={_short(value)}): {message}.") from None


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
