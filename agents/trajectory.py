"""The record of an episode: :class:`Stage` and :class:`Trajectory`.

A trajectory round-trips through JSON (:meth:`Trajectory.to_dict`,
:meth:`Trajectory.from_dict`); reading one back is validated with pydantic, so a
missing key or a value of the wrong type is an error that names the field.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError, model_validator

__all__ = ["Stage", "Trajectory"]


@dataclass
class Stage:
    """The record of one stage of an episode.

    Attributes:
        stage: Stage index after the step (1 for the first step).
        action: The agent's action, in ``[0, 1]``, ordered as ``loss_names``.
        weights: Loss name -> effective weight (``action * scale``).
        metrics: Metric name -> raw value after the stage.
        objective: Objective ``J`` after the stage (higher is better).
        reward: ``J_t - J_{t-1}``, or the divergence penalty.
        loss_values: Loss name -> unweighted value on the evaluation set.
        diverged: True if the stage diverged and was rolled back.
        feedback: Textual feedback of the objective, if any.
        notes: What the agent recorded for this decision (JSON types only).
        timings: Wall-clock seconds: ``act_seconds``, ``train_seconds``,
            ``eval_seconds``.
        preset: On a preset env, the name of the preset played (``action`` holds its
            weights); None otherwise.
    """

    stage: int
    action: list[float]
    weights: dict[str, float]
    metrics: dict[str, float]
    objective: float
    reward: float
    loss_values: dict[str, float] = field(default_factory=dict)
    diverged: bool = False
    feedback: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stage:
        """Inverse of :meth:`to_dict`, validated.

        Raises:
            ValueError: A missing or unknown key, or a value of the wrong type; the
                message names the field.
        """
        return _validated(_StageModel, data, "Stage").to_stage()


@dataclass
class Trajectory:
    """One episode: the start and every stage.

    Attributes:
        agent: Name of the agent.
        seed: Seed of ``env.reset`` and ``agent.reset``.
        env_id: Gymnasium id of the env, if known.
        loss_names: Order of every action vector.
        initial: ``metrics``, ``objective`` and ``loss_values`` after reset.
        stages: One :class:`Stage` per step.
    """

    agent: str
    seed: int | None
    env_id: str | None
    loss_names: list[str]
    initial: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)

    # ------------------------------------------------------------ conveniences
    @property
    def rewards(self) -> np.ndarray:
        """Reward of every stage, shape ``(T,)``."""
        return np.array([s.reward for s in self.stages], dtype=np.float64)

    @property
    def returns(self) -> np.ndarray:
        """Cumulative reward after every stage, shape ``(T,)``."""
        return np.cumsum(self.rewards)

    @property
    def episode_return(self) -> float:
        """Sum of rewards: total improvement of the objective (higher is better)."""
        return float(self.rewards.sum())

    @property
    def objectives(self) -> np.ndarray:
        """Objective after every stage, shape ``(T,)`` (higher is better)."""
        return np.array([s.objective for s in self.stages], dtype=np.float64)

    @property
    def final_objective(self) -> float:
        """Objective after the last stage (the initial one if there is no stage)."""
        if self.stages:
            return float(self.stages[-1].objective)
        return float(self.initial.get("objective", math.nan))

    @property
    def best_objective(self) -> float:
        """Highest objective over the start and every stage."""
        values = [float(self.initial.get("objective", -math.inf)), *self.objectives]
        return float(max(values))

    @property
    def actions(self) -> np.ndarray:
        """Every action, shape ``(T, n_losses)``, ``float32`` in ``[0, 1]``."""
        n = len(self.loss_names)
        return np.array([s.action for s in self.stages], dtype=np.float32).reshape(-1, n)

    def __len__(self) -> int:
        return len(self.stages)

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; ``Trajectory.from_dict(json.loads(json.dumps(d)))`` is equal."""
        return {
            "agent": self.agent,
            "seed": self.seed,
            "env_id": self.env_id,
            "loss_names": list(self.loss_names),
            "initial": copy.deepcopy(self.initial),
            "stages": [s.to_dict() for s in self.stages],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trajectory:
        """Inverse of :meth:`to_dict`, validated (pydantic) at this boundary.

        Raises:
            ValueError: A missing or unknown key, a value of the wrong type (e.g.
                ``loss_names="l1"``, ``objective=None``), or an action whose length is
                not the number of losses; the message names the field.
        """
        model = _validated(_TrajectoryModel, data, "Trajectory")
        return cls(
            agent=model.agent,
            seed=model.seed,
            env_id=model.env_id,
            loss_names=list(model.loss_names),
            initial=copy.deepcopy(model.initial),
            stages=[stage.to_stage() for stage in model.stages],
        )


class _StageModel(BaseModel):
    """The schema of :meth:`Stage.to_dict`."""

    model_config = ConfigDict(extra="forbid")

    stage: StrictInt
    action: list[float]
    weights: dict[str, float]
    metrics: dict[str, float]
    objective: float
    reward: float
    loss_values: dict[str, float] = {}
    diverged: bool = False
    feedback: str | None = None
    notes: dict[str, Any] = {}
    timings: dict[str, float] = {}
    preset: str | None = None

    def to_stage(self) -> Stage:
        return Stage(**copy.deepcopy(self.model_dump()))


class _TrajectoryModel(BaseModel):
    """The schema of :meth:`Trajectory.to_dict`."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    seed: StrictInt | None
    env_id: str | None
    loss_names: list[str]
    initial: dict[str, Any] = {}
    stages: list[_StageModel] = []

    @model_validator(mode="after")
    def _actions_fit_the_losses(self) -> _TrajectoryModel:
        n = len(self.loss_names)
        for i, stage in enumerate(self.stages):
            if len(stage.action) != n:
                raise ValueError(
                    f"stages[{i}].action has {len(stage.action)} entries; loss_names has {n}"
                )
        return self


def _validated(model: type[BaseModel], data: Any, what: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}.from_dict needs a dict; got {type(data).__name__}.")
    try:
        return model.model_validate(dict(data))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(f"{what}.from_dict: {problems}.") from None
