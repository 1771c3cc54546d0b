"""Runs: what one run of a suite is, and how one run becomes rows.

A suite expands (:func:`expand`) into one :class:`RunSpec` per (agent, objective,
seed), the objectives of the new-objective track (labels ``"<objective>.new"``) after
the tuned ones, named ``f"{env_id}__{agent}__{objective}__{seed}"`` with characters outside
``[A-Za-z0-9._+-]`` replaced by ``-`` (so ``LossAgent/SuperResolution-v0`` becomes
``LossAgent-SuperResolution-v0``). Every run of a suite has the same budget
(``max_stages`` x ``stage_iters``), and all runs with the same seed start from the same
network, because the env's ``reset(seed=...)`` is deterministic.

:func:`execute_run` plays one episode and hands over one row per finished stage (a
:class:`benchmarks.execution.results.ResultRow`, where every field is documented);
:func:`run_one` does that and appends the rows to a ``results.jsonl`` (``lossagent run``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.errors import BenchmarkError
from benchmarks.execution.executor import Context
from benchmarks.execution.output import Output
from benchmarks.execution.results import RESULTS, ResultsWriter, tensorboard_dir
from benchmarks.suites.suite import TABULAR_ENV_ID, ObjectiveEntry, Suite, safe_name
from lossagent_env.jsonable import jsonable

__all__ = [
    "Emit",
    "RunSpec",
    "execute_run",
    "expand",
    "run_name",
    "run_one",
    "run_task",
    "spec_to_dict",
]

Emit = Callable[[dict[str, Any]], None]
"""Receives one row as soon as its stage ends."""


@dataclass(frozen=True)
class RunSpec:
    """Everything one worker needs to execute one run (plain, picklable data).

    Attributes:
        name: The run name (file-system safe).
        suite: Suite name.
        env_id: Gymnasium id.
        env_kwargs: ``gym.make`` kwargs without objective and budget.
        agent: Agent label (run names, reports).
        agent_name: Name for ``agents.make_agent``.
        agent_kwargs: Its keyword arguments.
        objective: Objective label.
        objective_spec: What is passed as ``objective=``.
        seed: Episode seed (the env's and the agent's).
        max_stages: Stages per episode.
        stage_iters: Iterations per stage.
        image_every: TensorBoard image period in stages (0: none).
        track: ``"tuned"`` (agents tune under the objective they are scored on) or
            ``"new"`` (they tune under ``train_objective`` and never on this one).
        train_objective: What agents with a training budget tune under on a table's
            training instances (the new-objective track); None: ``objective_spec``.
    """

    name: str
    suite: str
    env_id: str
    env_kwargs: dict[str, Any]
    agent: str
    agent_name: str
    agent_kwargs: dict[str, Any]
    objective: str
    objective_spec: str | dict[str, float]
    seed: int
    max_stages: int
    stage_iters: int
    image_every: int = 1
    track: str = "tuned"
    train_objective: str | dict[str, float] | None = None

    def make_env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``gym.make(self.env_id, **kwargs)``."""
        kwargs = {**self.env_kwargs, "objective": self.objective_spec, "max_stages": self.max_stages}
        if self.env_id == TABULAR_ENV_ID:  # a table replay: its own arguments, no images
            return kwargs if self.train_objective is None else {**kwargs, "train_objective": self.train_objective}
        return {**kwargs, "stage_iters": self.stage_iters, "render_mode": "rgb_array"}


def run_name(env_id: str, agent: str, objective: str, seed: int) -> str:
    """``f"{env_id}__{agent}__{objective}__{seed}"``, made file-system safe
    (:func:`benchmarks.suites.suite.safe_name`)."""
    return safe_name(f"{env_id}__{agent}__{objective}__{seed}")


def expand(suite: Suite, image_every: int | None = None) -> list[RunSpec]:
    """All runs of a suite: agents x objectives x seeds, in that nesting order.

    Args:
        suite: A validated suite.
        image_every: TensorBoard image period; default ``ceil(max_stages / 4)``.
    """
    if image_every is None:
        image_every = max(1, math.ceil(suite.max_stages / 4))
    tracks: list[tuple[ObjectiveEntry, str, str | dict[str, float] | None]] = [
        (o, "tuned", None) for o in suite.objectives
    ]
    if suite.tune_on is not None:
        tracks += [(o, "new", suite.tune_on.spec) for o in suite.new_objectives]
    return [
        RunSpec(
            name=run_name(suite.env_id, agent.display, objective.label, seed),
            suite=suite.name,
            env_id=suite.env_id,
            env_kwargs=dict(suite.env_kwargs),
            agent=agent.display,
            agent_name=agent.name,
            agent_kwargs=dict(agent.kwargs),
            objective=objective.label,
            objective_spec=objective.spec,
            seed=seed,
            max_stages=suite.max_stages,
            stage_iters=suite.stage_iters,
            image_every=image_every,
            track=track,
            train_objective=train_objective,
        )
        for agent in suite.agents
        for objective, track, train_objective in tracks
        for seed in suite.seeds
    ]


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    """A run spec as plain data (for logs and tests)."""
    return asdict(spec)


