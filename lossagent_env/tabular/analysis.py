"""What a table says about an objective: ``J`` of every node, the oracle and the references.

The env an agent is given (:class:`~lossagent_env.tabular.replay.TabularEnv`) replays
the validation split of the instances it plays, and nothing else. Everything that looks
at a whole tree at once, or at the held-out test split, is here (docs/tables.md, "The
analysis"). Replicates of an instance differ only in training randomness, so each
quantity is given per replicate (rows in the order of the instance's seeds), for
statistics that pair by replicate; means over replicates choose, per-replicate values score.

Example:
    >>> from lossagent_env.tabular import TableAnalysis
    >>> analysis = TableAnalysis("lossbench", objective="psnr")
    >>> analysis.oracle(instance="science")["presets"]
    >>> analysis.random_expectation(analysis.replicates("science"), split="test")
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lossagent_env.tabular.format import Table
from lossagent_env.tabular.objective import PanelObjective, panel_objective_of
from lossagent_env.tabular.replay import load_table

__all__ = ["TableAnalysis"]


class TableAnalysis:
    """``J`` of every node of a table under one objective, and what follows from it.

    Args:
        table: A :class:`~lossagent_env.tabular.format.Table`, or the path or shipped
            name of one (:func:`~lossagent_env.tabular.replay.load_table`).
        objective: What the replay's ``objective=`` accepts (panel metrics).
        max_stages: Length of the sequences, ``1..T``; default the table's depth.

    Raises:
        ValueError: An objective the panel cannot compute, or ``max_stages`` out of range.
    """

    def __init__(self, table: Table | str | os.PathLike[str], objective: Any = "psnr", max_stages: int | None = None):
        self.table = table = table if isinstance(table, Table) else load_table(table)
        self.depth = table.episode_length(max_stages)
        self.panel: PanelObjective = panel_objective_of(objective, table.metrics)
        self.objective = self.panel.objective
        self.preset_names = table.preset_names
        self._row = {seed: i for i, seed in enumerate(table.seeds)}
        self._j: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ values
    def j(self, split: str) -> np.ndarray:
        """``J`` of every node on ``split``: ``float64 (seeds, nodes)``, read-only.

        Raises:
            ValueError: A split the table does not hold (a replay's table holds ``val``
                only).
        """
        if split not in self._j:
            if split not in self.table.values:
                raise ValueError(f"split={split!r} is not in this table. Allowed: {list(self.table.values)}.")
            j = self.panel.compute(self.table.values[split])[1]
            j.flags.writeable = False
            self._j[split] = j
        return self._j[split]

    def replicates(self, instance: str) -> tuple[int, ...]:
        """The table seeds (trees) of ``instance``, in order.

        Raises:
            ValueError: No such instance (the message lists them).
        """
        try:
            return self.table.instance(instance).seeds
        except KeyError as e:
            raise ValueError(e.args[0]) from None

    def instances(self, split: str | None = None) -> list[str]:
        """Names of the instances (of one split: ``"train"`` or ``"test"``), in order."""
        return [i.name for i in self.table.instances if split is None or i.split == split]

    def leaves(self, seeds: Sequence[int], split: str) -> np.ndarray:
        """``J`` after every sequence of ``max_stages`` presets, per tree:
        ``float64 (len(seeds), K**max_stages)``, sequences in lexicographic order."""
        start = self.table.offset(self.depth)
        return self.j(split)[self._rows(seeds), start : start + self.n_sequences]

    def values(self, seeds: Sequence[int], actions: Sequence[int], split: str) -> np.ndarray:
        """``J`` after playing ``actions`` (preset indices) from the root, per tree.

        Raises:
            ValueError: More actions than the table's depth, or a preset index out of range.
        """
        k = len(self.preset_names)
        if len(actions) > self.table.stages:
            raise ValueError(f"{len(actions)} actions given; the table holds {self.table.stages} stages.")
        bad = [a for a in actions if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or not 0 <= a < k]
        if bad:
            raise ValueError(f"Actions {bad} are not presets. Allowed: integers in [0, {k}).")
        return self.j(split)[self._rows(seeds), self.table.node_index(actions)]

    @property
    def n_sequences(self) -> int:
        return len(self.preset_names) ** self.depth

    def actions(self, sequence: int) -> list[int]:
        """The preset indices of the ``sequence``-th sequence (lexicographic order)."""
        return [int(d) for d in np.unravel_index(sequence, (len(self.preset_names),) * self.depth)]

    @functools.cached_property
    def static_sequences(self) -> np.ndarray:
        """Index of each static sequence ``(p, p, ..., p)`` among the sequences, in preset order."""
        k = len(self.preset_names)
        return np.arange(k) * sum(k**d for d in range(self.depth))

    # ------------------------------------------------------------------ choices
    def means(self, seeds: Sequence[int], split: str) -> np.ndarray:
        """Mean ``J`` over the trees of every sequence: ``(K**max_stages,)``; NaN counts
        as the worst (``-inf``)."""
        leaves = self.leaves(seeds, split)
        return np.where(np.isnan(leaves), -np.inf, leaves).mean(axis=0)

    def best_sequence(self, seeds: Sequence[int], split: str = "val") -> int:
        """The sequence of the best mean ``J`` over the trees (ties: the first)."""
        return int(np.argmax(self.means(seeds, split)))

    def best_static(self, seeds: Sequence[int], split: str = "val") -> int:
        """The preset whose static sequence has the best mean ``J`` over the trees."""
        return int(np.argmax(self.means(seeds, split)[self.static_sequences]))

    def oracle(self, instance: str | None = None, seeds: Sequence[int] | None = None) -> dict[str, Any]:
        """The best preset sequence on the validation mean over trees, by exhaustive search.

        Args:
            instance: An instance: the trees are its replicates.
            seeds: Or the trees themselves (table seeds; one tree gives that tree's oracle).

        Returns:
            ``{"actions": [indices], "presets": [names], "final_objective": J*,
            "best_static": {"preset": name, "final_objective": J}}``, ``J`` the mean
            validation ``J`` over the trees after the last stage (NaN counts as the
            worst; ties go to the first sequence in lexicographic order). No agent's
            validation ``J`` on one of these trees exceeds the oracle's mean when there
            is one tree.

        Raises:
            ValueError: Neither or both of ``instance`` and ``seeds``, or an unknown one.
        """
        trees = self._trees(instance, seeds)
        means = self.means(trees, "val")
        best = int(np.argmax(means))
        static = int(np.argmax(means[self.static_sequences]))  # best_static(trees), from these means
        actions = self.actions(best)
        return {
            "actions": actions,
            "presets": [self.preset_names[a] for a in actions],
            "final_objective": float(means[best]),
            "best_static": {
                "preset": self.preset_names[static],
                "final_objective": float(means[self.static_sequences[static]]),
            },
        }

    def random_expectation(self, seeds: Sequence[int], split: str) -> np.ndarray:
        """Per tree, the expected final ``J`` of a uniformly random schedule (each stage
        a preset drawn uniformly, so every sequence equally likely): the mean over all
        ``K**max_stages`` sequences, exact. NaN where a sequence's ``J`` is NaN."""
        return self.leaves(seeds, split).mean(axis=1)

    def rank_agreement(self, seeds: Sequence[int]) -> float:
        """Spearman correlation of the sequences' mean ``J`` over the trees on
        validation and on test: how well what agents see ranks what they are scored on.
        NaN with fewer than three finite sequences."""
        from scipy.stats import spearmanr

        val, test = self.leaves(seeds, "val").mean(axis=0), self.leaves(seeds, "test").mean(axis=0)
        ok = np.isfinite(val) & np.isfinite(test)
        return float(spearmanr(val[ok], test[ok]).statistic) if ok.sum() > 2 else float("nan")

    # ------------------------------------------------------------------ internals
    def _trees(self, instance: str | None, seeds: Sequence[int] | None) -> list[int]:
        if (instance is None) == (seeds is None):
            raise ValueError(
                f"instance={instance!r}, seeds={seeds!r}: give one. Allowed: an instance "
                f"{self.instances()} or a non-empty list of table seeds."
            )
        trees = list(self.replicates(instance)) if instance is not None else list(seeds or ())
        if not trees:
            raise ValueError("seeds=[] is empty. Allowed: a non-empty list of table seeds.")
        return trees

    def _rows(self, seeds: Sequence[int]) -> list[int]:
        try:
            return [self._row[int(s)] for s in seeds]
        except KeyError as e:
            raise ValueError(
                f"Seed {e.args[0]!r} is not in the table. Allowed: its seeds {list(self.table.seeds)}."
            ) from None

