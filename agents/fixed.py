"""Fixed weights for the whole episode: the hand-tuned baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.base import BaseAgent, resolve_weights
from agents.presets import named_mixes, weight_presets
from lossagent_env.registry import unknown_name_message

__all__ = ["FixedAgent"]


class FixedAgent(BaseAgent):
    """Plays the same weights at every stage.

    Args:
        weights: A preset name (``"pixel"``: l1 only, the default;
            ``"pixel+structure"``; ``"esrgan"``: pixel:perceptual:adversarial = 1:1:0.1,
            with the offline fallback described in :mod:`agents.presets`; ``"uniform"``;
            or any name from :func:`agents.presets.weight_presets`, e.g. a single loss),
            or explicit weights ``{loss: weight}`` / a vector, in action units ``[0, 1]``
            (losses left out of a dict get 0).
        initial_weights: Weights of the first stage only (see :class:`BaseAgent`).

    Raises (at ``reset``):
        KeyError: Unknown preset or loss name (with a "Did you mean" hint).
        ValueError: A weight outside ``[0, 1]``.
    """

    name = "fixed"

    def __init__(
        self,
        weights: str | Mapping[str, float] | Sequence[float] = "pixel",
        *,
        initial_weights: Mapping[str, float] | Sequence[float] | None = None,
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        self.weights = weights
        self._action = np.zeros(0, np.float32)

    def _reset(self) -> None:
        assert self.spec is not None
        if isinstance(self.weights, str):
            presets = {**weight_presets(self.spec), **named_mixes(self.spec)}
            if self.weights not in presets:
                raise KeyError(unknown_name_message("weight preset", self.weights, presets))
            self._action = presets[self.weights].copy()
        else:
            self._action = resolve_weights(self.spec, self.weights)

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        self._notes = {"preset": self.weights if isinstance(self.weights, str) else "custom"}
        return self._action.copy()

    def __repr__(self) -> str:
        return f"FixedAgent({self.weights!r})"
