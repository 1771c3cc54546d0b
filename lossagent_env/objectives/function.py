"""An objective given by a user's function of the restored and target images."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lossagent_env.metrics import OPEN_BOUND
from lossagent_env.objectives.base import Objective, ObjectiveResult

__all__ = ["CallableObjective"]


class CallableObjective(Objective):
    """An objective given by a function ``fn(restored, target) -> float``, higher is better.

    Args:
        fn: Called with the ``(N, C, H, W)`` restored and target batches in ``[0, 1]``;
            returns one finite number (a float, or a one-element tensor/array).
        name: Key of the value in the observation's ``"metrics"`` (default ``"custom"``).
        bounds: Finite ``(low, high)`` for the observation ``Box``; default
            ``(-1e6, 1e6)``. Values outside are clipped in observations only.
        description: One line for the LLM prompt on what ``fn`` measures.

    Raises:
        ValueError: ``fn`` not callable, empty name, or bad bounds.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor], float],
        name: str = "custom",
        *,
        bounds: tuple[float, float] = (-OPEN_BOUND, OPEN_BOUND),
        description: str | None = None,
    ):
        super().__init__()
        if not callable(fn):
            raise ValueError(f"CallableObjective needs a callable fn(restored, target) -> float; got {fn!r}.")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"CallableObjective name must be a non-empty string; got {name!r}.")
        low, high = (float(b) for b in bounds)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"bounds must be finite with low < high; got {bounds!r}.")
        self.fn = fn
        self.name = name
        self.description = description or f"a user-supplied function {name}(restored, target)"
        self.metric_names = (name,)
        self.lower_better = {name: False}
        self.bounds = {name: (low, high)}

    def evaluate(
        self, restored: torch.Tensor, target: torch.Tensor, *, degraded: torch.Tensor | None = None,
        stage: int = 0, weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """Call ``fn(restored, target)``; its value is both the metric and ``J``.

        Raises:
            ValueError: ``fn`` returned something that is not one finite number.
        """
        raw = self.fn(restored, target)
        try:
            value = float(raw.item() if hasattr(raw, "item") else raw)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"Objective function {self.name!r} returned {raw!r}; it must return one number."
            ) from error
        if not math.isfinite(value):
            raise ValueError(f"Objective function {self.name!r} returned {value!r}; it must return a finite number.")
        return ObjectiveResult(metrics={self.name: value}, value=value)

    def describe(self) -> str:
        return (
            f"The objective J is {self.description}, measured on the evaluation images after every stage; "
            f"a higher J is better. J = {self.name}. The reward of a stage is the change of J from the previous stage."
        )

    def __repr__(self) -> str:
        return f"CallableObjective({self.fn!r}, name={self.name!r})"
