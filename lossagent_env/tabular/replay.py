"""``LossAgent/Tabular-v0``: replay a precomputed table instead of training."""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lossagent_env.config import EnvConfig
from lossagent_env.errors import ConfigError, ConfigTypeError, UnknownNameError
from lossagent_env.losses import LOSSES
from lossagent_env.objectives import (
    CallableObjective,
    CompositeObjective,
    MetricObjective,
    Objective,
    make_objective,
)
from lossagent_env.registry import unknown_name_message
from lossagent_env.tabular.format import SPLITS, Instance, Table, TableFormatError, read_table
from lossagent_env.tabular.schema import INSTANCE_SPLITS
from lossagent_env.tasks import TASKS
from lossagent_env.wrappers import preset_index

__all__ = ["TABLES_DIR", "TabularEnv", "check_seeds", "load_table", "resolve_table", "shipped_tables"]

TABLES_DIR = Path(__file__).resolve().parent / "tables"
"""Where shipped tables live: ``<name>.sqlite``."""

ObsType = dict[str, Any]


def shipped_tables() -> list[str]:
    """Names of the tables that ship with the package."""
    return sorted(p.stem for p in TABLES_DIR.glob("*.sqlite"))


def resolve_table(table: str | os.PathLike[str]) -> Path:
    """The file of a table given by path or by shipped name (a file wins over a shipped
    name, a shipped name over a directory).

    Raises:
        TypeError: ``table`` is not a string or a path.
        IsADirectoryError: ``table`` is a directory (and no shipped name).
        FileNotFoundError: Neither an existing file nor a shipped name (the message
            lists the shipped tables).
    """
    if not isinstance(table, (str, os.PathLike)):
        raise TypeError(
            f"table={table!r} ({type(table).__name__}) is not allowed. Allowed: the path of "
            f"a table file, or the name of a shipped table {shipped_tables()}."
        )
    path = Path(table)
    if path.is_file():
        return path
    if isinstance(table, str) and table in shipped_tables():
        return TABLES_DIR / f"{table}.sqlite"
    if path.is_dir():
        raise IsADirectoryError(
            f"table={str(table)!r} is a directory, not a table file. Allowed: the path of a "
            f"table file (built by `lossagent tabulate`), or a shipped table {shipped_tables()}."
        )
    raise FileNotFoundError(
        f"No table file {str(table)!r}, and no shipped table of that name. "
        + unknown_name_message("shipped table", str(table), shipped_tables())
    )


def load_table(table: str | os.PathLike[str]) -> Table:
    """Read a table (by path or shipped name), cached while the file is unchanged.

    Raises:
        TypeError, IsADirectoryError, FileNotFoundError: See :func:`resolve_table`.
        TableFormatError: Not a complete, undamaged table of a supported format version,
            or its ``env_kwargs`` are not a valid env configuration.
    """
    path = resolve_table(table).resolve()
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, size: int) -> Table:
    table = read_table(path)
    for instance in table.instances:  # the header's configurations are ones the live env takes
        live_config(table, source=repr(path), instance=instance)
    return table


def live_config(
    table: Table, source: str = "<table>", instance: Instance | None = None, **fields: Any
) -> EnvConfig:
    """The live env's configuration of a table's instance (default: its first), with
    ``fields`` (objective, max_stages).

    Raises:
        TableFormatError: The header's ``env_kwargs`` or task are not a valid
            :class:`~lossagent_env.config.EnvConfig`.
    """
    instance = table.instances[0] if instance is None else instance
    if table.format_version == 1:
        where, kwargs, task = "env_kwargs", table.header["env_kwargs"], _task_kwargs(table.header)
    else:
        i = table.instances.index(instance)
        where, kwargs = f"instances[{i}].env_kwargs", instance.env_kwargs
        task = _task_kwargs(table.header["instances"][i])
    try:
        return EnvConfig(**kwargs, **task, **fields)
    except (TypeError, ValueError) as e:
        raise TableFormatError(
            f"Table {source}: header field {where!r} is not a configuration of the live "
            f"env ({e}). The file is damaged; rebuild it with `lossagent tabulate`."
        ) from None


@contextlib.contextmanager
def _located(field: str) -> Iterator[None]:
    """Give a refusal of argument ``field`` its ``loc``: a ``ValueError`` becomes a
    :class:`ConfigError`, a ``TypeError`` a :class:`ConfigTypeError`, same message."""
    try:
        yield
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        kind = ConfigTypeError if isinstance(e, TypeError) else ConfigError
        kind = UnknownNameError if isinstance(e, KeyError) else kind
        raise kind((field,), e.args[0] if e.args else str(e)) from None


