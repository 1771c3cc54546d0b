"""The agent protocol, the episode record and the loop that runs one agent on one env.

Every agent family (fixed weights, random, bandits, DWA, PPO, PBT, the LLM agent)
implements :class:`Agent`; :func:`run_episode` drives any of them on a LossAgent env and
returns a :class:`Trajectory`, which round-trips through JSON.

Example:
    >>> import gymnasium as gym, lossagent_env
    >>> from agents import UCBAgent, run_episode
    >>> env = gym.make("LossAgent/SuperResolution-v0", stage_iters=2, max_stages=3)
    >>> traj = run_episode(env, UCBAgent(), seed=0)
    >>> traj.episode_return  # total improvement of the objective (higher is better)
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces as gym_spaces
from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError, model_validator

from lossagent_env.actions import check_weights
from lossagent_env.wrappers import preset_index
from lossagent_env.jsonable import jsonable
from lossagent_env.registry import unknown_name_message

logger = logging.getLogger(__name__)

__all__ = [
    "Agent",
    "AgentSpec",
    "BaseAgent",
    "InvalidActionError",
    "Stage",
    "Trajectory",
    "agent_name",
    "resolve_weights",
    "run_episode",
]

@runtime_checkable
class Agent(Protocol):
    """What :func:`run_episode` needs from an agent.

    Optional methods, used when present:

    * ``notes() -> dict``: what the agent wants recorded for its last decision
      (rationale, retries, corrections, fallbacks, tokens, latency, chosen arm, ...).
      Values must be JSON types (numbers, strings, bools, None, lists, dicts).
    * ``prepare(env)``: called once by :func:`run_episode` before ``env.reset``, for
      agents that need the env itself (PPO trains on it if untrained; PBT time-shares it
      between the members of its population through ``get_state``/``set_state``).
    """

    def reset(self, spec: AgentSpec, seed: int | None) -> None:
        """Start a new episode: forget the last one, seed the agent's own RNG."""

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        """Return the next action: ``float32`` of shape ``(n_losses,)`` in ``[0, 1]``."""

    def observe(
        self,
        action: np.ndarray,
        reward: float,
        observation: Mapping[str, Any],
        info: Mapping[str, Any],
        terminated: bool,
        truncated: bool,
    ) -> None:
        """Learn from the outcome of ``action`` (reward: higher is better)."""


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
        """Read the spec from a LossAgent env (wrapped or not).

        Args:
            env: An env made by ``gym.make("LossAgent/...")`` or its ``unwrapped``.

        Returns:
            The spec; descriptions and scales come from ``env.unwrapped.losses``, the
            objective text from ``env.unwrapped.objective.describe()``.
        """
        u = env.unwrapped
        names = tuple(u.loss_names)
        objective = u.objective
        config = u.config
        env_spec = getattr(env, "spec", None)
        presets = None
        if isinstance(getattr(env, "action_space", None), gym_spaces.Discrete):
            names_, weights = _wrapper_attr(env, "preset_names"), _wrapper_attr(env, "preset_weights")
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


def _wrapper_attr(env: Any, name: str) -> Any:
    """An attribute of the env or of one of its wrappers (gymnasium's lookup)."""
    getter = getattr(env, "get_wrapper_attr", None)
    return getter(name) if callable(getter) else getattr(env, name)


class InvalidActionError(ValueError):
    """An agent returned an action outside the env's action space."""


def agent_name(agent: Any) -> str:
    """The agent's ``name`` attribute, else its class name."""
    return str(getattr(agent, "name", None) or type(agent).__name__)


def resolve_weights(
    spec: AgentSpec, weights: Mapping[str, float] | Sequence[float] | np.ndarray, *, what: str = "weights"
) -> np.ndarray:
    """Turn a weight dict or vector into an action vector.

    Args:
        spec: The env's spec (gives the loss order).
        weights: ``{loss name: weight}`` (missing losses get 0) or a sequence of
            ``n_losses`` weights in the order of ``spec.loss_names``. Weights are in
            action units, ``[0, 1]``.
        what: Name used in error messages.

    Returns:
        ``float32`` array of shape ``(n_losses,)``.

    Raises:
        KeyError: A dict names an unknown loss (the message suggests the closest).
        ValueError: Wrong length, or a weight outside ``[0, 1]`` or not finite.
    """
    names = spec.loss_names
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise KeyError(unknown_name_message("loss", unknown[0], names))
        weights = [weights.get(n, 0.0) for n in names]
    return check_weights(weights, names, what)


