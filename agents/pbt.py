"""Population-based training (Jaderberg et al. 2017) of the loss weights.

A population of networks trains side by side, each with its own weights; after every
``interval`` stages the bottom ``quantile`` of the members copies a member of the top
one and perturbs its weights, with Ray Tune's ``PopulationBasedTraining`` defaults.
:func:`run_pbt` runs one env per member; :class:`PBTAgent` runs inside
:func:`agents.run_episode` on a single env, which it time-shares between the members
through ``get_state``/``set_state``. See docs/agents.md ("PBT") for the exploit and
explore steps, what the recorded trajectory follows, and the format of ``log``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

import numpy as np
from gymnasium import spaces as gym_spaces
from pydantic import BaseModel, ConfigDict, Field

from agents.base import AgentSpec, BaseAgent, Stage, Trajectory, resolve_weights
from agents.trajectory import initial_record
from lossagent_env.arguments import Positive, check_arguments

logger = logging.getLogger(__name__)

__all__ = ["PBTAgent", "PBTResult", "exploit_and_explore", "quantile_members", "run_pbt"]


def quantile_members(objectives: Sequence[float], quantile: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Bottom and top members by objective (higher is better), as Ray Tune picks them.

    Ties are broken at random with ``rng``.

    Returns:
        ``(bottom, top)`` lists of member indices, each of
        ``min(ceil(quantile * n), floor(n / 2))`` members.
    """
    n = len(objectives)
    size = min(math.ceil(n * quantile), n // 2)
    values = np.array([v if math.isfinite(v) else -math.inf for v in objectives], dtype=np.float64)
    order = np.lexsort((rng.random(n), values))  # ascending objective, random tie-break
    bottom = [int(i) for i in order[:size]]
    top = [int(i) for i in order[n - size:]] if size else []
    return bottom, top


def exploit_and_explore(
    stage: int,
    objectives: Sequence[float],
    weights: list[np.ndarray],
    rng: np.random.Generator,
    *,
    quantile: float = 0.25,
    perturb_factors: tuple[float, float] = (0.8, 1.2),
    resample_prob: float = 0.25,
    loss_names: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One PBT ranking: decide who copies whom and the new weights.

    ``weights`` is updated in place for every exploiting member; copying the network
    state is left to the caller (one ``set_state`` per returned event).

    Returns:
        One ``"exploit"`` log entry per member that copies another.
    """
    bottom, top = quantile_members(objectives, quantile, rng)
    events = []
    for member in bottom:
        source = int(rng.choice(top))
        if not objectives[source] > objectives[member]:
            continue
        old = weights[member].copy()
        new = weights[source].astype(np.float64).copy()
        resampled = []
        for i in range(new.size):
            if rng.random() < resample_prob:
                new[i] = rng.uniform(0.0, 1.0)
                resampled.append(loss_names[i] if i < len(loss_names) else i)
            else:
                new[i] = new[i] * perturb_factors[int(rng.integers(2))]
        weights[member] = np.clip(new, 0.0, 1.0).astype(np.float32)
        events.append({
            "kind": "exploit", "stage": int(stage), "member": member, "from_member": source,
            "objective": float(objectives[member]), "from_objective": float(objectives[source]),
            "old_weights": [float(w) for w in old], "new_weights": [float(w) for w in weights[member]],
            "resampled": resampled,
        })
        logger.info(
            "PBT stage %d: member %d (objective %.6g) copies member %d (%.6g).",
            stage, member, objectives[member], source, objectives[source],
        )
    return events


class _PBTOptions(BaseModel):
    """What the options of :class:`PBTAgent` and :func:`run_pbt` may be."""

    model_config = ConfigDict(strict=True, extra="forbid")

    population: Annotated[int, Field(ge=2)]
    quantile: Annotated[float, Field(gt=0.0, le=0.5, allow_inf_nan=False)]
    perturb_factors: Annotated[tuple[Positive, Positive], Field(strict=False)]
    resample_prob: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    interval: Annotated[int, Field(ge=1)]


def _start(
    spec: AgentSpec, population: int, rng: np.random.Generator, initial_weights: Any
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """The members' first weights (member 0's from ``initial_weights`` if given, the
    others from ``U(0, 1)``) and their ``init`` log entries."""
    weights = [rng.uniform(0.0, 1.0, spec.n_losses).astype(np.float32) for _ in range(population)]
    if initial_weights is not None:
        weights[0] = resolve_weights(spec, initial_weights, what="initial_weights")
    return weights, [{"kind": "init", "member": m, "weights": [float(x) for x in w]} for m, w in enumerate(weights)]


class PBTAgent(BaseAgent):
    """PBT on a single env, time-shared between the members (docs/agents.md, "PBT").

    Needs ``prepare(env)`` (which :func:`agents.run_episode` calls) and an env with
    ``get_state``/``set_state``. Each stage trains every member once, so an episode
    costs ``population`` times the stages of other agents (the last stage trains only
    the recorded member, since the others' results would not be used).

    Args:
        population: Number of members (``>= 2``).
        quantile: Bottom/top fraction (Ray Tune: 0.25).
        perturb_factors: Multiplicative perturbations (Ray Tune: 0.8, 1.2).
        resample_prob: Probability of resampling a weight (Ray Tune: 0.25).
        interval: Stages between rankings.
        initial_weights: Weights of member 0 at the start (others are drawn uniformly).

    Attributes:
        log: The perturbation log of the last episode (docs/agents.md, "PBT").
    """

    name = "pbt"

    def __init__(
        self,
        population: int = 3,
        *,
        quantile: float = 0.25,
        perturb_factors: tuple[float, float] = (0.8, 1.2),
        resample_prob: float = 0.25,
        interval: int = 1,
        initial_weights: Mapping[str, float] | Sequence[float] | None = None,
    ) -> None:
        # initial_weights goes to member 0, not to the first action of BaseAgent.
        super().__init__(initial_weights=None)
        checked = check_arguments(_PBTOptions, "PBTAgent", dict(
            population=population, quantile=quantile, perturb_factors=perturb_factors,
            resample_prob=resample_prob, interval=interval,
        ))
        self.population = checked.population
        self.quantile = checked.quantile
        self.perturb_factors = checked.perturb_factors
        self.resample_prob = checked.resample_prob
        self.interval = checked.interval
        self.member_initial_weights = initial_weights
        self.log: list[dict[str, Any]] = []
        self._env: Any = None
        self._weights: list[np.ndarray] = []
        self._states: list[Any] = []
        self._objectives: list[float] = []
        self._lead = 0

    def prepare(self, env: Any) -> None:
        """Keep a handle on the env to time-share it (called by run_episode)."""
        if isinstance(getattr(env, "action_space", None), gym_spaces.Discrete):
            raise ValueError(
                "PBTAgent needs continuous weights (a Box action space): it perturbs the weights "
                "of its members by factors. This env plays presets; use fixed, random, egreedy, "
                "ucb, thompson, ppo or llm on it."
            )
        unwrapped = env.unwrapped
        if not (callable(getattr(unwrapped, "get_state", None)) and callable(getattr(unwrapped, "set_state", None))):
            raise TypeError(
                f"PBTAgent needs an env with get_state()/set_state(); {type(unwrapped).__name__} has not. "
                "Allowed: LossAgent envs."
            )
        self._env = env

    def _reset(self) -> None:
        if self._env is None:
            raise RuntimeError("PBTAgent needs the env: call agent.prepare(env) before reset (run_episode does).")
        assert self.spec is not None
        self._needs_continuous_weights("it perturbs the weights of its members by factors")
        self._weights, self.log = _start(self.spec, self.population, self.rng, self.member_initial_weights)
        self._states = []
        self._objectives = []
        self._lead = 0

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        assert self.spec is not None
        env = self._env.unwrapped
        stage = int(info.get("stage", self.t))
        if not self._states:
            state = env.get_state()
            self._states = [state] * self.population
            self._objectives = [float(info["objective"])] * self.population
        else:
            self._states[self._lead] = env.get_state()
            self._objectives[self._lead] = float(info["objective"])
        events: list[dict[str, Any]] = []
        if stage > 0 and stage % self.interval == 0:
            events = exploit_and_explore(
                stage, self._objectives, self._weights, self.rng, quantile=self.quantile,
                perturb_factors=self.perturb_factors, resample_prob=self.resample_prob, loss_names=self.spec.loss_names,
            )
            for event in events:
                self._states[event["member"]] = self._states[event["from_member"]]
                self._objectives[event["member"]] = self._objectives[event["from_member"]]
            self.log.extend(events)
        objectives = np.array(self._objectives)
        self._lead = int(np.flatnonzero(objectives == objectives.max())[0])
        if stage + 1 < self.spec.max_stages:  # the last stage trains only the recorded member
            for member in (m for m in range(self.population) if m != self._lead):
                env.set_state(self._states[member])
                _, _, _, _, member_info = env.step(self._weights[member])
                self._states[member] = env.get_state()
                self._objectives[member] = float(member_info["objective"])
        env.set_state(self._states[self._lead])
        self._notes = {"member": self._lead, "objectives": [float(v) for v in objectives], "perturbations": events}
        return self._weights[self._lead].copy()

    def __repr__(self) -> str:
        return f"PBTAgent(population={self.population})"


@dataclass
class PBTResult:
    """What :func:`run_pbt` returns.

    Attributes:
        trajectory: Lineage of the best member at the end.
        best_member: Its index.
        members: Every member's trajectory (lineages).
        log: Init and exploit events (docs/agents.md, "PBT").
        stages_trained: Stages trained in all (population x stages).
    """

    trajectory: Trajectory
    best_member: int
    members: list[Trajectory] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    stages_trained: int = 0


def run_pbt(
    env_fns: Callable[[], Any] | Sequence[Callable[[], Any]],
    population: int = 3,
    *,
    seed: int | None = 0,
    quantile: float = 0.25,
    perturb_factors: tuple[float, float] = (0.8, 1.2),
    resample_prob: float = 0.25,
    interval: int = 1,
    initial_weights: Mapping[str, float] | Sequence[float] | None = None,
    callbacks: Sequence[Callable[[Stage, Any], None]] = (),
) -> PBTResult:
    """PBT with one env per member, all reset with ``seed`` (the same initial network).

    Args:
        env_fns: One env factory (called ``population`` times) or one per member.
        population: Members, when ``env_fns`` is a single factory.
        seed: Seed of every env's reset and of the PBT decisions.
        quantile, perturb_factors, resample_prob, interval, initial_weights: As
            :class:`PBTAgent`.
        callbacks: ``cb(stage_record, env)`` after every member's stage.

    Returns:
        A :class:`PBTResult`; ``trajectory.agent`` is ``"pbt"``.
    """
    factories = list(env_fns) if isinstance(env_fns, Sequence) else None
    options = check_arguments(_PBTOptions, "run_pbt", dict(
        population=population if factories is None else len(factories), quantile=quantile,
        perturb_factors=perturb_factors, resample_prob=resample_prob, interval=interval,
    ))
    envs = [make() for make in factories or [cast(Callable[[], Any], env_fns)] * options.population]
    try:
        return _run_pbt(envs, seed, options, initial_weights, callbacks)
    finally:
        for env in envs:
            env.close()


def _run_pbt(
    envs: list[Any], seed: int | None, options: _PBTOptions, initial_weights: Any,
    callbacks: Sequence[Callable[[Stage, Any], None]],
) -> PBTResult:
    rng = np.random.default_rng(seed)
    spec = AgentSpec.from_env(envs[0])
    weights, log = _start(spec, len(envs), rng, initial_weights)
    members: list[Trajectory] = []
    for env in envs:
        _, info = env.reset(seed=seed)
        members.append(
            Trajectory(agent="pbt", seed=seed, env_id=spec.env_id, loss_names=list(spec.loss_names),
                       initial=initial_record(info))
        )
    pending: dict[int, dict[str, Any]] = {}
    trained = 0
    for stage in range(spec.max_stages):
        objectives = []
        for member, env in enumerate(envs):
            _, reward, _, _, info = env.step(weights[member])
            trained += 1
            notes: dict[str, Any] = {"member": member}
            if member in pending:
                notes["exploited"] = pending.pop(member)
            timings = {k: float(v) for k, v in getattr(env.unwrapped, "timings", {}).items()}
            record = Stage.from_step(info, reward, weights[member], stage=stage + 1, notes=notes, timings=timings)
            members[member].stages.append(record)
            objectives.append(record.objective)
            for callback in callbacks:
                callback(record, env)
        done = stage + 1
        if done < spec.max_stages and done % options.interval == 0:
            events = exploit_and_explore(
                done, objectives, weights, rng, quantile=options.quantile, perturb_factors=options.perturb_factors,
                resample_prob=options.resample_prob, loss_names=spec.loss_names,
            )
            for event in events:
                dst, src = event["member"], event["from_member"]
                envs[dst].unwrapped.set_state(envs[src].unwrapped.get_state())
                members[dst].stages = copy.deepcopy(members[src].stages)
                pending[dst] = {"from_member": src, "stage": done}
            log.extend(events)
    finals = [t.final_objective for t in members]
    best = int(np.argmax(finals))
    return PBTResult(trajectory=members[best], best_member=best, members=members, log=log, stages_trained=trained)
