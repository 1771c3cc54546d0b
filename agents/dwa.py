"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019) over the loss repository.

DWA raises the weight of losses that decrease slowly. With ``L_i(t)`` the unweighted
value of loss ``i`` on the evaluation set after stage ``t`` (the observation's
``loss_values``), the rate is ``r_i = L_i(t-1) / L_i(t-2)`` and the weights are

    w_i = base_i * K * exp(r_i / T) / sum_j exp(r_j / T)

over the ``K`` losses whose base weight is non-zero, then divided by their maximum so
they lie in ``[0, 1]`` (the largest is 1). Until two loss values are known the base
weights are played (the paper uses ``r = 1`` for the first two epochs, which gives the
same weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from agents.base import BaseAgent, resolve_weights
from agents.presets import named_mixes
from lossagent_env.arguments import Positive, check_arguments
from lossagent_env.registry import unknown_name_message

__all__ = ["DWAAgent"]


class _DWAArguments(BaseModel):
    """What :class:`DWAAgent`'s arguments may be."""

    model_config = ConfigDict(strict=True, extra="forbid")

    temperature: Positive


class DWAAgent(BaseAgent):
    """Dynamic Weight Average from the observation's loss values.

    Args:
        temperature: ``T > 0``; large T gives near-equal weights (paper: 2).
        base: Which losses take part, and their base weights: a preset name of
            :func:`agents.presets.named_mixes` (default ``"uniform"``: every loss) or
            explicit weights (dict or vector, action units).
        initial_weights: Weights of the first stage (see :class:`BaseAgent`).

    Notes:
        A rate is 1 when either loss value is not positive or not finite (a ratio of
        such values says nothing about progress).
    """

    name = "dwa"

    def __init__(
        self,
        temperature: float = 2.0,
        *,
        base: str | Mapping[str, float] | Sequence[float] = "uniform",
        initial_weights: Mapping[str, float] | Sequence[float] | None = None,
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        self.temperature = check_arguments(_DWAArguments, "DWAAgent", {"temperature": temperature}).temperature
        self.base = base
        self._base = np.zeros(0, np.float32)
        self._history: list[np.ndarray] = []

    def _reset(self) -> None:
        assert self.spec is not None
        self._needs_continuous_weights("it rescales every loss's weight by its rate of descent")
        if isinstance(self.base, str):
            mixes = named_mixes(self.spec)
            if self.base not in mixes:
                raise KeyError(unknown_name_message("weight preset", self.base, mixes))
            self._base = mixes[self.base].copy()
        else:
            self._base = resolve_weights(self.spec, self.base, what="base")
        self._history = []

    def _on_initial(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        self._history.append(np.asarray(observation["loss_values"], dtype=np.float64).reshape(-1))

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        self._history.append(np.asarray(observation["loss_values"], dtype=np.float64).reshape(-1))
        active = self._base > 0
        if len(self._history) < 2 or not active.any():
            self._notes = {"rates": None}
            return self._base.copy()
        last, before = self._history[-1], self._history[-2]
        valid = np.isfinite(last) & np.isfinite(before) & (last > 0) & (before > 0)
        rates = np.ones_like(last)
        rates[valid] = last[valid] / before[valid]
        logits = np.where(active, rates / self.temperature, -np.inf)
        logits -= logits[active].max()
        soft = np.exp(logits)
        weights = self._base * active.sum() * soft / soft.sum()
        weights = weights / weights.max()
        assert self.spec is not None
        self._notes = {"rates": {n: float(r) for n, r in zip(self.spec.loss_names, rates)}}
        return np.clip(weights, 0.0, 1.0).astype(np.float32)

    def __repr__(self) -> str:
        return f"DWAAgent(temperature={self.temperature}, base={self.base!r})"
