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
from agents.tuning import training_env
from lossagent_env.seeds import check_seeds
from lossagent_env.tabular import TableAnalysis

__all__ = ["TransferAgent"]


class TransferAgent(BaseAgent):
    """Plays, at every episode, the sequence that is best on average over the training trees.

    On a table replay (``LossAgent/Tabular-v0``), :meth:`prepare` searches every preset
    sequence of the env's horizon exhaustively on the training trees' validation values,
    under the training objective (:meth:`~lossagent_env.tabular.TableAnalysis.oracle`
    on their mean) and keeps the best one; each episode plays it stage by stage and ignores
    what it observes. The training trees are every replicate of the table's training
    instances (a table of instances, format 2), or ``train_seeds``. Its training budget
    is every sequence of every training tree (``K**T x trees`` episodes, read from the
    table): :meth:`budget`, recorded in every result row.

    Args:
        train_seeds: Table seeds (trees) to learn the sequence on (at least one);
            None: the training instances' replicates on a table of instances, the
            first three seeds on a table of one configuration (no split). On a table of instances, a seed of a
            test instance is refused.

    Raises:
        ValueError: No train seeds, a seed that is not a non-negative integer, or one
            given twice (at construction); at :meth:`prepare`, an env that is not a table replay, a
            seed the table does not hold, or the seed of a test instance.
    """

    name = "transfer"

    def __init__(self, train_seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        if train_seeds is not None and (not isinstance(train_seeds, (list, tuple)) or not train_seeds):
            raise ValueError(
                f"TransferAgent(train_seeds={train_seeds!r}) is not allowed. Allowed: None, or a "
                "non-empty list of table seeds (integers >= 0), each once."
            )
        try:
            self.train_seeds = None if train_seeds is None else check_seeds(train_seeds, "train_seeds")
        except (TypeError, ValueError) as e:
            raise ValueError(f"TransferAgent(train_seeds={train_seeds!r}) is not allowed: {e}") from None
        self.sequence: list[int] | None = None
        self._trees: list[int] = []
        self._instances: list[str] | None = None
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
        trees, source = self._training_trees(table)
        analysis = TableAnalysis(source.table, objective=table.train_objective, max_stages=table.max_stages)
        best = analysis.oracle(seeds=trees)
        self.sequence = [int(a) for a in best["actions"]]
        self._trees = trees
        self._budget = len(table.preset_names) ** table.max_stages * len(trees)

    def _training_trees(self, table: Any) -> tuple[list[int], Any]:
        """The table seeds to learn on (see ``train_seeds``), and a replay (under the
        training objective) whose validation split holds them."""
        if not any(table.splits.values()):  # one configuration: its replicates, no split
            every = table.with_instances("all")
            trees = list(self.train_seeds or every.seeds[:3])
            unknown = [s for s in trees if s not in every.seeds]
            if unknown:
                raise ValueError(
                    f"TransferAgent(train_seeds={self.train_seeds!r}): seeds {unknown} are not in the "
                    f"table. Allowed: its seeds {list(every.seeds)}."
                )
            return trees, every
        view = training_env(table, "TransferAgent")
        if self.train_seeds is None:
            self._instances = [i.name for i in view.instances]
            return list(view.seeds), view
        every = table.with_instances("all")
        for seed in self.train_seeds:
            try:
                instance = every.table.instance_of(seed)
            except KeyError as e:
                raise ValueError(e.args[0]) from None
            if instance.split != "train":
                raise ValueError(
                    f"TransferAgent(train_seeds={self.train_seeds!r}): seed {seed} is a replicate of "
                    f"the {instance.split} instance {instance.name!r}; tuning on it would read what "
                    f"the agent is scored on. Allowed: seeds of the training instances {table.splits['train']}, "
                    "or None for all of them."
                )
        self._instances = sorted({every.table.instance_of(s).name for s in self.train_seeds})
        return list(self.train_seeds), view

    def budget(self) -> dict[str, Any] | None:
        """The training budget: every sequence of every training tree, read from the table."""
        if self.sequence is None:
            return None
        out: dict[str, Any] = {"train_episodes": self._budget, "train_trees": list(self._trees)}
        if self._instances is not None:
            out["train_instances"] = list(self._instances)
        return out

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
            "preset": self.spec.preset_names[action], "train_seeds": list(self._trees), "train_episodes": self._budget
        }
        return action

    def __repr__(self) -> str:
        return f"TransferAgent(train_seeds={self.train_seeds!r})"
