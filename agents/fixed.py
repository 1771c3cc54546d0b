"""Fixed weights for the whole episode: the hand-tuned baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.base import BaseAgent, preset_choice, resolve_weights
from agents.presets import named_mixes, weight_presets
from lossagent_env.registry import unknown_name_message

__all__ = ["FixedAgent"]


class FixedAgent(BaseAgent):
    """Plays the same weights at every stage.

    Args:
        weights: On a preset env (``PresetActions``, ``LossAgent/Tabular-v0``): the name
            (or index) of one of its presets. Otherwise a preset name (``"pixel"``: l1
            only, the default;
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
        if self.spec.discrete:  # a preset env: play one of its presets, by name or index
            if isinstance(self.weights, str) and self.weights not in self.spec.preset_names:
                raise KeyError(unknown_name_message("preset", self.weights, self.spec.preset_names))
            if isinstance(self.weights, (str, int, np.integer)):
                self._action = preset_choice(self.weights, self.spec.preset_names)
                return
            raise ValueError(
                f"FixedAgent(weights={self.weights!r}): on a preset env give a preset's name. "
                f"Allowed: {list(self.spec.preset_names)}."
            )
        if isinstance(self.weights, str):
            presets = {**weight_presets(self.spec), **named_mixes(self.spec)}
            if self.weights not in presets:
                raise KeyError(unknown_name_message("weight preset", self.weights, presets))
            self._action = presets[self.weights].copy()
        else:
            self._action = resolve_weights(self.spec, self.weights)

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        self._notes = {"preset": self.weights if isinstance(self.weights, str) else "custom"}
        return np.copy(self._action)

    def __repr__(self) -> str:
        return f"FixedAgent({self.weights!r})"
