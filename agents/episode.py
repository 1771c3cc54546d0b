"""The loop that runs one agent on one env for one episode: :func:`run_episode`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from agents.base import Agent, InvalidActionError, agent_name, resolve_action
from agents.spec import AgentSpec, preset_choice
from agents.trajectory import Stage, Trajectory, initial_record
from lossagent_env.actions import check_weights
from lossagent_env.jsonable import jsonable

__all__ = ["StageCallback", "run_episode"]

logger = logging.getLogger(__name__)


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
    first_action = resolve_action(spec, initial_action, what="initial_action")
    prepare = getattr(agent, "prepare", None)
    if callable(prepare):
        prepare(env)
    observation, info = env.reset(seed=seed)
    agent.reset(spec, seed)
    trajectory = Trajectory(
        agent=name, seed=seed, env_id=spec.env_id, loss_names=list(spec.loss_names), initial=initial_record(info)
    )
    get_notes = getattr(agent, "notes", None)
    answer: np.ndarray | int
    while True:
        t0 = time.perf_counter()
        if first_action is not None and not trajectory.stages:
            answer, notes = np.copy(first_action), {"source": "initial_action"}
        else:
            answer = agent.act(observation, info)
            notes = get_notes() if callable(get_notes) else {}
        act_seconds = time.perf_counter() - t0
        action = _check_action(answer, spec, name)
        observation, reward, terminated, truncated, info = env.step(action)
        played = spec.preset_vector(int(action)) if spec.discrete else np.asarray(action)
        agent.observe(action, reward, observation, info, terminated, truncated)
        timings = {"act_seconds": act_seconds}
        timings.update({k: float(v) for k, v in getattr(env.unwrapped, "timings", {}).items()})
        record = Stage.from_step(
            info, reward, played, stage=len(trajectory.stages) + 1, notes=_notes_jsonable(notes, name),
            timings=timings, preset=spec.preset_names[action] if spec.discrete else None,
        )
        trajectory.stages.append(record)
        logger.debug("%s stage %d: objective %.6g reward %+.6g", name, record.stage, record.objective, record.reward)
        for callback in callbacks:
            callback(record, env)
        if terminated or truncated:
            return trajectory
