"""Random weights: the floor every other agent should beat."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.base import BaseAgent
from lossagent_env.arguments import Positive, check_arguments

__all__ = ["RandomAgent"]


class _RandomArguments(BaseModel):
    """What :class:`RandomAgent`'s arguments may be."""

    model_config = ConfigDict(strict=True, extra="forbid")

    distribution: Literal["uniform", "dirichlet"]
    alpha: Positive
    hold: Annotated[int, Field(strict=True, ge=1)]


class RandomAgent(BaseAgent):
    """Draws fresh weights every ``hold`` stages from the agent's own RNG (on a preset
    env: a preset, uniformly).

    Args:
        distribution: ``"uniform"`` (each weight i.i.d. in ``[0, 1]``) or
            ``"dirichlet"`` (a point of the simplex: weights sum to 1).
        alpha: Concentration of the Dirichlet distribution (1 = flat over the simplex).
        hold: Keep each draw for this many stages (``>= 1``).
        initial_weights: Weights of the first stage (see :class:`BaseAgent`).

    Raises:
        ValueError: Unknown ``distribution``, ``alpha`` not a finite number ``> 0``, or
            ``hold`` not an integer ``>= 1``.
    """

    name = "random"

    def __init__(
        self,
        distribution: str = "uniform",
        *,
        alpha: float = 1.0,
        hold: int = 1,
        initial_weights: Mapping[str, float] | Sequence[float] | None = None,
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        checked = check_arguments(
            _RandomArguments, "RandomAgent", {"distribution": distribution, "alpha": alpha, "hold": hold}
        )
        self.distribution = checked.distribution
        self.alpha = checked.alpha
        self.hold = checked.hold
        self._current: np.ndarray | int | None = None

    def _reset(self) -> None:
        self._current = None

    def _draw(self) -> np.ndarray | int:
        assert self.spec is not None
        if self.spec.discrete:  # a preset env: a preset drawn uniformly
            return int(self.rng.integers(len(self.spec.preset_names)))
        n = self.spec.n_losses
        if self.distribution == "uniform":
            return self.rng.uniform(0.0, 1.0, n).astype(np.float32)
        return np.clip(self.rng.dirichlet(np.full(n, self.alpha)), 0.0, 1.0).astype(np.float32)

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        held = self._current is not None and self.t % self.hold != 0
        if not held:
            self._current = self._draw()
        self._notes = {"held": bool(held)}
        assert self._current is not None
        return np.copy(self._current)

    def __repr__(self) -> str:
        return f"RandomAgent({self.distribution!r}, hold={self.hold})"
