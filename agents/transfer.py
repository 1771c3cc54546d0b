"""Transfer: play the best preset sequence of the training seeds, whatever happens.

The memorisation baseline of a tabular benchmark. An agent that scores no better than
this on held-out seeds has learnt one good sequence, not how to adapt to what it sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from agents.base import BaseAgent

__all__ = ["TransferAgent"]


class TransferAgent(BaseAgent):
    """Plays, at every episode, the sequence that is best on average over ``train_seeds``.

    On a table replay (``LossAgent/Tabular-v0``), :meth:`prepare` searches every preset
    sequence of the env's horizon exhaustively on the training seeds' validation values
    (:meth:`~lossagent_env.tabular.TabularEnv.oracle_on_means`; with one seed, that
    seed's oracle) and keeps the best one; each episode plays it stage by stage and
    ignores what it observes. Its training budget is every sequence of every training
    seed (``K**T x len(train_seeds)`` episodes, read from the table), recorded in its
    notes.

    Args:
        train_seeds: Seeds of the table to learn the sequence on (at least one).

    Raises:
        ValueError: No train seeds, a seed that is not a non-negative integer (at
            construction); at :meth:`prepare`, an env that is not a table replay or a
            seed the table does not hold.
    """

    name = "transfer"

    def __init__(self, train_seeds: Sequence[int] = (0, 1, 2)) -> None:
        super().__init__()
        seeds = list(train_seeds) if isinstance(train_seeds, (list, tuple)) else None
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ValueError(
                f"TransferAgent(train_seeds={train_seeds!r}) is not allowed. Allowed: a non-empty "
                "list of table seeds (integers >= 0)."
            )
        self.train_seeds = seeds
        self.sequence: list[int] | None = None
        self._budget = 0

    def prepare(self, env: gym.Env) -> None:
        """Find the best sequence on the training seeds (once per horizon)."""
        from lossagent_env.tabular import TabularEnv

        table = env.unwrapped
        if not isinstance(table, TabularEnv):
            raise ValueError(
                f"TransferAgent searches the training seeds' sequences in a table; {type(table).__name__} "
                "is not one. Allowed: LossAgent/Tabular-v0."
            )
        if len(self.train_seeds) == 1:
            best = table.oracle(seed=self.train_seeds[0])
        else:
            best = table.oracle_on_means(seeds=self.train_seeds)
        self.sequence = [int(a) for a in best["actions"]]
        self._budget = len(table.preset_names) ** table.max_stages * len(self.train_seeds)

    def _reset(self) -> None:
        assert self.spec is not None
        if not self.spec.discrete:
            raise ValueError("TransferAgent plays presets of a table. Allowed: LossAgent/Tabular-v0.")
        if self.sequence is None:
            raise ValueError("TransferAgent needs prepare(env) before an episode (run_episode calls it).")

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        assert self.sequence is not None and self.spec is not None
        action = self.sequence[min(self.t, len(self.sequence) - 1)]
        self._notes = {
            "preset": self.spec.preset_names[action],
            "train_seeds": list(self.train_seeds),
            "train_episodes": self._budget,
        }
        return action

    def __repr__(self) -> str:
        return f"TransferAgent(train_seeds={self.train_seeds!r})"
