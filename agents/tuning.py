"""Tuning on a table's training instances, the one place agents reach them.

An agent with a training budget tunes on :func:`training_env`, a replay of the same
table and horizon on the training instances only (under the env's ``train_objective``),
so no tuning reads a test instance (docs/agents.md, "Training budgets on tables").
:func:`play` is a lean episode loop for the thousands of training episodes a replay
affords (no records, no checks beyond the env's own).
"""

from __future__ import annotations

from typing import Any

from agents.spec import AgentSpec
from lossagent_env.tabular import TabularEnv

__all__ = ["play", "training_env"]


def training_env(env: Any, owner: str) -> TabularEnv:
    """The training instances of the table ``env`` replays.

    Args:
        env: A ``LossAgent/Tabular-v0`` env (wrapped or not) on a table of instances.
        owner: The agent and argument that need it, for messages.

    Raises:
        ValueError: ``env`` is not a table replay, its table has no instances (format 1)
            or no training instance. The view replays the env's ``train_objective``.
    """
    table_env = getattr(env, "unwrapped", env)
    if not isinstance(table_env, TabularEnv):
        raise ValueError(
            f"{owner} tunes on a table's training instances; this env ({type(table_env).__name__}) "
            "replays no table. Allowed: LossAgent/Tabular-v0 on a table of instances (format 2), "
            "or no training budget."
        )
    train = table_env.splits["train"]
    if not train:
        raise ValueError(
            f"{owner} tunes on a table's training instances; this env's table has none (its "
            f"instances by split: {table_env.splits}). Allowed: a table of instances with a train "
            "split, or no training budget."
        )
    return table_env.with_instances("train")


def play(env: TabularEnv, agent: Any, seed: int, spec: AgentSpec | None = None) -> float:
    """One episode of ``agent`` on ``env`` with ``seed``; returns its return.

    Args:
        env: The replay to play (unwrapped: microseconds per step).
        agent: An :class:`~agents.base.Agent`.
        seed: Seed of ``env.reset`` and ``agent.reset``.
        spec: ``AgentSpec.from_env(env)``, computed once by the caller for speed.
    """
    spec = AgentSpec.from_env(env) if spec is None else spec
    observation, info = env.reset(seed=seed)
    agent.reset(spec, seed)
    total, done = 0.0, False
    while not done:
        action = agent.act(observation, info)
        observation, reward, terminated, truncated, info = env.step(action)
        agent.observe(action, reward, observation, info, terminated, truncated)
        total += float(reward)
        done = terminated or truncated
    return total