class BaseAgent:
    """Shared plumbing for the agents in this package.

    Subclasses implement :meth:`_act` (and optionally :meth:`_reset`,
    :meth:`_observe`). This class keeps the spec, the agent's own
    ``np.random.Generator`` (seeded in :meth:`reset`; global RNGs are never touched),
    the stage counter and the notes of the last decision, and plays ``initial_weights``
    at the first stage when given.

    Args:
        initial_weights: Weights (action units) of the first stage, as a dict or a
            vector; ``None`` lets the agent decide from the start.
    """

    name: ClassVar[str] = "agent"

    def __init__(
        self, *, initial_weights: Mapping[str, float] | Sequence[float] | None = None
    ) -> None:
        self.initial_weights = initial_weights
        self.spec: AgentSpec | None = None
        self.rng = np.random.default_rng()
        self.t = 0
        self._notes: dict[str, Any] = {}
        self._initial: np.ndarray | None = None

    def reset(self, spec: AgentSpec, seed: int | None) -> None:
        """Start an episode on an env described by ``spec``, with ``seed``."""
        self.spec = spec
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self._notes = {}
        if self.initial_weights is None:
            self._initial = None
        elif spec.discrete:  # a preset, by name or index
            self._initial = preset_choice(self.initial_weights, spec.preset_names)
        else:
            self._initial = resolve_weights(spec, self.initial_weights, what="initial_weights")
        self._reset()

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        """The next action: ``float32`` ``(n_losses,)`` in ``[0, 1]``, or on a preset env
        the index of a preset."""
        if self.spec is None:
            raise RuntimeError(f"{type(self).__name__}.act() was called before reset(spec, seed).")
        self._notes = {}
        if self.t == 0 and self._initial is not None:
            self._notes = {"source": "initial_weights"}
            self._on_initial(observation, info)
            return np.copy(self._initial)
        action = self._act(observation, info)
        if self.spec.discrete:
            return int(action)
        return np.asarray(action, dtype=np.float32)

    def observe(
        self,
        action: np.ndarray,
        reward: float,
        observation: Mapping[str, Any],
        info: Mapping[str, Any],
        terminated: bool,
        truncated: bool,
    ) -> None:
        """Record the outcome of ``action`` and advance the stage counter."""
        if self.spec is not None and self.spec.discrete:
            played: Any = int(np.asarray(action).reshape(()))
        else:
            played = np.asarray(action, dtype=np.float32)
        self._observe(played, float(reward), observation, info)
        self.t += 1

    def notes(self) -> dict[str, Any]:
        """What this agent wants recorded for its last decision."""
        return dict(self._notes)

    # ------------------------------------------------------------ for subclasses
    def _reset(self) -> None:
        """Per-episode state of the subclass."""

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def _on_initial(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        """Called instead of :meth:`_act` when ``initial_weights`` are played."""

    def _observe(
        self,
        action: np.ndarray,
        reward: float,
        observation: Mapping[str, Any],
        info: Mapping[str, Any],
    ) -> None:
        """Learn from the outcome of ``action``."""

    def _needs_continuous_weights(self, why: str) -> None:
        """Refuse a preset env, saying why this agent needs a weight vector."""
        assert self.spec is not None
        if self.spec.discrete:
            raise ValueError(
                f"{type(self).__name__} needs continuous weights (a Box action space): {why}. "
                f"This env plays one of the presets {list(self.spec.preset_names)}; use fixed, "
                "random, egreedy, ucb, thompson, ppo or llm on it."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


StageCallback = Callable[[Stage, Any], None]


def _check_action(action: Any, spec: AgentSpec, name: str) -> np.ndarray | int:
    """``action`` as ``float32`` weights, or as a preset index on a preset env; else
    :class:`InvalidActionError` naming the agent."""
    try:
        if spec.discrete:
            return preset_choice(action, spec.preset_names)
        return check_weights(action, spec.loss_names, f"action of agent {name!r}")
    except ValueError as e:
        raise InvalidActionError(f"{e} Agent {name!r} returned it: it is outside the action space.") from None


def _initial_record(info: Mapping[str, Any]) -> dict[str, Any]:
    record = {
        "metrics": {k: float(v) for k, v in info.get("metrics", {}).items()},
        "objective": float(info.get("objective", math.nan)),
        "loss_values": {k: float(v) for k, v in info.get("loss_values", {}).items()},
    }
    if info.get("feedback") is not None:
        record["feedback"] = str(info["feedback"])
    return record


def _notes_jsonable(notes: Any, name: str) -> dict[str, Any]:
    try:
        return jsonable(notes or {})
    except TypeError as e:
        raise TypeError(f"Agent {name!r} notes must hold JSON types: {e}") from None


def run_episode(
    env: Any,
    agent: Agent,
    seed: int | None = 0,
    callbacks: Iterable[StageCallback] = (),
    initial_action: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
) -> Trajectory:
    """Run one episode of ``agent`` on ``env``.

    Calls ``agent.prepare(env)`` if the agent has it, resets the env and the agent with
    ``seed``, then loops ``act -> step -> observe`` until the env terminates or
    truncates. Every action is checked against ``env.action_space``.

    Args:
        env: A LossAgent env (wrapped or not).
        agent: Any :class:`Agent`.
        seed: Seed of ``env.reset`` and ``agent.reset``.
        callbacks: Each is called as ``cb(stage_record, env)`` after every stage (the
            benchmark runner streams rows to disk and TensorBoard this way).
        initial_action: If given, played at the first stage instead of asking the agent
            (the agent still observes it), so that comparisons start from the same
            weights. A dict ``{loss: weight}`` or a vector, in action units.

    Returns:
        The :class:`Trajectory`.

    Raises:
        InvalidActionError: The agent returned an action outside the action space; the
            message names the agent. The env is not stepped with it.
    """
    name = agent_name(agent)
    spec = AgentSpec.from_env(env)
    callbacks = tuple(callbacks)
    if initial_action is None:
        first_action = None
    elif spec.discrete:
        first_action = preset_choice(initial_action, spec.preset_names)
    else:
        first_action = resolve_weights(spec, initial_action, what="initial_action")
    prepare = getattr(agent, "prepare", None)
    if callable(prepare):
        prepare(env)
    observation, info = env.reset(seed=seed)
    agent.reset(spec, seed)
    trajectory = Trajectory(
        agent=name,
        seed=seed,
        env_id=spec.env_id,
        loss_names=list(spec.loss_names),
        initial=_initial_record(info),
    )
    get_notes = getattr(agent, "notes", None)
    while True:
        t0 = time.perf_counter()
        if first_action is not None and not trajectory.stages:
            action, notes = np.copy(first_action), {"source": "initial_action"}
        else:
            action = agent.act(observation, info)
            notes = get_notes() if callable(get_notes) else {}
        act_seconds = time.perf_counter() - t0
        action = _check_action(action, spec, name)
        observation, reward, terminated, truncated, info = env.step(action)
        played = spec.preset_vector(action) if spec.discrete else action
        agent.observe(action, reward, observation, info, terminated, truncated)
        timings = {"act_seconds": act_seconds}
        timings.update({k: float(v) for k, v in getattr(env.unwrapped, "timings", {}).items()})
        record = Stage(
            stage=int(info.get("stage", len(trajectory.stages) + 1)),
            action=[float(a) for a in played],
            weights={k: float(v) for k, v in info.get("weights", {}).items()},
            metrics={k: float(v) for k, v in info.get("metrics", {}).items()},
            objective=float(info.get("objective", math.nan)),
            reward=float(reward),
            loss_values={k: float(v) for k, v in info.get("loss_values", {}).items()},
            diverged=bool(info.get("diverged", False)),
            feedback=None if info.get("feedback") is None else str(info["feedback"]),
            notes=_notes_jsonable(notes, name),
            timings=timings,
            preset=spec.preset_names[action] if spec.discrete else None,
        )
        trajectory.stages.append(record)
        logger.debug(
            "%s stage %d: objective %.6g reward %+.6g", name, record.stage, record.objective, record.reward
        )
        for callback in callbacks:
            callback(record, env)
        if terminated or truncated:
            return trajectory
