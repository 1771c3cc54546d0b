"""The record of an episode: :class:`Stage` and :class:`Trajectory`.

A trajectory round-trips through JSON (:meth:`Trajectory.to_dict`,
:meth:`Trajectory.from_dict`); reading one back is validated with pydantic in strict
mode (what is refused: :meth:`Trajectory.from_dict`). Measured values may be NaN or
infinite, as an env can report them (:data:`Measured`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from lossagent_env.arguments import NonNegative, describe_problem

__all__ = ["Stage", "Trajectory", "initial_record"]


@dataclass
class Stage:
    """The record of one stage of an episode (its fields: docs/agents.md, "The protocol")."""

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

    @classmethod
    def from_step(
        cls, info: Mapping[str, Any], reward: float, action: Any, *, stage: int, notes: dict[str, Any],
        timings: dict[str, float], preset: str | None = None,
    ) -> Stage:
        """The record of a step from what the env returned (``info`` as the env documents
        it); ``stage`` is the index used when ``info`` has none."""
        return cls(
            stage=int(info.get("stage", stage)),
            action=[float(a) for a in action],
            weights=_floats(info.get("weights")),
            metrics=_floats(info.get("metrics")),
            objective=float(info.get("objective", math.nan)),
            reward=float(reward),
            loss_values=_floats(info.get("loss_values")),
            diverged=bool(info.get("diverged", False)),
            feedback=None if info.get("feedback") is None else str(info["feedback"]),
            notes=notes,
            timings=timings,
            preset=preset,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stage:
        """Inverse of :meth:`to_dict`, validated (``ValueError`` naming the field)."""
        return _validated(_StageModel, data, "Stage").to_stage()


@dataclass
class Trajectory:
    """One episode: the start and every stage (its fields: docs/agents.md, "The protocol")."""

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
        return {**asdict(self), "loss_names": list(self.loss_names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trajectory:
        """Inverse of :meth:`to_dict`, validated (pydantic) at this boundary.

        Raises:
            ValueError: A missing or unknown key, a value of the wrong type (e.g.
                ``loss_names="l1"``, ``objective="1.5"``, ``diverged="yes"``), a value out
                of range (an action entry outside ``[0, 1]`` or NaN, ``stage < 1``,
                ``seed < 0``), a loss named twice, stages not numbered 1, 2, ..., an
                action whose length is not the number of losses, or weights or loss
                values of a loss not in ``loss_names``; the message names the field.
        """
        model = _validated(_TrajectoryModel, data, "Trajectory")
        return cls(
            agent=model.agent,
            seed=model.seed,
            env_id=model.env_id,
            loss_names=list(model.loss_names),
            initial=model.initial_dict(),
            stages=[stage.to_stage() for stage in model.stages],
        )


Measured = Annotated[float, Field(strict=True)]
"""A measured value (metric, objective, reward, loss value): NaN and infinities are
outcomes an env can report (an unmeasured stage, an infinite PSNR), so they are kept."""
Fraction = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
"""An entry of an action: finite, in ``[0, 1]``."""
Name = Annotated[str, Field(strict=True, min_length=1)]


class _InitialModel(BaseModel):
    """The schema of ``Trajectory.initial``: what the env reported after reset."""

    model_config = ConfigDict(extra="forbid", strict=True)

    metrics: dict[str, Measured] = {}
    objective: Measured = math.nan
    loss_values: dict[str, Measured] = {}
    feedback: StrictStr | None = None


class _StageModel(BaseModel):
    """The schema of :meth:`Stage.to_dict`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    stage: Annotated[int, Field(strict=True, ge=1)]
    action: list[Fraction]
    weights: dict[str, NonNegative]
    metrics: dict[str, Measured]
    objective: Measured
    reward: Measured
    loss_values: dict[str, Measured] = {}
    diverged: StrictBool = False
    feedback: StrictStr | None = None
    notes: dict[str, JsonValue] = {}
    timings: dict[str, NonNegative] = {}
    preset: StrictStr | None = None

    def to_stage(self) -> Stage:
        return Stage(**copy.deepcopy(self.model_dump()))


class _TrajectoryModel(BaseModel):
    """The schema of :meth:`Trajectory.to_dict`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    agent: Name
    seed: Annotated[int, Field(strict=True, ge=0)] | None
    env_id: StrictStr | None
    loss_names: Annotated[list[Name], Field(min_length=1)]
    initial: _InitialModel = _InitialModel()
    stages: list[_StageModel] = []

    @field_validator("loss_names")
    @classmethod
    def _names_are_unique(cls, names: list[str]) -> list[str]:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"names {repeated} more than once; each loss appears once")
        return names

    @model_validator(mode="after")
    def _stages_fit_the_losses(self) -> _TrajectoryModel:
        n = len(self.loss_names)
        for i, stage in enumerate(self.stages):
            if stage.stage != i + 1:
                raise ValueError(f"stages[{i}].stage is {stage.stage}; stages are numbered 1, 2, ... in order")
            if len(stage.action) != n:
                raise ValueError(f"stages[{i}].action has {len(stage.action)} entries; loss_names has {n}")
            for what in ("weights", "loss_values"):
                unknown = [k for k in getattr(stage, what) if k not in self.loss_names]
                if unknown:
                    raise ValueError(f"stages[{i}].{what} names {unknown[0]!r}, not a loss. Allowed: {self.loss_names}")
        return self

    def initial_dict(self) -> dict[str, Any]:
        """``initial`` with the keys it was given (the round trip keeps the rest out)."""
        return copy.deepcopy(self.initial.model_dump(exclude_unset=True))


def initial_record(info: Mapping[str, Any]) -> dict[str, Any]:
    """``Trajectory.initial`` from the env's ``info`` after reset: metrics, objective,
    loss values, and the feedback if there is any."""
    record = {
        "metrics": _floats(info.get("metrics")),
        "objective": float(info.get("objective", math.nan)),
        "loss_values": _floats(info.get("loss_values")),
    }
    if info.get("feedback") is not None:
        record["feedback"] = str(info["feedback"])
    return record


def _floats(values: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (values or {}).items()}


def _validated(model: type[BaseModel], data: Any, what: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}.from_dict needs a dict; got {type(data).__name__}.")
    try:
        return model.model_validate(dict(data))
    except ValidationError as e:
        problems = "; ".join(describe_problem(err) for err in e.errors())
        raise ValueError(f"{what}.from_dict: {problems}.") from None
