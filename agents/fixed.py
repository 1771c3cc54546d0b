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
        weights: Explicit weights ``{loss: weight}`` / a vector, in action units
            ``[0, 1]`` (losses left out of a dict get 0); or, as ``preset``, a preset's
            name. Not on a preset env, whose actions are presets.
        preset: The name of a preset. On a preset env (``PresetActions``,
            ``LossAgent/Tabular-v0``): one of its presets (or its index). Otherwise a
            single loss or a mix of :func:`agents.presets.named_mixes` (``"pixel"``,
            ``"esrgan"``, ``"uniform"``, ...; docs/agents.md, "Presets").
        initial_weights: Weights of the first stage only (see :class:`BaseAgent`).

    With neither ``weights`` nor ``preset``: the env's first preset on a preset env
    (the reference preset of a table's report), else ``"pixel"``.

    Raises:
        ValueError: Both ``weights`` and ``preset``, or a value of the wrong type (at
            construction); at ``reset``, a weight outside ``[0, 1]`` or explicit
            weights on a preset env.
        KeyError: At ``reset``, an unknown preset or loss name (with a "Did you mean"
            hint).
    """

    name = "fixed"
    default_preset = "pixel"
    """The preset played on a continuous env when neither weights nor preset is given."""

    def __init__(
        self,
        weights: str | Mapping[str, float] | Sequence[float] | None = None,
        *,
        preset: str | int | None = None,
        initial_weights: Mapping[str, float] | Sequence[float] | None = None,
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        if weights is not None and preset is not None:
            raise ValueError(f"FixedAgent(weights={weights!r}, preset={preset!r}): give one of them, not both.")
        if preset is not None and (isinstance(preset, bool) or not isinstance(preset, (str, int))):
            raise ValueError(f"FixedAgent(preset={preset!r}): not a preset. Allowed: a preset's name.")
        if weights is not None and not _weights_like(weights):
            raise ValueError(
                f"FixedAgent(weights={weights!r}): not weights. Allowed: a preset's name, "
                "{loss: weight} or a list of weights in [0, 1]."
            )
        self.weights = weights
        self.preset = preset
        self._action: np.ndarray | int = np.zeros(0, np.float32)
        self._played = "custom"

    def _reset(self) -> None:
        assert self.spec is not None
        choice = self.preset if self.weights is None else self.weights
        if self.spec.discrete:  # a preset env: play one of its presets, by name or index
            self._reset_discrete(self.spec.preset_names[0] if choice is None else choice)
            return
        choice = self.default_preset if choice is None else choice
        if isinstance(choice, str):
            presets = {**weight_presets(self.spec), **named_mixes(self.spec)}
            if choice not in presets:
                raise KeyError(unknown_name_message("weight preset", choice, presets))
            self._action, self._played = presets[choice].copy(), choice
        elif isinstance(choice, int):  # bools are refused at construction
            raise ValueError(
                f"FixedAgent(preset={choice!r}): a preset index needs a preset env. "
                "Allowed here: a preset's name or weights."
            )
        else:
            self._action, self._played = resolve_weights(self.spec, choice), "custom"

    def _reset_discrete(self, choice: Any) -> None:
        assert self.spec is not None
        names = self.spec.preset_names
        if isinstance(choice, str) and choice not in names:
            raise KeyError(unknown_name_message("preset", choice, names))
        if isinstance(choice, (str, int, np.integer)) and not isinstance(choice, bool):
            self._action = preset_choice(choice, names)
            self._played = names[self._action]
            return
        raise ValueError(
            f"FixedAgent(weights={choice!r}): on a preset env give a preset's name. Allowed: {list(names)}."
        )

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        self._notes = {"preset": self._played}
        return self._action if isinstance(self._action, int) else np.copy(self._action)

    def __repr__(self) -> str:
        if self.preset is not None:
            return f"FixedAgent(preset={self.preset!r})"
        return f"FixedAgent({self.weights!r})" if self.weights is not None else "FixedAgent()"


def _weights_like(value: Any) -> bool:
    """A preset's name or index, a mapping, or a flat sequence of numbers."""
    if isinstance(value, (str, Mapping, np.ndarray)):
        return True
    if isinstance(value, (int, np.integer)):
        return not isinstance(value, bool)
    if isinstance(value, Sequence):
        return all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value)
    return False
