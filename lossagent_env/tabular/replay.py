"""``LossAgent/Tabular-v0``: replay a precomputed table instead of training."""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lossagent_env.config import EnvConfig
from lossagent_env.errors import ConfigError, ConfigTypeError, UnknownNameError
from lossagent_env.losses import LOSSES
from lossagent_env.registry import unknown_name_message
from lossagent_env.seeds import check_seed, check_seeds
from lossagent_env.tabular.format import Instance, Table, TableFormatError, read_table
from lossagent_env.tabular.objective import panel_objective_of
from lossagent_env.tabular.schema import INSTANCE_SPLITS
from lossagent_env.tasks import TASKS
from lossagent_env.wrappers import preset_index

__all__ = ["TABLES_DIR", "TabularEnv", "load_table", "resolve_table", "shipped_tables"]

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
    kwargs = instance.env_kwargs
    task: dict[str, Any] = {"task": instance.task} if instance.task is not None else {}
    where = "env_kwargs" if instance.split is None else f"instances[{table.instances.index(instance)}].env_kwargs"
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


class TabularEnv(gym.Env[ObsType, np.int64]):
    """Replay of a precomputed table: the live env, without the training.

    ## Description
    Replays a table built by ``lossagent tabulate`` (docs/tables.md): for the same seed
    and actions it returns the same observation, reward, ``terminated``, ``truncated``
    and ``info`` as the live env made with the instance's configuration and
    ``objective``, wrapped in :class:`~lossagent_env.wrappers.PresetActions` with the
    table's presets, bit for bit on the machine that built the table; a step costs
    microseconds. It holds the validation split of the instances it plays and nothing
    else: the held-out test split, the oracle and the references of a benchmark are the
    table's analysis (:class:`~lossagent_env.tabular.analysis.TableAnalysis`).

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
    Every episode replays one problem: an instance and one of its replicates (a tree),
    from its root. ``reset(seed=s)`` (any integer ``s >= 0``):

    1. ``s`` is the seed of a tree this env plays: that tree, the same episode as the
       live env's ``reset(seed=s)`` with the instance's configuration.
    2. Any other ``s``: with ``I`` instances played, instance ``instances[s % I]``
       and, of its ``R`` replicates, number ``(s // I) % R``; so ``I*R`` consecutive
       seeds that name no tree (a benchmark's ``0 .. I*R - 1`` on the test instances)
       play every (instance, replicate) once.
    3. ``reset()`` without a seed: ``s`` drawn with the env's random generator, as 2.

    The same seed always plays the same tree; ``env.unwrapped.instance``, ``replicate``
    and ``table_seed`` say which. A table of one configuration (format 1) is one
    instance, ``"default"``, whose replicates are its seeds. A seed that is not an
    integer ``>= 0`` (``True``, ``1.0``, ``"1"``) raises ``TypeError``; a negative one
    ``ValueError``.

    ## Episode End
    1. Termination: never.
    2. Truncation: after ``max_stages`` steps; as in the live env, a further ``step``
       raises ``ResetNeeded`` until ``reset``.

    ## Info
    The live env's keys and values (``metrics``, ``objective``, ``loss_values``,
    ``weights``, ``stage``, ``diverged``), the wrapper's ``preset`` (``None`` after
    reset) and, on a table of instances split into train and test, ``instance``.
    ``env.unwrapped.timings`` holds the stored wall-clock ``train_seconds`` and
    ``eval_seconds`` of the original stage.

    ## Arguments
    ``table``, ``objective`` (over the panel metrics), ``max_stages`` (``1..T``, default
    T), ``instances``, ``seeds`` and ``train_objective`` (the objective of
    :meth:`with_instances`): see "The replay env" in docs/tables.md. ``render_mode``:
    only ``None`` (a table stores no images).

    ```python
    env = gym.make("LossAgent/Tabular-v0", table="lossbench", objective="psnr", instances="test")
    train = env.unwrapped.with_instances("train")   # where agents may tune
    ```

    ## Version History
    * v0: initial version. Later within v0: tables of problem instances (``instances=``,
      ``info["instance"]``); a reset seed outside the table plays a tree it maps to.
      Later within v0 (LossBench v3): every table is read as a table of instances, so
      one reset rule serves both formats (a seed of a tree the env plays plays that tree,
      as a format 1 table did; other seeds and unseeded resets follow rule 2 of Starting
      State, as a table of instances did, where format 1 drew a tree); the oracle,
      ``final_objective`` and the means over replicates moved to
      :class:`~lossagent_env.tabular.analysis.TableAnalysis`; the env no longer holds
      the test split; ``train_objective``.

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
        train_objective: Any = None,
    ):
        if render_mode is not None:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported. Allowed: None (a table "
                "stores no images)."
            )
        self.render_mode = None
        whole = load_table(table)
        self.max_stages = max_stages = whole.episode_length(max_stages)
        with _located("instances"):
            chosen = _checked_instances(whole, instances)
        own = tuple(seed for inst in chosen for seed in inst.seeds)
        with _located("seeds"):
            self.seeds = own if seeds is None else _checked_seeds(whole, seeds, own)
        # what this env may read: the validation split of the trees it plays
        self.table = t = whole.restricted(self.seeds, splits=("val",))
        played = {i.name for i in t.instances}  # those with a tree among the seeds, in the order asked for
        self.instances = tuple(t.instance(i.name) for i in chosen if i.name in played)
        self._splits = {split: [i.name for i in whole.instances if i.split == split] for split in INSTANCE_SPLITS}
        self._table_arg, self._objective_arg, self._train_objective_arg = table, objective, train_objective
        self.preset_names = t.preset_names
        self.preset_weights = t.preset_weights
        self.loss_names = t.loss_names
        self.losses = {  # what agents read of each loss (no module: a table trains nothing)
            name: LossInfo(name, scale, tuple(bounds), *_loss_text(name))
            for name, scale, bounds in zip(t.loss_names, t.loss_scales, t.loss_ranges)
        }
        # the live env's configuration, for agents' specs (that of the episode's instance)
        self.config = live_config(t, instance=self.instances[0], objective=objective, max_stages=max_stages)

        with _located("objective"):
            panel = panel_objective_of(objective, t.metrics)
        if train_objective is not None:
            with _located("train_objective"):
                panel_objective_of(train_objective, t.metrics)
        self.objective, self.metric_names, self._panel_columns = panel.objective, panel.metric_names, panel.panel_columns
        # J and the objective's metric values of every node (validation)
        self._objective_values, self._j = panel.compute(t.values["val"])

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
            column = self._objective_values[..., self.metric_names.index(name)]
            value = np.nan_to_num(column, nan=box.low[0]).astype(np.float32)
            self._obs_metrics[..., k] = np.clip(value, box.low[0], box.high[0])
        losses = np.nan_to_num(t.losses.astype(np.float32), nan=0.0)
        self._obs_losses = np.clip(losses, loss_low, loss_high)
        self._info_weights = [
            {name: float(a) * float(s) for name, a, s in zip(t.loss_names, row, t.loss_scales)}
            for row in [np.zeros(n, np.float32), *t.preset_weights]
        ]
        self._row = {seed: i for i, seed in enumerate(t.seeds)}

        self.timings = {"train_seconds": 0.0, "eval_seconds": 0.0}
        self._instance = self.instances[0]
        self._seed: int | None = None
        self._s = 0
        self._stage: int | None = None
        self._local = 0  # index of the node among the nodes of its depth
        self._node = 0
        self._reference = math.nan
        self._offsets = [t.offset(d) for d in range(t.stages + 1)]

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
        """``{"train": [...], "test": [...]}``: the table's instances by split (a table
        of one configuration has no split: both lists are empty)."""
        return {split: list(names) for split, names in self._splits.items()}

    @property
    def train_objective(self) -> Any:
        """The objective agents tune under on :meth:`with_instances` (see Arguments)."""
        return self._objective_arg if self._train_objective_arg is None else self._train_objective_arg

    def with_instances(self, instances: str | Sequence[str]) -> TabularEnv:
        """The same replay (table, horizon) on other instances, under
        :attr:`train_objective`: how an agent gets its training instances,
        ``env.unwrapped.with_instances("train")``.

        Raises:
            ValueError: See ``instances`` in the class docstring.
        """
        return TabularEnv(
            self._table_arg, objective=self.train_objective, max_stages=self.max_stages, instances=instances
        )

    def tree_of(self, seed: int) -> int:
        """The table seed whose tree ``reset(seed=seed)`` replays (see Starting State).

        Raises:
            TypeError: ``seed`` is not an integer.
            ValueError: A negative seed.
        """
        return self._tree(check_seed(seed))

    def _tree(self, seed: int) -> int:
        if seed in self._row:
            return seed
        instance = self.instances[seed % len(self.instances)]
        return instance.seeds[(seed // len(self.instances)) % len(instance.seeds)]

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        seed = None if seed is None else check_seed(seed)
        super().reset(seed=seed)
        tree = self._tree(int(self.np_random.integers(2**31)) if seed is None else seed)
        self._s = self._row[tree]
        self._seed = tree
        instance = self.table.instance_of(tree)
        if instance is not self._instance:
            self._instance = instance
            self.config = live_config(
                self.table, instance=instance, objective=self._objective_arg, max_stages=self.max_stages
            )
        self._stage, self._local, self._node = 0, 0, 0
        self._reference = float(self._j[self._s, 0])
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
            reward = float(self.config.divergence_penalty)  # the episode's instance's
        else:
            objective = float(self._j[self._s, self._node])
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

    # ------------------------------------------------------------ internals
    def _observe(self, index: int | None) -> ObsType:
        assert self._stage is not None  # called after reset()
        at = (self._s, self._node)
        row = self._obs_metrics[at]
        weights = np.zeros(len(self.loss_names), np.float32) if index is None else self.preset_weights[index].copy()
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
            "metrics": dict(zip(self.metric_names, self._objective_values[at].tolist())),
            "objective": float(self._j[at]),
            "loss_values": dict(zip(self.loss_names, self.table.losses[at].tolist())),
            "weights": dict(self._info_weights[0 if index is None else index + 1]),
            "stage": self._stage,
            "diverged": bool(self.table.diverged[at]),
            "preset": None if index is None else self.preset_names[index],
        }
        if self._instance.split is not None:  # one configuration (no split): the live env's keys only
            info["instance"] = self._instance.name
        flagged = [
            name for name, columns in zip(self.metric_names, self._panel_columns)
            if self.table.invalid["val"][at][list(columns)].any()
        ]
        if flagged:
            info["invalid_metrics"] = flagged
        return info


def _checked_instances(table: Table, instances: Any) -> tuple[Instance, ...]:
    """``instances=``: None (all), ``"train"``, ``"test"``, ``"all"`` or a list of names."""
    names = [i.name for i in table.instances]
    allowed = (
        f"Allowed: None or 'all' (every instance), 'train' or 'test' (the instances of that "
        f"split), or a non-empty list of the table's instances {names}, each once"
    )
    if instances is None or instances == "all":
        return table.instances
    if isinstance(instances, str):
        if instances not in INSTANCE_SPLITS:
            raise ValueError(f"instances={instances!r} is not allowed. {allowed}.")
        chosen = tuple(i for i in table.instances if i.split == instances)
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
    return tuple(table.instance(n) for n in instances)


def _checked_seeds(table: Table, seeds: Any, own: Sequence[int]) -> tuple[int, ...]:
    """``seeds=``: a non-empty sequence of the table seeds in ``own`` (the seeds of the
    env's instances), each once."""
    allowed = f"Allowed: a non-empty list of the table's seeds {list(own)}, each once"
    if isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, (Sequence, np.ndarray)):
        hint = f", e.g. seeds=[{seeds!r}]" if isinstance(seeds, (int, np.integer)) else ""
        raise TypeError(f"seeds={seeds!r} ({type(seeds).__name__}) is not allowed. {allowed}{hint}.")
    chosen = list(seeds)
    if not chosen:
        raise ValueError(f"seeds={seeds!r} is empty: reset() would have no seed to draw. {allowed}.")
    for seed in chosen:
        check_seed(seed)
        if int(seed) not in table.seeds:
            raise ValueError(f"Seed {seed!r} is not in the table. Allowed: its seeds {list(table.seeds)}.")
        if int(seed) not in own:
            raise ValueError(
                f"Seed {seed!r} is a tree of instance {table.instance_of(int(seed)).name!r}, "
                f"which this env does not play. {allowed}."
            )
    try:
        return tuple(check_seeds([int(s) for s in chosen], what=f"seeds={seeds!r}"))
    except ValueError as e:
        raise ValueError(f"{e}. {allowed}.") from None


@dataclass(frozen=True)
class LossInfo:
    """A loss of the table's repository as agents see it: name, scale, value range,
    and the description and role of its registered class."""

    name: str
    scale: float
    value_range: tuple[float, float]
    description: str
    role: str


def _loss_text(name: str) -> tuple[str, str]:
    cls = LOSSES.get(name.split(":", 1)[0]) if name.split(":", 1)[0] in LOSSES else None
    if cls is None:
        return "", ""
    return str(cls.description), str(cls.role)
