"""What an agent knows of the env before an episode: :class:`AgentSpec`.

It is read from any LossAgent env (:meth:`AgentSpec.from_env`), wrapped or not, live or
a table replay; on a preset env (a ``Discrete`` action space) it lists the presets, and
the action is then a preset's index (:func:`preset_choice`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces as gym_spaces

from lossagent_env.registry import unknown_name_message
from lossagent_env.wrappers import preset_index

__all__ = ["AgentSpec", "preset_choice"]


@dataclass(frozen=True)
class AgentSpec:
    """What an agent knows about the env before the episode starts.

    Attributes:
        loss_names: Order of the action vector (``env.unwrapped.loss_names``).
        descriptions: Loss name -> one paragraph on what the loss does.
        scales: Loss name -> scale; effective weight = ``action[i] * scale``.
        roles: Loss name -> what the loss is for (``Loss.role``: pixel, structure,
            edges, frequency, perceptual, adversarial, smoothness).
        objective: The optimisation objective in words (``objective.describe()``).
        metric_names: Metrics the objective is made of.
        lower_better: Metric name -> True if lower values are better.
        max_stages: Stages in an episode (the budget).
        stage_iters: Training iterations per stage.
        task: The restoration task in words.
        env_id: Gymnasium id of the env, if it was made by ``gym.make``.
        presets: On a preset env (a ``Discrete`` action space: ``PresetActions`` or
            ``LossAgent/Tabular-v0``), the presets in action order, name -> weights
            (action units, in ``loss_names`` order); the action is then a preset's
            index. None on a continuous env (the action is the weight vector).
        action_space: The env's action space (not compared, not serialised).
        observation_space: The env's observation space (not compared, not serialised).
    """

    loss_names: tuple[str, ...]
    descriptions: Mapping[str, str]
    scales: Mapping[str, float]
    objective: str
    metric_names: tuple[str, ...]
    lower_better: Mapping[str, bool]
    max_stages: int
    stage_iters: int
    task: str = "image restoration"
    env_id: str | None = None
    roles: Mapping[str, str] = field(default_factory=dict)
    presets: Mapping[str, tuple[float, ...]] | None = None
    action_space: Any = field(default=None, compare=False, repr=False)
    observation_space: Any = field(default=None, compare=False, repr=False)

    @property
    def n_losses(self) -> int:
        """Length of the action vector."""
        return len(self.loss_names)

    @property
    def discrete(self) -> bool:
        """True on a preset env: the action is a preset's index."""
        return self.presets is not None

    @property
    def preset_names(self) -> tuple[str, ...]:
        """The presets' names in action order (empty on a continuous env)."""
        return tuple(self.presets or ())

    def preset_vector(self, index: int) -> np.ndarray:
        """The weights (``float32``, action units) that preset ``index`` plays."""
        return np.asarray(list((self.presets or {}).values())[index], np.float32)

    @classmethod
    def from_env(cls, env: Any) -> AgentSpec:
        """The spec of a LossAgent env (made by ``gym.make("LossAgent/...")``, wrapped or
        not): descriptions and scales from ``env.unwrapped.losses``, the objective text
        from ``env.unwrapped.objective.describe()``."""
        u = env.unwrapped
        names = tuple(u.loss_names)
        objective = u.objective
        config = u.config
        env_spec = getattr(env, "spec", None)
        presets = None
        if isinstance(getattr(env, "action_space", None), gym_spaces.Discrete):
            names_, weights = env.get_wrapper_attr("preset_names"), env.get_wrapper_attr("preset_weights")
            presets = {str(k): tuple(float(w) for w in row) for k, row in zip(names_, weights)}
        return cls(
            loss_names=names,
            descriptions={n: str(u.losses[n].description) for n in names},
            scales={n: float(u.losses[n].scale) for n in names},
            roles={n: str(getattr(u.losses[n], "role", "")) for n in names},
            objective=str(objective.describe()),
            metric_names=tuple(objective.metric_names),
            lower_better={m: bool(objective.lower_better[m]) for m in objective.metric_names},
            max_stages=int(config.max_stages),
            stage_iters=int(config.stage_iters),
            task=str(getattr(u, "task_description", "image restoration")),
            env_id=env_spec.id if env_spec is not None else None,
            presets=presets,
            action_space=env.action_space,
            observation_space=u.observation_space,
        )


def preset_choice(action: Any, names: Sequence[str]) -> int:
    """A preset given by index or by name, as its index.

    Raises:
        ValueError: Not an integer in ``[0, K)`` nor a preset's name (the message says
            what is allowed).
    """
    if isinstance(action, str):
        if action not in names:
            raise ValueError(unknown_name_message("preset", action, names))
        return list(names).index(action)
    return preset_index(action, tuple(names))