def execute_run(spec: RunSpec, out: str | os.PathLike[str] | None, emit: Emit) -> int:
    """Run one episode of one agent and ``emit`` one row per finished stage.

    The env is wrapped in :class:`lossagent_env.wrappers.TensorBoardLogger` writing to
    ``<out>/tb/<run name>``; the agent's notes (rationale, retries, tokens, latency)
    go there as ``agent/...`` entries.

    Args:
        spec: The run.
        out: The benchmark's output directory; None writes no TensorBoard files.
        emit: Called with each stage's row (a JSON-able
            :class:`~benchmarks.execution.results.ResultRow`) as soon as it ends.

    Returns:
        The number of stages run.

    Raises:
        BenchmarkError: The episode ended before the suite's budget.
    """
    # gymnasium, torch and the agents load on first use, so that reading suites and
    # results (the report, the CLI's checks) stays quick
    import gymnasium as gym

    import agents
    import lossagent_env  # noqa: F401  (registers the env ids)
    from lossagent_env.wrappers import TensorBoardLogger

    t_setup = time.perf_counter()
    env = gym.make(spec.env_id, **spec.make_env_kwargs())
    logger_env: TensorBoardLogger | None = None
    if out is not None:
        env = logger_env = TensorBoardLogger(
            env,
            tensorboard_dir(out, spec.name),
            image_every=0 if spec.env_id == TABULAR_ENV_ID else spec.image_every,  # no images in a table
            run_config={
                "run": spec.name,
                "suite": spec.suite,
                "agent": spec.agent,
                "agent_kwargs": json.dumps(spec.agent_kwargs, sort_keys=True),
                "objective": spec.objective,
                "seed": spec.seed,
            },
        )
    count = 0
    try:
        agent = agents.make_agent(spec.agent_name, **spec.agent_kwargs)
        setup_s = time.perf_counter() - t_setup
        t0 = time.perf_counter()
        prepare = getattr(agent, "prepare", None)
        if callable(prepare) and logger_env is not None:
            # Agents that use the env before the episode (PPO trains on it when
            # untrained) get it without the logger, so TensorBoard shows the episode
            # only; run_episode calls prepare again, which is then a no-op / rebinding.
            prepare(logger_env.env)

        budget = getattr(agent, "budget", None)

        def on_stage(stage: Any, stage_env: gym.Env) -> None:
            nonlocal count
            count += 1
            notes = jsonable(stage.notes or {})
            if logger_env is not None:
                logger_env.log_notes(notes)
            timings = dict(stage.timings or {})
            emit(
                {
                    "run": spec.name,
                    "suite": spec.suite,
                    "env_id": spec.env_id,
                    "agent": spec.agent,
                    "objective": spec.objective,
                    "seed": spec.seed,
                    "stage": int(stage.stage),
                    "max_stages": spec.max_stages,
                    "loss_names": list(stage_env.get_wrapper_attr("loss_names")),
                    "action": jsonable(stage.action),
                    "weights": jsonable(stage.weights),
                    "metrics": jsonable(stage.metrics),
                    "loss_values": jsonable(stage.loss_values),
                    "objective_value": float(stage.objective),
                    "reward": float(stage.reward),
                    "notes": notes,
                    "diverged": bool(stage.diverged),
                    "feedback": stage.feedback,
                    "wall_s": time.perf_counter() - t0,
                    "setup_s": setup_s,
                    "act_s": float(timings.get("act_seconds", 0.0)),
                    "train_s": float(timings.get("train_seconds", 0.0)),
                    "eval_s": float(timings.get("eval_seconds", 0.0)),
                    "device": str(getattr(stage_env.unwrapped, "device", "cpu")),
                    "preset": stage.preset,
                    "instance": _instance(stage_env),
                    "budget": jsonable(budget()) if callable(budget) else None,
                }
            )

        agents.run_episode(env, agent, seed=spec.seed, callbacks=(on_stage,))
    finally:
        env.close()
    if count != spec.max_stages:
        raise BenchmarkError(
            f"Run {spec.name!r} ended after {count} stages; the suite's budget is "
            f"{spec.max_stages}. The agent or env stopped the episode early."
        )
    return count


def _instance(env: Any) -> str | None:
    """The problem instance a table replay plays, else None."""
    instance = getattr(env.unwrapped, "instance", None)
    return instance if isinstance(instance, str) else None


def run_task(spec: RunSpec, context: Context, *, out: str | None) -> int:
    """The executor's task for one run: its rows go to ``context.send`` as they come.

    Trains on ``context.device`` instead of the suite's device where the executor gives
    this worker a GPU of its own.
    """
    if context.device is not None:
        spec = dataclasses.replace(spec, env_kwargs={**spec.env_kwargs, "device": context.device})
    return execute_run(spec, out, context.send)


def run_one(
    spec: RunSpec, out: str | os.PathLike[str] | None = None, on_row: Emit | None = None
) -> list[dict[str, Any]]:
    """Run one episode on its own (``lossagent run``) and return its rows.

    Args:
        spec: The run.
        out: A new or empty directory for ``results.jsonl`` (each row appended and
            fsync'ed as its stage ends) and ``tb/<run name>``, owned by an
            :class:`~benchmarks.execution.output.Output`; None writes nothing. If the run fails
            before its first row, everything it created there is removed.
        on_row: Called with each row after it is written (progress bars).

    Returns:
        One row per stage.

    Raises:
        BenchmarkError: ``out`` is a file or a non-empty directory, cannot be created
            or is in use; or the episode ended before ``spec.max_stages``.
    """
    rows: list[dict[str, Any]] = []

    def keep(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    if out is None:
        execute_run(spec, None, keep)
        return rows
    output = Output(out, command="lossagent run", kind="folder", empty_ok=True)
    with output.claim(), ResultsWriter(output.path / RESULTS) as writer:

        def write(row: dict[str, Any]) -> None:
            writer.write(row)
            output.keep()
            keep(row)

        execute_run(spec, output.path, write)
    return rows
