"""The table file: one SQLite database, written unit by unit and read into arrays.

A table holds, per seed, the tree of all preset sequences up to ``stages`` steps; a
node is ``(seed, path)``, ``path`` the preset indices from the root, stored as text
joined by ``"."`` (``""`` is the root). Reading checks the header and every row against
:mod:`lossagent_env.tabular.schema` first; any problem is one :class:`TableFormatError`.
The schema, the header keys, units and format versions: see docs/tables.md ("The file").
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import operator
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossagent_env.errors import ConfigError
from lossagent_env.tabular.schema import (
    FORMAT,
    FORMAT_VERSION,
    LOSS_ROW,
    METRIC_ROW,
    NODE_ROW,
    READABLE_VERSIONS,
    SPLITS,
    UNIT_ROW,
    TableFormatError,
    TableHeader,
    check_header,
    check_rows,
    decode_header,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SPLITS",
    "Instance",
    "NodeRecord",
    "Table",
    "TableFormatError",
    "connect_readonly",
    "create_table",
    "decode_path",
    "done_units",
    "encode_path",
    "read_header",
    "read_table",
    "write_unit",
]

_SCHEMA = """
CREATE TABLE header (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE nodes (
    seed INTEGER NOT NULL, path TEXT NOT NULL, depth INTEGER NOT NULL,
    diverged INTEGER NOT NULL, train_seconds REAL NOT NULL, eval_seconds REAL NOT NULL,
    PRIMARY KEY (seed, path)
) WITHOUT ROWID;
CREATE TABLE metrics (
    seed INTEGER NOT NULL, path TEXT NOT NULL,
    split TEXT NOT NULL CHECK (split IN ('val', 'test')),
    metric TEXT NOT NULL, value REAL, invalid INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (seed, path, split, metric)
) WITHOUT ROWID;
CREATE TABLE losses (
    seed INTEGER NOT NULL, path TEXT NOT NULL, loss TEXT NOT NULL, value REAL,
    PRIMARY KEY (seed, path, loss)
) WITHOUT ROWID;
CREATE TABLE units (
    seed INTEGER NOT NULL, first INTEGER NOT NULL, nodes INTEGER NOT NULL,
    PRIMARY KEY (seed, first)
);
"""


@dataclass
class NodeRecord:
    """What one node stores (one row of ``nodes`` and its ``metrics`` and ``losses``).

    Attributes:
        seed: The episode seed.
        path: Preset indices from the root (empty for the root).
        diverged: Whether the last stage diverged.
        train_seconds: Wall-clock seconds of the last stage's training.
        eval_seconds: Wall-clock seconds of its evaluation on ``val``.
        metrics: ``{split: {metric: value}}`` for ``"val"`` and ``"test"``.
        losses: ``{loss: unweighted value}`` on ``val``.
        invalid: ``{split: [metric, ...]}``: metrics that gave a non-number for some
            crop (a collapsed output) and were counted at their worst bound.
    """

    seed: int
    path: tuple[int, ...]
    diverged: bool
    train_seconds: float
    eval_seconds: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    invalid: dict[str, list[str]] = field(default_factory=dict)


def encode_path(path: Sequence[int]) -> str:
    """``(2, 0, 1)`` -> ``"2.0.1"``; ``()`` -> ``""``."""
    return ".".join(str(int(i)) for i in path)


def decode_path(text: str) -> tuple[int, ...]:
    """``"2.0.1"`` -> ``(2, 0, 1)``; ``""`` -> ``()``."""
    return tuple(int(part) for part in text.split(".")) if text else ()


# --------------------------------------------------------------------------- writing


def create_table(path: str | os.PathLike[str], header: dict[str, Any]) -> None:
    """Create an empty table with its header, atomically (a temporary file, renamed).

    The temporary file has a name of its own (``tempfile.mkstemp`` beside ``path``), so
    no file of the user's is overwritten or removed, and it is removed if writing fails.

    Raises:
        FileExistsError: ``path`` exists (a dangling link counts).
    """
    path = Path(path)
    if os.path.lexists(path):
        raise FileExistsError(f"{str(path)!r} already exists.")
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        db = sqlite3.connect(tmp)
        try:
            with db:
                db.executescript(_SCHEMA)
                # version 2 with instances, else 1 (a table of one configuration stays readable by older code)
                version = FORMAT_VERSION if header.get("instances") else 1
                header = {"format": FORMAT, "format_version": version, **header}
                db.executemany(
                    "INSERT INTO header VALUES (?, ?)",
                    [(key, json.dumps(value)) for key, value in header.items()],
                )
        finally:
            db.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_unit(
    db: sqlite3.Connection, seed: int, first: int, records: Iterable[NodeRecord]
) -> None:
    """Store one unit's nodes and its "done" mark in one transaction.

    The root (every unit of a seed measures it identically) is written by the first
    unit of its seed only (``INSERT OR IGNORE``).
    """
    records = list(records)
    with db:
        for r in records:
            key = (r.seed, encode_path(r.path))
            verb = "INSERT OR IGNORE" if not r.path else "INSERT"
            db.execute(
                f"{verb} INTO nodes VALUES (?, ?, ?, ?, ?, ?)",
                (*key, len(r.path), int(r.diverged), r.train_seconds, r.eval_seconds),
            )
            db.executemany(
                f"{verb} INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (*key, split, name, value, int(name in r.invalid.get(split, ())))
                    for split, values in r.metrics.items()
                    for name, value in values.items()
                ],
            )
            db.executemany(
                f"{verb} INTO losses VALUES (?, ?, ?, ?)",
                [(*key, name, value) for name, value in r.losses.items()],
            )
        db.execute("INSERT INTO units VALUES (?, ?, ?)", (seed, first, len(records)))


def done_units(db: sqlite3.Connection, source: str = "<table>") -> set[tuple[int, int]]:
    """The ``(seed, first preset)`` units already stored.

    Raises:
        TableFormatError: A row of ``units`` that is not three integers.
    """
    rows = check_rows(db.execute(UNIT_ROW.select).fetchall(), UNIT_ROW, source)
    return {(seed, first) for seed, first, _ in rows}


# --------------------------------------------------------------------------- reading


@contextlib.contextmanager
def sqlite_errors(source: str) -> Iterator[None]:
    """Turn an ``sqlite3`` error (a damaged page, a missing SQL table, a file that is not
    a database) into a :class:`TableFormatError` that names the file."""
    try:
        yield
    except sqlite3.Error as e:
        raise TableFormatError(
            f"Table {source} cannot be read ({type(e).__name__}: {e}): the file is damaged "
            "or not a LossAgent table. Rebuild it with `lossagent tabulate`."
        ) from e


def read_header(db: sqlite3.Connection, source: str = "<table>") -> dict[str, Any]:
    """The header as a dict, checked against :class:`~lossagent_env.tabular.schema.TableHeader`.

    Raises:
        TableFormatError: Not a table, a format version this code does not read, or a
            header field that is missing or out of range (the message names it).
    """
    return _read_header(db, source)[0]


def _read_header(db: sqlite3.Connection, source: str) -> tuple[dict[str, Any], TableHeader]:
    try:
        rows = db.execute("SELECT key, value FROM header").fetchall()
    except sqlite3.DatabaseError as e:
        raise TableFormatError(f"{source} is not a LossAgent table ({e}).") from e
    header = decode_header(rows, source)
    if header.get("format") != FORMAT:
        raise TableFormatError(f"{source} is not a LossAgent table (its header has no format {FORMAT!r}).")
    if header.get("format_version") not in READABLE_VERSIONS:
        raise TableFormatError(
            f"{source} has table format version {header.get('format_version')!r}; this code "
            f"reads versions {list(READABLE_VERSIONS)}."
        )
    return header, check_header(header, source)


def connect_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open a table for reading only.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"Table file {str(path)!r} is a directory. Allowed: a table file.")
    if not path.is_file():
        raise FileNotFoundError(f"Table file {str(path)!r} does not exist.")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


@dataclass(frozen=True)
class Instance:
    """A problem instance of a table and its replicates.

    Every table is read as a table of instances: a format 1 table (one configuration) has
    one instance, ``"default"``, with no split, whose replicates are all its seeds.

    Attributes:
        name: Its name (``"default"`` for the one configuration of a format 1 table).
        split: ``"train"`` or ``"test"``; None where the table has no split (format 1).
        env_id: Gymnasium id of its live env.
        env_kwargs: Its ``gym.make`` keyword arguments.
        seeds: Its replicates, one tree each, in order.
        task: The task its env id fixes (not among ``env_kwargs``), if the header says.
    """

    name: str
    split: str | None
    env_id: str
    env_kwargs: dict[str, Any]
    seeds: tuple[int, ...]
    task: str | None = None


@dataclass(frozen=True)
class Table:
    """A whole table in memory, as arrays indexed by ``[seed index, node index]``.

    Node index: breadth-first over the tree, children in preset order. The nodes of
    depth ``d`` occupy ``offset(d) .. offset(d) + K**d - 1``; the node after presets
    ``(a_1, ..., a_d)`` is ``offset(d) + sum_j a_j * K**(d - j)`` (its digits in base K).

    Attributes:
        header: The header (its keys: docs/tables.md).
        preset_names: Preset names, in action order.
        preset_weights: Read-only ``float32 (K, n_losses)``: the action of each preset.
        loss_names: Losses, in action order.
        loss_scales: ``float64 (n_losses,)``: effective weight = action * scale.
        loss_ranges: ``float64 (n_losses, 2)``: bounds of each loss's value.
        metrics: The panel metric names.
        seeds: The seeds, in order.
        stages: Depth T of the trees.
        values: ``{split: float64 (S, N, P)}``, panel metrics (NaN where unmeasured).
        invalid: ``{split: bool (S, N, P)}``: the metric was counted at its worst bound.
        losses: ``float64 (S, N, n_losses)``, unweighted losses on ``val``.
        diverged: ``bool (S, N)``.
        train_seconds: ``float64 (S, N)``.
        eval_seconds: ``float64 (S, N)``.
        instances: The problem instances, in header order (one, ``"default"``, for a
            format 1 table); their seeds partition ``seeds``.
    """

    header: dict[str, Any]
    preset_names: tuple[str, ...]
    preset_weights: np.ndarray
    loss_names: tuple[str, ...]
    loss_scales: np.ndarray
    loss_ranges: np.ndarray
    metrics: tuple[str, ...]
    seeds: tuple[int, ...]
    stages: int
    values: dict[str, np.ndarray]
    invalid: dict[str, np.ndarray]
    losses: np.ndarray
    diverged: np.ndarray
    train_seconds: np.ndarray
    eval_seconds: np.ndarray
    instances: tuple[Instance, ...] = ()

    def restricted(self, seeds: Sequence[int], splits: Sequence[str] = SPLITS) -> Table:
        """The same table with only the trees of ``seeds`` (in the table's order) and the
        values of ``splits``: what a replay of some instances may read.

        Raises:
            ValueError: A seed the table does not hold, or an unknown split.
        """
        unknown = sorted(set(seeds) - set(self.seeds))
        if unknown:
            raise ValueError(f"Seeds {unknown[:10]} are not in the table. Allowed: its seeds {list(self.seeds)}.")
        bad = [s for s in splits if s not in self.values]
        if bad:
            raise ValueError(f"Splits {bad} are not in the table. Allowed: {list(self.values)}.")
        keep = set(seeds)
        rows = [i for i, s in enumerate(self.seeds) if s in keep]

        def take(array: np.ndarray) -> np.ndarray:
            out = array[rows]
            out.flags.writeable = False
            return out

        return dataclasses.replace(
            self,
            seeds=tuple(self.seeds[i] for i in rows),
            values={s: take(self.values[s]) for s in splits},
            invalid={s: take(self.invalid[s]) for s in splits},
            losses=take(self.losses),
            diverged=take(self.diverged),
            train_seconds=take(self.train_seconds),
            eval_seconds=take(self.eval_seconds),
            instances=tuple(
                dataclasses.replace(i, seeds=tuple(s for s in i.seeds if s in keep))
                for i in self.instances if keep & set(i.seeds)
            ),
        )

    def content_sha256(self) -> str:
        """SHA-256 of what a replay and its analysis read: presets, losses, panel,
        instances and trees, and every value, flag and loss; not the wall-clock seconds,
        nor how and where the table was built. Two builds of one recipe on one machine
        have the same content (their seconds differ, so their files do)."""
        digest = hashlib.sha256()
        described = [
            list(self.preset_names), self.preset_weights.tolist(), list(self.loss_names), self.loss_scales.tolist(),
            self.loss_ranges.tolist(), list(self.metrics), list(self.seeds), self.stages,
            [[i.name, i.split, i.env_id, i.env_kwargs, list(i.seeds), i.task] for i in self.instances],
        ]
        digest.update(json.dumps(described, sort_keys=True, default=repr).encode())
        for split in sorted(self.values):
            digest.update(np.ascontiguousarray(self.values[split]).tobytes())
            digest.update(np.ascontiguousarray(self.invalid[split]).tobytes())
        digest.update(np.ascontiguousarray(self.losses).tobytes())
        digest.update(np.ascontiguousarray(self.diverged).tobytes())
        return digest.hexdigest()

    def instance(self, name: str) -> Instance:
        """The instance called ``name``.

        Raises:
            KeyError: No such instance (the message lists them).
        """
        for entry in self.instances:
            if entry.name == name:
                return entry
        raise KeyError(
            f"The table has no instance {name!r}. Allowed: {[i.name for i in self.instances]}."
        )

    def instance_of(self, seed: int) -> Instance:
        """The instance whose replicates include the table seed ``seed``."""
        for entry in self.instances:
            if seed in entry.seeds:
                return entry
        raise KeyError(f"Seed {seed!r} is not in the table. Allowed: its seeds {list(self.seeds)}.")

    @property
    def n_presets(self) -> int:
        return len(self.preset_names)

    def episode_length(self, value: Any, name: str = "max_stages") -> int:
        """``value`` as a number of stages, 1 to the table's depth (None: the depth).

        Raises:
            ConfigError: Anything else; ``loc`` is ``(name,)``.
        """
        stages = self.stages if value is None else value
        if not isinstance(stages, int) or isinstance(stages, bool) or not 1 <= stages <= self.stages:
            raise ConfigError(
                (name,),
                f"{name}={value!r} is not allowed. Allowed: an integer in [1, {self.stages}] (the table's depth).",
            )
        return stages

    def offset(self, depth: int) -> int:
        """Index of the first node of ``depth`` (the number of shallower nodes)."""
        return sum(self.n_presets**d for d in range(depth))

    def node_index(self, path: Sequence[int]) -> int:
        """Index of the node after ``path`` (preset indices, each in ``[0, K)``)."""
        local = 0
        for a in path:
            local = local * self.n_presets + int(a)
        return self.offset(len(path)) + local


def read_table(path: str | os.PathLike[str]) -> Table:
    """Read a complete table into memory, checking the header and every row first.

    Nothing is allocated for the tree before the header's claims (seeds, presets,
    stages, panel, losses) agree with the number of rows the file holds.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        TableFormatError: Not a table, another format version, an unfinished build
            (the message says how many units are missing and how to finish it), or a
            damaged file: an unreadable page, a header field or a row out of the
            schema, rows missing or repeated (the message names the file and the
            field or row).
    """
    source = repr(str(path))
    db = connect_readonly(path)
    try:
        with sqlite_errors(source):
            header, model = _read_header(db, source)
            _check_units(db, model, source)
            n = _check_counts(db, model, source)
            rows = {
                schema.table: check_rows(db.execute(schema.select).fetchall(), schema, source)
                for schema in (NODE_ROW, METRIC_ROW, LOSS_ROW)
            }
    finally:
        db.close()
    arrays = _Arrays(model, n, source)
    arrays.fill_nodes(rows["nodes"])
    arrays.fill_metrics(rows["metrics"])
    arrays.fill_losses(rows["losses"])
    return arrays.table(header)


def _check_units(db: sqlite3.Connection, model: TableHeader, source: str) -> None:
    expected = {(s, f) for s in model.seeds for f in range(len(model.presets))}
    missing = expected - done_units(db, source)
    if missing:
        raise TableFormatError(
            f"Table {source} is unfinished: {len(missing)} of {len(expected)} units "
            f"(seed, first preset) are missing, e.g. {sorted(missing)[:3]}. Finish it "
            "with `lossagent tabulate --resume` and the same suite."
        )


def tree_size(k: int, stages: int, limit: int) -> int | None:
    """Nodes of one tree, ``1 + k + ... + k**stages``, or None once it passes ``limit``
    (so a header that claims a huge tree costs nothing to check)."""
    total, level = 0, 1
    for _ in range(stages + 1):
        total += level
        if total > limit:
            return None
        level *= k
    return total


def _check_counts(db: sqlite3.Connection, model: TableHeader, source: str) -> int:
    """Rows of each SQL table against what the header claims, before anything is
    allocated; the nodes per tree. (That each node has each value exactly once is
    checked while the arrays are filled.)

    Raises:
        TableFormatError: The header claims more (or fewer) nodes than the file holds,
            or more metric or loss values than it holds.
    """
    seeds, k, stages = len(model.seeds), len(model.presets), model.stages
    count = int(db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0])
    n = tree_size(k, stages, count)
    if n is None or seeds * n != count:
        claimed = f"more than {count}" if n is None else str(seeds * n)
        raise TableFormatError(
            f"Table {source}: its header claims {seeds} seeds x (1 + {k} + ... + {k}^{stages}) = "
            f"{claimed} nodes (fields 'seeds', 'presets', 'stages'); the file holds {count} "
            f"rows of nodes. {_DAMAGED}"
        )
    for table, per_node in (("metrics", len(SPLITS) * len(model.metrics)), ("losses", len(model.losses))):
        held = int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        if held < count * per_node:
            raise TableFormatError(
                f"Table {source} holds {held} rows of {table}; its {count} nodes need "
                f"{count * per_node} (header field {table!r}). {_DAMAGED}"
            )
    return n


_DAMAGED = "The file is damaged; rebuild it with `lossagent tabulate`."


class _Arrays:
    """The arrays of a :class:`Table`, filled from checked rows.

    Every row must name a seed of the header and a node of its tree (checked here),
    and every value of every node must be given exactly once. Rows of metrics outside
    the panel or losses outside the header are ignored.
    """

    def __init__(self, model: TableHeader, n: int, source: str):
        self.model, self.source = model, source
        shape = (len(model.seeds), n)
        paths = _all_paths(len(model.presets), model.stages)
        self.node_of = {encode_path(p): i for i, p in enumerate(paths)}
        self.seed_of = {s: i for i, s in enumerate(model.seeds)}
        p, n_losses = len(model.metrics), len(model.losses)
        self.values = {split: np.full((*shape, p), np.nan) for split in SPLITS}
        self.invalid = {split: np.zeros((*shape, p), bool) for split in SPLITS}
        self.losses = np.full((*shape, n_losses), np.nan)
        self.diverged = np.zeros(shape, bool)
        self.train_seconds, self.eval_seconds = np.zeros(shape), np.zeros(shape)

    def _at(
        self, table: str, rows: list[tuple[Any, ...]], width: int, names: Sequence[str] | None = None, column: int = 0
    ) -> tuple[list[list[Any]], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The columns of ``rows``, which rows are kept (those whose ``column`` is one of
        ``names``; all without ``names``), and the seed, node and name indices of those."""
        columns = _columns(rows, width)
        entry = np.zeros(len(rows), np.int64)
        if names is not None:
            entry = _lookup({name: i for i, name in enumerate(names)}, columns[column])
        keep = entry >= 0
        seed_index = _lookup(self.seed_of, columns[0])
        node_index = _lookup(self.node_of, columns[1])
        bad_rows = np.flatnonzero(((seed_index < 0) | (node_index < 0)) & keep)
        if bad_rows.size:
            row = rows[int(bad_rows[0])]
            raise TableFormatError(
                f"Table {self.source}: {table} row {row!r} names seed {row[0]!r} and path "
                f"{row[1]!r}; the header's seeds are {list(self.model.seeds)} and paths are "
                f"preset indices in [0, {len(self.model.presets)}) joined by '.', at most "
                f"{self.model.stages} of them."
            )
        return columns, keep, seed_index[keep], node_index[keep], entry[keep]

    def _once(self, table: str, what: str, at: tuple[np.ndarray, ...], shape: tuple[int, ...]) -> None:
        """Every cell of ``shape`` given exactly once."""
        hits = np.bincount(np.ravel_multi_index(at, shape), minlength=int(np.prod(shape)))
        if (hits != 1).any():
            raise TableFormatError(
                f"Table {self.source}: {table} lacks {int((hits == 0).sum())} {what} and "
                f"repeats {int((hits > 1).sum())}. {_DAMAGED}"
            )

    def fill_nodes(self, rows: list[tuple[Any, ...]]) -> None:
        columns, _, s, n, _ = self._at("nodes", rows, 6)
        depths = np.fromiter(map(_depth, columns[1]), np.int64, len(rows))
        wrong = np.flatnonzero(depths != np.array(columns[2], np.int64))
        if wrong.size:
            row = rows[int(wrong[0])]
            raise TableFormatError(
                f"Table {self.source}: nodes row {row!r}: column 'depth' is {row[2]!r}; "
                f"path {row[1]!r} has {_depth(row[1])} presets."
            )
        self._once("nodes", "nodes", (s, n), self.diverged.shape)
        self.diverged[s, n] = np.array(columns[3], bool)
        self.train_seconds[s, n] = np.array(columns[4], np.float64)
        self.eval_seconds[s, n] = np.array(columns[5], np.float64)

    def fill_metrics(self, rows: list[tuple[Any, ...]]) -> None:
        columns, keep, s, n, m = self._at("metrics", rows, 6, self.model.metrics, 3)
        split = _lookup({name: i for i, name in enumerate(SPLITS)}, columns[2])[keep]
        values = np.array(columns[4], np.float64)[keep]  # None (SQL NULL) -> NaN
        flags = np.array(columns[5], bool)[keep]
        shape = (len(SPLITS), *self.values[SPLITS[0]].shape)
        self._once("metrics", "panel metric values", (split, s, n, m), shape)
        for i, name in enumerate(SPLITS):
            here = split == i
            at = (s[here], n[here], m[here])
            self.values[name][at] = values[here]
            self.invalid[name][at] = flags[here]

    def fill_losses(self, rows: list[tuple[Any, ...]]) -> None:
        columns, keep, s, n, m = self._at("losses", rows, 4, self.model.loss_names, 2)
        self._once("losses", "loss values", (s, n, m), self.losses.shape)
        self.losses[s, n, m] = np.array(columns[3], np.float64)[keep]

    def table(self, header: dict[str, Any]) -> Table:
        model = self.model
        weights = np.array([p.weights for p in model.presets], np.float32).reshape(len(model.presets), -1)
        arrays = [weights, *self.values.values(), *self.invalid.values(), self.losses,
                  self.diverged, self.train_seconds, self.eval_seconds]
        for array in arrays:
            array.flags.writeable = False
        return Table(
            header=header,
            preset_names=model.preset_names,
            preset_weights=weights,
            loss_names=model.loss_names,
            loss_scales=np.array([e.scale for e in model.losses], np.float64),
            loss_ranges=np.array([e.value_range for e in model.losses], np.float64),
            metrics=tuple(model.metrics),
            seeds=tuple(model.seeds),
            stages=model.stages,
            values=self.values,
            invalid=self.invalid,
            losses=self.losses,
            diverged=self.diverged,
            train_seconds=self.train_seconds,
            eval_seconds=self.eval_seconds,
            instances=_instances(model),
        )


def _instances(model: TableHeader) -> tuple[Instance, ...]:
    """The header's instances; a table of one configuration (format 1) is one instance,
    ``"default"``, without a split, whose replicates are all the seeds."""
    if model.instances is None:
        return (
            Instance("default", None, model.env_id, dict(model.env_kwargs), tuple(model.seeds), model.env_config.task),
        )
    return tuple(
        Instance(e.name, e.split, e.env_id, dict(e.env_kwargs), tuple(e.seeds), e.env_config.task)
        for e in model.instances
    )


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(map(operator.itemgetter(i), rows)) for i in range(width)]


def _lookup(index: dict[Any, int], keys: Sequence[Any]) -> np.ndarray:
    """``index[key]`` for each key, -1 where it has none."""
    return np.fromiter(map(index.get, keys, itertools.repeat(-1)), np.int64, len(keys))


def _depth(path: str) -> int:
    return path.count(".") + 1 if path else 0


def _all_paths(k: int, stages: int) -> list[tuple[int, ...]]:
    """Every path, breadth-first, children in preset order (the node index order)."""
    return [p for depth in range(stages + 1) for p in itertools.product(range(k), repeat=depth)]