def check_seeds(seeds: Sequence[int], what: str = "seeds") -> list[int]:
    """``seeds`` as a list if each is ``>= 0`` and appears once (checked in linear time).

    The one check of a list of episode seeds: a table's, a replay's ``seeds=``, a
    benchmark suite's.

    Args:
        seeds: Integer seeds.
        what: How the message names the list (e.g. ``"seeds=[1, 1]"``).

    Raises:
        ValueError: A repeated or negative seed; the message names them.
    """
    repeated = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
    if repeated:
        raise ValueError(f"{what} must be unique; repeated: {repeated[:10]}")
    negative = [s for s in seeds if s < 0]
    if negative:
        raise ValueError(f"{what} must be >= 0; got {negative[:10]}")
    return list(seeds)


class TabularEnv(gym.Env[ObsType, np.int64]):
    """Replay of a precomputed table: the live env, without the training.

    ## Description
    A table (built by ``lossagent tabulate``) stores, for one env configuration, K
    named weight presets, T stages and a set of seeds, the outcome of every preset
    sequence: ``K + K^2 + ... + K^T`` stages trained for real, each measured on a panel
    of metrics. This env replays them: for the same seed and actions it returns the
    same observation, reward, ``terminated``, ``truncated`` and ``info`` as the live
    env made with the table's configuration and ``objective``, wrapped in
    :class:`~lossagent_env.wrappers.PresetActions` with the table's presets, bit for
    bit; a step costs microseconds; and the best sequence is known
    (:meth:`oracle`).

    ## Action Space
    ``Discrete(K)``: action ``i`` plays preset ``preset_names[i]``, whose weights
    (action units, one per loss in ``loss_names`` order) are ``preset_weights[i]``. An
    action that is not an integer in ``[0, K)`` raises ``ValueError``.

    ## Observation Space
    The live env's: a ``Dict`` of ``metrics`` (one ``(1,)`` box per objective metric,
    bounds from the metric catalogue), ``weights`` (the preset's action vector; zeros
    after reset), ``loss_values`` (unweighted losses on the evaluation set, bounds
    from each loss's value range) and ``progress`` (stage / max_stages).

    ## Rewards
    As the live env: ``J_t - J_{t-1}`` with ``J`` the objective computed from the
    stored panel values (lower-is-better metrics negated); ``divergence_penalty`` for a
    stage that diverged; 0 when ``J`` is NaN, and the next measured stage counts from
    the last measured ``J``.

    ## Starting State
    Every episode replays the tree of one of the table's seeds, from its root:

    1. ``reset(seed=s)`` with ``s`` one of the table's seeds: the tree of ``s``, the
       same episode as the live env's ``reset(seed=s)``.
    2. ``reset(seed=s)`` with any other integer ``s >= 0``: ``s`` seeds the env's
       random generator (``super().reset(seed=s)``), which then draws one of ``seeds``
       as in 3. The same ``s`` always plays the same tree, so reset is deterministic
       as Gymnasium's ``check_env`` expects (it resets with 123 and 456, whatever the
       table holds); ``env.unwrapped.table_seed`` says which tree is played.
    3. ``reset()`` without a seed: one of ``seeds`` (default: all the table's seeds),
       drawn with the env's random generator.

    A table of problem instances (format 2) replays a *problem* per episode, not a
    tree: ``reset(seed=s)``, with any integer ``s >= 0``, plays instance
    ``instances[s % I]`` (``I`` instances) and, of its ``R`` replicates, replicate
    ``(s // I) % R``; so seeds ``0 .. I*R - 1`` play every (instance, replicate) once.
    ``reset()`` without a seed draws ``s`` with the env's random generator.
    ``env.unwrapped.instance``, ``replicate`` and ``table_seed`` say what is played, and
    ``info["instance"]`` names the instance.

    A seed that is not an integer ``>= 0`` (``True``, ``1.0``, ``"1"``) raises
    ``TypeError``. Where a seed is pinned explicitly (``seeds=``, ``oracle(seed=)``,
    ``final_objective(seed=)``), it must be one of the table's seeds: anything else is
    a ``ValueError`` naming them.

    ## Episode End
    1. Termination: never.
    2. Truncation: after ``max_stages`` steps; as in the live env, a further ``step``
       raises ``ResetNeeded`` until ``reset``.

    ## Info
    The live env's keys and values (``metrics``, ``objective``, ``loss_values``,
    ``weights``, ``stage``, ``diverged``) and the wrapper's ``preset`` (``None`` after
    reset). ``env.unwrapped.timings`` holds the stored wall-clock ``train_seconds`` and
    ``eval_seconds`` of the original stage.

    ## Arguments
    * ``table``: path of a table file, or the name of a shipped table.
    * ``objective``: a panel metric name, a ``{metric: weight}`` dict, a
      ``MetricObjective`` or a ``CompositeObjective`` of panel metrics, or a callable
      ``f(metrics: dict[str, float]) -> float`` (higher is better) over the panel
      metrics, reported as one metric named after the function (``"custom"`` for a
      lambda). A table stores metric values, not images: a function of the images,
      a judge or a person cannot be replayed.
    * ``max_stages``: episode length, ``1..T``; default T.
    * ``seeds``: a non-empty list of the table's seeds, each once: the seeds
      ``reset()`` draws from when it is given none (default: all the table's seeds). A
      bare integer is refused rather than guessed at (one seed, or that many?): write
      ``seeds=[3]``.
    * ``render_mode``: only ``None`` (a table stores no images).
    * ``instances`` (format 2 tables): which problem instances episodes play: None or
      ``"all"`` (default), ``"train"`` or ``"test"`` (the instances of that split), or a
      list of instance names. Agents tune on ``env.unwrapped.with_instances("train")``;
      a benchmark scores them on ``"test"``. ``seeds=`` then restricts each instance's
      replicates to the table seeds given.

    ```python
    env = gym.make("LossAgent/Tabular-v0", table="table.sqlite", objective="psnr")
    ```

    ## Version History
    * v0: initial version. Later within v0: tables of format 2 (problem instances with
      replicates, ``instances=``, ``info["instance"]``). Later within v0, ``reset(seed=s)`` with ``s`` outside the
      table plays a table seed drawn by ``s`` (see Starting State; it raised
      ``ValueError`` before); the table's own seeds replay exactly as before.

    Raises:
        FileNotFoundError: No such table file or shipped table.
        IsADirectoryError: ``table`` is a directory.
        TableFormatError: Not a complete, undamaged table of a supported format
            version (the message names the file and the field or row).
        TypeError: ``table`` or ``seeds`` of the wrong type.
        ValueError: An objective metric or a seed that the table does not have (the
            message lists what it has), empty or repeated ``seeds``, ``max_stages`` out
            of range, or an objective that cannot be computed from metric values or
            whose ``J`` would overflow (see ``check_j_bound`` in the objectives).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        table: str | os.PathLike[str],
        objective: Any = "psnr",
        max_stages: int | None = None,
        seeds: Sequence[int] | None = None,
        render_mode: str | None = None,
        instances: str | Sequence[str] | None = None,
    ):
        if render_mode is not None:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported. Allowed: None (a table "
                "stores no images)."
            )
        self.render_mode = None
        self.table = t = load_table(table)
        depth = t.stages
        if max_stages is None:
            max_stages = depth
        if not isinstance(max_stages, int) or isinstance(max_stages, bool) or not 1 <= max_stages <= depth:
            raise ConfigError(
                ("max_stages",),
                f"max_stages={max_stages!r} is not allowed. Allowed: an integer in [1, {depth}] "
                "(the table's depth)."
            )
        self.max_stages = max_stages
        with _located("instances"):
            self.instances = self._checked_instances(instances)
        with _located("seeds"):
            own = tuple(seed for inst in self.instances for seed in inst.seeds)
            self.seeds = own if seeds is None else self._checked_seeds(seeds, own)
        # the replicates each instance plays: its seeds among self.seeds
        self._replicates = [tuple(x for x in inst.seeds if x in self.seeds) for inst in self.instances]
        keep = [i for i, r in enumerate(self._replicates) if r]
        self.instances = tuple(self.instances[i] for i in keep)
        self._replicates = [self._replicates[i] for i in keep]
        self._instances_arg, self._seeds_arg = instances, seeds
        self.preset_names = t.preset_names
        self.preset_weights = t.preset_weights
        self.loss_names = t.loss_names
        self.losses = {  # what agents read of each loss (no module: a table trains nothing)
            name: LossInfo(name, scale, tuple(bounds), *_loss_text(name))
            for name, scale, bounds in zip(t.loss_names, t.loss_scales, t.loss_ranges)
        }
        # the live env's configuration, for agents' specs (that of the episode's instance)
        self._objective_arg = objective
        self.config = live_config(t, instance=self.instances[0], objective=objective, max_stages=max_stages)
        self._penalty = float(self.config.divergence_penalty)

        with _located("objective"):
            self.objective, metric_names, compute, self._panel_columns = _replay_objective(objective, t.metrics)
        self.metric_names = metric_names
        # J and the objective's metric values of every node, on both splits
        self._objective_values: dict[str, np.ndarray] = {}
        self._j: dict[str, np.ndarray] = {}
        for split in SPLITS:
            metrics, j = compute(t.values[split])
            self._objective_values[split], self._j[split] = metrics, j

        n = len(t.loss_names)
        self.action_space = spaces.Discrete(len(t.preset_names))
        metric_boxes = {
            name: spaces.Box(np.float32(low), np.float32(high), (1,), np.float32)
            for name, (low, high) in self.objective.bounds.items()
        }
        metric_space = spaces.Dict(dict(metric_boxes))
        loss_low = t.loss_ranges[:, 0].astype(np.float32)
        loss_high = t.loss_ranges[:, 1].astype(np.float32)
        self.observation_space = spaces.Dict(
            {
                "metrics": metric_space,
                "weights": spaces.Box(0.0, 1.0, (n,), np.float32),
                "loss_values": spaces.Box(loss_low, loss_high, (n,), np.float32),
                "progress": spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )
        # observation arrays of every node, as the live env forms them
        self._obs_order = list(metric_space.keys())
        self._obs_metrics = np.empty((*t.diverged.shape, len(self._obs_order)), np.float32)
        for k, name in enumerate(self._obs_order):
            box = metric_boxes[name]
            column = self._objective_values["val"][..., metric_names.index(name)]
            value = np.nan_to_num(column, nan=box.low[0]).astype(np.float32)
            self._obs_metrics[..., k] = np.clip(value, box.low[0], box.high[0])
        losses = np.nan_to_num(t.losses.astype(np.float32), nan=0.0)
        self._obs_losses = np.clip(losses, loss_low, loss_high)
        self._info_weights = [
            {name: float(a) * float(s) for name, a, s in zip(t.loss_names, row, t.loss_scales)}
            for row in [np.zeros(n, np.float32), *t.preset_weights]
        ]

        self.timings = {"train_seconds": 0.0, "eval_seconds": 0.0}
        self._table_arg = table
        self._instance = self.instances[0]
        self._seed: int | None = None
        self._s = 0
        self._stage: int | None = None
        self._local = 0  # index of the node among the nodes of its depth
        self._node = 0
        self._reference = math.nan
        self._offsets = [t.offset(d) for d in range(depth + 1)]

    @property
    def task_description(self) -> str:
        """The live env's task in words (from :data:`lossagent_env.tasks.TASKS`)."""
        return TASKS.get(self.config.task).describe(self.config)

    @property
    def table_seed(self) -> int | None:
        """The table seed whose tree this episode replays (None before the first reset)."""
        return self._seed

    @property
    def instance(self) -> str:
        """The problem instance of this episode (before the first reset: the first one)."""
        return self._instance.name

    @property
    def replicate(self) -> int | None:
        """Index of this episode's tree among its instance's replicates (None before reset)."""
        return None if self._seed is None else self._instance.seeds.index(self._seed)

    @property
    def splits(self) -> dict[str, list[str]]:
        """``{"train": [...], "test": [...]}``: the table's instances by split (a format 1
        table has no split: both lists are empty)."""
        return {
            split: [i.name for i in self.table.instances if i.split == split] for split in INSTANCE_SPLITS
        }

    def with_instances(self, instances: str | Sequence[str]) -> TabularEnv:
        """The same replay (table, objective, horizon) on other instances: how an agent
        gets its training instances, ``env.unwrapped.with_instances("train")``.

        Raises:
            ValueError: See ``instances`` in the class docstring.
        """
        return TabularEnv(
            self._table_arg, objective=self._objective_arg, max_stages=self.max_stages, instances=instances
        )

    def tree_of(self, seed: int) -> int:
        """The table seed whose tree ``reset(seed=seed)`` replays (see Starting State).

        Raises:
            TypeError: ``seed`` is not an integer ``>= 0``.
            ValueError: A format 1 table and a seed that is not one of its seeds.
        """
        _check_seed_type(seed, "seed")
        seed = int(seed)
        if self.table.format_version == 1:
            self._seed_index(seed)
            return seed
        i = seed % len(self.instances)
        replicates = self._replicates[i]
        return replicates[(seed // len(self.instances)) % len(replicates)]

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        if seed is not None:
            _check_seed_type(seed, "seed")
            seed = int(seed)
        super().reset(seed=seed)
        if self.table.format_version >= 2:  # see "Starting State"
            if seed is None:
                seed = int(self.np_random.integers(2**31))
            seed = self.tree_of(seed)
        elif seed is None or seed not in self.table.seeds:
            seed = self.seeds[int(self.np_random.integers(len(self.seeds)))]
        self._s = self._seed_index(seed)
        self._seed = int(seed)
        instance = self.table.instance_of(self._seed)
        if instance is not self._instance:
            self._instance = instance
            self.config = live_config(
                self.table, instance=instance, objective=self._objective_arg, max_stages=self.max_stages
            )
        self._stage, self._local, self._node = 0, 0, 0
        self._reference = float(self._j["val"][self._s, 0])
        return self._observe(None), self._info(None)

    def step(self, action: Any) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        index = preset_index(action, self.preset_names)
        if self._stage is None:
            raise gym.error.ResetNeeded("Call reset() before step().")
        if self._stage >= self.max_stages:
            raise gym.error.ResetNeeded(
                f"The episode was truncated after max_stages={self.max_stages} stages; "
                "call reset() before step()."
            )
        self._stage += 1
        self._local = self._local * len(self.preset_names) + index
        self._node = self._offsets[self._stage] + self._local
        if self.table.diverged[self._s, self._node]:
            reward = self._penalty
        else:
            objective = float(self._j["val"][self._s, self._node])
            if math.isfinite(objective) and math.isfinite(self._reference):
                reward = float(objective - self._reference)
            else:
                reward = 0.0
            if math.isfinite(objective):
                self._reference = objective
        truncated = self._stage >= self.max_stages
        return self._observe(index), reward, False, truncated, self._info(index)

    def render(self) -> None:
        gym.logger.warn("A table stores no images; render() returns None.")

    # ------------------------------------------------------------ oracle, scores
    def oracle(self, seed: int | None = None) -> dict[str, Any]:
        """The best preset sequence of ``max_stages`` steps, by exhaustive search.

        Args:
            seed: A table seed; default the seed of the last reset.

        Returns:
            ``{"actions": [indices], "presets": [names], "final_objective": J*,
            "best_static": {"preset": name, "final_objective": J}}``, where ``J`` is
            the objective after the last stage on the validation split (what the agent
            sees; NaN counts as the worst). Ties go to the first sequence in
            lexicographic order.
        """
        s = self._tree_index(seed)
        k, m = len(self.preset_names), self.max_stages
        leaves = self._j["val"][s, self._offsets[m] : self._offsets[m] + k**m]
        scores = np.where(np.isnan(leaves), -np.inf, leaves)
        best = int(np.argmax(scores))
        actions = [int(d) for d in np.unravel_index(best, (k,) * m)]
        static = _static_leaves(k, m)
        i = int(np.argmax(scores[static]))
        return {
            "actions": actions,
            "presets": [self.preset_names[a] for a in actions],
            "final_objective": float(leaves[best]),
            "best_static": {
                "preset": self.preset_names[i],
                "final_objective": float(leaves[static[i]]),
            },
        }

    def oracle_on_means(
        self, seeds: Sequence[int] | None = None, z: float = 2.0, instance: str | None = None
    ) -> dict[str, Any]:
        """The best preset sequence by the mean over replicates, with its noise band.

        The replicates of an instance (the seeds of a format 1 table) differ only in
        training randomness (minibatch order, the network's and the discriminator's
        start), not in the images or the crops. The sequence is chosen on the mean of the
        validation ``J`` over the replicates and scored on the test split; each
        comparison is paired by replicate (the same seed under both sequences), with the
        standard error of the mean difference.

        Args:
            seeds: The replicates, at least two table seeds; default: every replicate of
                ``instance``.
            z: Width of the band in standard errors: a sequence whose validation mean is
                within ``z`` standard errors of the oracle's counts as a tie.
            instance: An instance of the table; default: this episode's (a format 1
                table has one, ``"default"``, whose replicates are all its seeds).

        Returns:
            ``{"instance", "actions", "presets", "best_static": {"preset", "actions"},
            "value": {"val": (mean, se), "test": (mean, se)}, "means": {"oracle": {split:
            mean J}, "static": {split: mean J}}, "ties": n, "replicates": r}``: ``value``
            is the oracle's mean ``J`` minus the best static preset's (the value of
            scheduling) with its standard error, ``ties`` the number of other sequences
            within the band of the oracle on validation. NaN counts as the worst.

        Raises:
            ValueError: Fewer than two seeds, a seed not in the table, an unknown
                instance, or ``z`` < 0.
        """
        chosen = list(self._checked_seeds(seeds, self.table.seeds)) if seeds is not None else self._replicates_of(instance)
        if len(chosen) < 2:
            raise ValueError(f"seeds={chosen!r}: a noise band needs at least two replicates.")
        if not (isinstance(z, (int, float)) and math.isfinite(z) and z >= 0):
            raise ValueError(f"z={z!r} is not allowed. Allowed: a finite number >= 0.")
        rows = [self._seed_index(s) for s in chosen]
        k, m = len(self.preset_names), self.max_stages
        end = self._offsets[m]
        leaves = {
            split: np.where(np.isnan(j := self._j[split][rows, end : end + k**m]), -np.inf, j)
            for split in SPLITS
        }  # (replicates, sequences)
        with np.errstate(invalid="ignore"):
            means = leaves["val"].mean(axis=0)
        best = int(np.argmax(means))
        static = _static_leaves(k, m)
        preset = int(np.argmax(means[static]))

        def paired(split: str, a: int, b: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
            with np.errstate(invalid="ignore"):
                d = leaves[split][:, [a]] - leaves[split][:, np.atleast_1d(b)]
                return d.mean(axis=0), d.std(axis=0, ddof=1) / math.sqrt(len(rows))

        gap, se = paired("val", best, np.arange(k**m))
        ties = int(np.sum(gap <= z * np.nan_to_num(se, nan=0.0))) - 1  # the oracle itself is no tie
        value = {split: tuple(float(v[0]) for v in paired(split, best, int(static[preset]))) for split in SPLITS}
        actions = [int(d) for d in np.unravel_index(best, (k,) * m)]
        with np.errstate(invalid="ignore"):
            mean_j = {
                name: {split: float(leaves[split][:, leaf].mean()) for split in SPLITS}
                for name, leaf in (("oracle", best), ("static", int(static[preset])))
            }
        return {
            "instance": self.table.instance_of(chosen[0]).name,
            "means": mean_j,
            "actions": actions,
            "presets": [self.preset_names[a] for a in actions],
            "best_static": {"preset": self.preset_names[preset], "actions": [preset] * m},
            "value": value,
            "ties": ties,
            "replicates": len(rows),
        }

    def sequence_means(self, instance: str | None = None) -> dict[str, np.ndarray]:
        """Mean ``J`` over an instance's replicates of every sequence of ``max_stages``
        presets, on each split: ``{split: float64 (K**max_stages,)}``, sequences in
        lexicographic order (NaN where a replicate is NaN).

        Args:
            instance: An instance of the table; default: this episode's (see
                :meth:`oracle_on_means`).

        Raises:
            ValueError: An unknown instance.
        """
        rows = [self._seed_index(s) for s in self._replicates_of(instance)]
        k, m = len(self.preset_names), self.max_stages
        end = self._offsets[m]
        return {split: self._j[split][rows, end : end + k**m].mean(axis=0) for split in SPLITS}

    def final_objective(
        self, actions: Sequence[Any], split: str = "test", seed: int | None = None, tree: int | None = None
    ) -> float:
        """``J`` after playing ``actions`` from the root, on a split.

        Args:
            actions: Preset indices, at most the table's depth.
            split: ``"test"`` (crops the agent never saw: for reports) or ``"val"``.
            seed: An episode seed (the tree ``reset(seed=seed)`` plays); default the
                tree of the last reset.
            tree: A table seed, the tree itself (instead of ``seed``).

        Raises:
            ValueError: A bad action, too many actions, an unknown split, seed or tree,
                or both ``seed`` and ``tree``.
        """
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not supported. Allowed: {SPLITS}")
        if seed is not None and tree is not None:
            raise ValueError(f"seed={seed!r} and tree={tree!r}: give one. Allowed: an episode seed or a table seed.")
        s = self._tree_index(seed) if tree is None else self._seed_index(tree)
        path = [preset_index(a, self.preset_names) for a in actions]
        if len(path) > self.table.stages:
            raise ValueError(
                f"{len(path)} actions given; the table holds {self.table.stages} stages."
            )
        return float(self._j[split][s, self.table.node_index(path)])

    # ------------------------------------------------------------ internals
    def _replicates_of(self, instance: str | None) -> list[int]:
        """The table seeds of ``instance`` (None: this episode's; a format 1 table's one
        instance, ``"default"``, holds all its seeds).

        Raises:
            ValueError: No such instance (the message lists them).
        """
        try:
            return list((self._instance if instance is None else self.table.instance(instance)).seeds)
        except KeyError as e:
            raise ValueError(e.args[0]) from None

    def _tree_index(self, seed: Any) -> int:
        """Row of the tree that ``reset(seed=seed)`` replays (None: this episode's)."""
        if seed is None:
            return self._seed_index(self._seed)
        return self._seed_index(self.tree_of(seed))

    def _checked_instances(self, instances: Any) -> tuple[Instance, ...]:
        """``instances=``: None (all), ``"train"``, ``"test"``, ``"all"`` or a list of names."""
        t = self.table
        names = [i.name for i in t.instances]
        allowed = (
            f"Allowed: None or 'all' (every instance), 'train' or 'test' (the instances of that "
            f"split), or a non-empty list of the table's instances {names}, each once"
        )
        if instances is None or instances == "all":
            return t.instances
        if t.format_version == 1:
            raise ValueError(
                f"instances={instances!r}: this table (format 1) has one configuration and no "
                "instances. Allowed: None."
            )
        if isinstance(instances, str):
            if instances not in INSTANCE_SPLITS:
                raise ValueError(f"instances={instances!r} is not allowed. {allowed}.")
            chosen = tuple(i for i in t.instances if i.split == instances)
            if not chosen:
                raise ValueError(f"instances={instances!r}: the table has no {instances} instance. {allowed}.")
            return chosen
        if isinstance(instances, Mapping) or not isinstance(instances, Sequence) or not instances:
            raise TypeError(f"instances={instances!r} is not allowed. {allowed}.")
        unknown = [n for n in instances if n not in names]
        if unknown:
            raise ValueError(f"instances={instances!r} names {unknown}, not in the table. {allowed}.")
        if len(set(instances)) != len(instances):
            raise ValueError(f"instances={instances!r} repeats a name. {allowed}.")
        return tuple(t.instance(n) for n in instances)

    def _seed_index(self, seed: Any) -> int:
        if seed is None:
            raise gym.error.ResetNeeded("Call reset() first, or give a seed.")
        _check_seed_type(seed, "seed")
        try:
            return self.table.seeds.index(int(seed))
        except ValueError:
            raise ValueError(
                f"Seed {seed!r} is not in the table. Allowed: its seeds {list(self.table.seeds)}."
            ) from None

    def _checked_seeds(self, seeds: Any, own: Sequence[int] | None = None) -> tuple[int, ...]:
        """``seeds=``: a non-empty sequence of the table's seeds (of ``own``, the seeds of
        the env's instances, where given), each once."""
        own = self.table.seeds if own is None else own
        allowed = f"Allowed: a non-empty list of the table's seeds {list(own)}, each once"
        if isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, (Sequence, np.ndarray)):
            hint = f", e.g. seeds=[{seeds!r}]" if isinstance(seeds, (int, np.integer)) else ""
            raise TypeError(f"seeds={seeds!r} ({type(seeds).__name__}) is not allowed. {allowed}{hint}.")
        chosen = list(seeds)
        if not chosen:
            raise ValueError(f"seeds={seeds!r} is empty: reset() would have no seed to draw. {allowed}.")
        for seed in chosen:
            self._seed_index(seed)
            if seed not in own:
                raise ValueError(
                    f"Seed {seed!r} is a tree of instance {self.table.instance_of(int(seed)).name!r}, "
                    f"which this env does not play. {allowed}."
                )
        try:
            return tuple(check_seeds([int(s) for s in chosen], what=f"seeds={seeds!r}"))
        except ValueError as e:
            raise ValueError(f"{e}. {allowed}.") from None

    def _observe(self, index: int | None) -> ObsType:
        assert self._stage is not None  # called after reset()
        at = (self._s, self._node)
        row = self._obs_metrics[at]
        weights = (
            np.zeros(len(self.loss_names), np.float32)
            if index is None
            else self.preset_weights[index].copy()
        )
        self.timings = {
            "train_seconds": float(self.table.train_seconds[at]),
            "eval_seconds": float(self.table.eval_seconds[at]),
        }
        return {
            "metrics": {name: row[j : j + 1].copy() for j, name in enumerate(self._obs_order)},
            "weights": weights,
            "loss_values": self._obs_losses[at].copy(),
            "progress": np.array([self._stage / self.max_stages], np.float32),
        }

    def _info(self, index: int | None) -> dict[str, Any]:
        at = (self._s, self._node)
        info = {
            "metrics": dict(zip(self.metric_names, self._objective_values["val"][at].tolist())),
            "objective": float(self._j["val"][at]),
            "loss_values": dict(zip(self.loss_names, self.table.losses[at].tolist())),
            "weights": dict(self._info_weights[0 if index is None else index + 1]),
            "stage": self._stage,
            "diverged": bool(self.table.diverged[at]),
            "preset": None if index is None else self.preset_names[index],
        }
        if self.table.format_version >= 2:
            info["instance"] = self._instance.name
        flagged = [
            name for name, columns in zip(self.metric_names, self._panel_columns)
            if self.table.invalid["val"][at][columns].any()
        ]
        if flagged:
            info["invalid_metrics"] = flagged
        return info


@dataclass(frozen=True)
class LossInfo:
    """A loss of the table's repository as agents see it: name, scale, value range,
    and the description and role of its registered class."""

    name: str
    scale: float
    value_range: tuple[float, float]
    description: str
    role: str


def _static_leaves(k: int, m: int) -> np.ndarray:
    """Index among the ``k**m`` leaves of depth ``m`` of each static sequence
    ``(p, p, ..., p)``, in preset order."""
    return np.arange(k) * sum(k**d for d in range(m))


def _loss_text(name: str) -> tuple[str, str]:
    cls = LOSSES.get(name.split(":", 1)[0]) if name.split(":", 1)[0] in LOSSES else None
    if cls is None:
        return "", ""
    return str(cls.description), str(cls.role)


def _task_kwargs(header: Mapping[str, Any]) -> dict[str, Any]:
    """The ``task`` the table's env id fixed (it is not among the env kwargs)."""
    task = header.get("env_config", {}).get("task")
    return {"task": task} if task is not None else {}


Compute = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _replay_objective(
    spec: Any, panel: tuple[str, ...]
) -> tuple[Objective, tuple[str, ...], Compute, list[list[int]]]:
    """The objective, its metric names, a function from panel values to
    ``(objective metric values (..., M), J (...))``, and the panel columns each of its
    metrics reads.

    Raises:
        ValueError: A metric outside the panel, or an objective that needs images.
    """
    allowed = (
        f"Allowed: a panel metric name (one of {list(panel)}), a {{metric: weight}} dict of "
        "them, a MetricObjective or a CompositeObjective of panel metrics, or a callable "
        "f(metrics: dict[str, float]) -> float over the panel metrics (a table stores "
        "metric values, not images)."
    )
    if not isinstance(spec, (str, Mapping, Objective)) and not callable(spec):
        raise ValueError(
            f"objective={spec!r} ({type(spec).__name__}) cannot be replayed from a table. {allowed}"
        )
    if callable(spec) and not isinstance(spec, Objective):
        name = getattr(spec, "__name__", "")
        name = name if name.isidentifier() else "custom"
        objective: Objective = CallableObjective(
            spec, name=name,
            description=f"a user-supplied function {name}(metrics) of the metrics {list(panel)}",
        )

        def compute_callable(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            j = np.empty(values.shape[:-1])
            for at in np.ndindex(*j.shape):
                j[at] = _finite(spec(dict(zip(panel, values[at].tolist()))), name)
            return j[..., None], j

        return objective, (name,), compute_callable, [list(range(len(panel)))]

    if isinstance(spec, str):
        _check_panel([spec], panel)
    elif isinstance(spec, Mapping):
        _check_panel([k for k in spec if isinstance(k, str)], panel)
    objective = make_objective(spec)
    sources = _panel_sources(objective, allowed)
    _check_panel(list(sources.values()), panel)
    names = tuple(objective.metric_names)
    columns = [panel.index(sources[name]) for name in names]

    def compute(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chosen = values[..., columns]
        j = np.empty(values.shape[:-1])
        for at in np.ndindex(*j.shape):
            j[at] = objective.combine(dict(zip(names, chosen[at].tolist())))
        return chosen, j

    return objective, names, compute, [[column] for column in columns]


def _panel_sources(objective: Objective, allowed: str) -> dict[str, str]:
    """``{objective metric name: panel metric it reads}``."""
    if isinstance(objective, MetricObjective):
        return {name: name for name in objective.metric_names}
    if isinstance(objective, CompositeObjective):
        sources = {}
        for part, layout in zip(objective.parts, objective.metric_layout()):
            inner = _panel_sources(part, allowed)
            sources.update({layout[m]: inner[m] for m in part.metric_names})
        return sources
    raise ValueError(
        f"Objective {objective!r} cannot be computed from a table's metric values. {allowed}"
    )


def _check_seed_type(seed: Any, what: str) -> None:
    """A seed is an integer ``>= 0`` (Python or NumPy), never a bool, float or string.

    Raises:
        TypeError: Another type (``True`` would otherwise play seed 1).
        ValueError: A negative integer.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            f"{what}={seed!r} ({type(seed).__name__}) is not a seed. Allowed: an integer >= 0."
        )
    if seed < 0:
        raise ValueError(f"{what}={seed!r} is negative. Allowed: an integer >= 0.")


def _check_panel(names: Sequence[str], panel: tuple[str, ...]) -> None:
    missing = [name for name in names if name not in panel]
    if missing:
        raise ValueError(
            f"Metric {missing[0]!r} is not in the table's panel. Allowed: the panel "
            f"metrics {list(panel)}."
        )


def _finite(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Objective function {name!r} returned {value!r}; it must return one number.") from None
    if not math.isfinite(number):
        raise ValueError(f"Objective function {name!r} returned {number!r}; it must return a finite number.")
    return number

