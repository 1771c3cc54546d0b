"""The table file: one SQLite database, readable with the ``sqlite3`` shell or pandas.

A table holds every stage outcome of one env configuration: for each seed, the tree of
all preset sequences up to ``stages`` (T) steps, K presets per step. A *node* is
``(seed, path)``, where ``path`` is the sequence of preset indices played from the
state after ``reset(seed=seed)`` (the root: the empty path, depth 0). A table of K
presets and T stages has ``1 + K + K^2 + ... + K^T`` nodes per seed.

Path encoding: the preset indices joined by ``"."``, as text: ``""`` is the root,
``"2"`` the node after preset 2, ``"2.0.1"`` after presets 2, 0, 1. Preset ``i`` is
entry ``i`` of the header's ``presets`` list.

Schema (format version 1)::

    header(key TEXT PRIMARY KEY, value TEXT)        -- one JSON value per key
    nodes(seed INTEGER, path TEXT, depth INTEGER,   -- depth = number of presets in path
          diverged INTEGER,                         -- 1: the last stage diverged
          train_seconds REAL, eval_seconds REAL)    -- wall-clock seconds of the last stage
    metrics(seed INTEGER, path TEXT, split TEXT,    -- split: 'val' or 'test'
            metric TEXT, value REAL,                -- raw panel metric value
            invalid INTEGER)                        -- 1: NaN for some crop, counted at
                                                    --    the metric's worst bound
    losses(seed INTEGER, path TEXT, loss TEXT, value REAL)   -- unweighted, on 'val'
    units(seed INTEGER, first INTEGER, nodes INTEGER)        -- finished build units

Primary keys: ``nodes(seed, path)``, ``metrics(seed, path, split, metric)``,
``losses(seed, path, loss)``, ``units(seed, first)``.

Units and values:

* ``value`` columns are SQLite ``REAL`` (8-byte IEEE floats), so a Python float
  survives the round trip exactly; SQLite stores NaN as ``NULL``, so ``NULL`` means
  NaN (a metric that could not be measured).
* metrics are in their own direction (``metric_lower_better`` in the header), means
  over the evaluation crops, as the live env reports them in ``info["metrics"]``.
* ``split = 'val'`` is the evaluation set the live env reports on (what agents see);
  ``'test'`` is as many crops of the same size, from the same images, that overlap no
  ``'val'`` crop (:func:`lossagent_env.data.make_test_set`), measured on the same
  network right after the stage.
* a node whose last stage diverged (``diverged = 1``) holds what the live env reports
  then: the network went back to the start of the stage, so its ``'val'`` metrics and
  losses are those of the last stage that did not diverge, and its ``'test'`` metrics
  are measured on that same network.
* ``train_seconds`` and ``eval_seconds`` are the wall-clock times of the original
  stage (``env.unwrapped.timings``; the root has ``train_seconds = 0`` and the time of
  the initial evaluation). They are the only values that differ between two builds
  of the same table; the root row is written by the first unit of its seed to finish.
* ``units`` marks the finished units of work: the whole subtree below one
  ``(seed, first preset)`` pair, written in one transaction with its nodes (a build
  killed at any moment loses at most the units in flight); ``nodes`` counts the
  nodes the unit computed, its root included.

Header keys (JSON values):

=====================  ===============================================================
``format``             ``"lossagent-table"``
``format_version``     ``1``
``env_id``             Gymnasium id of the live env, e.g. ``"LossAgent/SuperResolution-v0"``
``env_kwargs``         keyword arguments of ``gym.make`` (without ``objective`` and
                       ``max_stages``, which the table's user chooses)
``env_config``         the full ``EnvConfig`` of the build, defaults filled in
``losses``             ``[{"name", "scale", "value_range": [low, high]}]`` in action order
``presets``            ``[{"name", "weights": [one per loss, action units]}]`` in order
``metrics``            the panel: metric names, in order
``metric_lower_better``  ``{metric: bool}``
``seeds``              the seeds, in order
``stages``             T, the depth of every tree
``splits``             how the ``'val'`` and ``'test'`` crops were made
``torch_threads``      torch threads every unit ran with (results depend on it)
``versions``           ``python``, ``torch``, ``numpy``, ``pyiqa``, ``gymnasium``,
                       ``lossagent_env``
``build``              ``{"command", "description"}``: how the table was built
=====================  ===============================================================

Example, without this project::

    import json, sqlite3, pandas as pd
    db = sqlite3.connect("table.sqlite")
    header = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM header")}
    psnr = pd.read_sql("SELECT seed, path, value FROM metrics "
                       "WHERE split = 'val' AND metric = 'psnr'", db)
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SPLITS",
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

FORMAT = "lossagent-table"
FORMAT_VERSION = 1
SPLITS = ("val", "test")

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


class TableFormatError(ValueError):
    """A file that is not a (complete, supported) table."""


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

    Raises:
        FileExistsError: ``path`` exists.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{str(path)!r} already exists.")
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        with db:
            db.executescript(_SCHEMA)
            header = {"format": FORMAT, "format_version": FORMAT_VERSION, **header}
            db.executemany(
                "INSERT INTO header VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in header.items()],
            )
    finally:
        db.close()
    os.replace(tmp, path)


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


def done_units(db: sqlite3.Connection) -> set[tuple[int, int]]:
    """The ``(seed, first preset)`` units already stored."""
    return {(int(s), int(f)) for s, f in db.execute("SELECT seed, first FROM units")}


# --------------------------------------------------------------------------- reading


def read_header(db: sqlite3.Connection, source: str = "<table>") -> dict[str, Any]:
    """The header as a dict.

    Raises:
        TableFormatError: Not a table, or a format version this code does not read.
    """
    try:
        rows = db.execute("SELECT key, value FROM header").fetchall()
    except sqlite3.DatabaseError as e:
        raise TableFormatError(f"{source} is not a LossAgent table ({e}).") from e
    header = {key: json.loads(value) for key, value in rows}
    if header.get("format") != FORMAT:
        raise TableFormatError(f"{source} is not a LossAgent table (its header has no format {FORMAT!r}).")
    if header.get("format_version") != FORMAT_VERSION:
        raise TableFormatError(
            f"{source} has table format version {header.get('format_version')!r}; this code "
            f"reads version {FORMAT_VERSION}."
        )
    return header


def connect_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open a table for reading only.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Table file {str(path)!r} does not exist.")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


@dataclass(frozen=True)
class Table:
    """A whole table in memory, as arrays indexed by ``[seed index, node index]``.

    Node index: breadth-first over the tree, children in preset order. The nodes of
    depth ``d`` occupy ``offset(d) .. offset(d) + K**d - 1``; the node after presets
    ``(a_1, ..., a_d)`` is ``offset(d) + sum_j a_j * K**(d - j)`` (its digits in base K).

    Attributes:
        header: The header (see the module docstring).
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

    @property
    def n_presets(self) -> int:
        return len(self.preset_names)

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
    """Read a complete table into memory.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TableFormatError: Not a table, another format version, or an unfinished build
            (the message says how many units are missing and how to finish it).
    """
    db = connect_readonly(path)
    try:
        header = read_header(db, source=repr(str(path)))
        names = tuple(p["name"] for p in header["presets"])
        k, stages, seeds = len(names), int(header["stages"]), tuple(header["seeds"])
        expected = {(s, f) for s in seeds for f in range(k)}
        missing = expected - done_units(db)
        if missing:
            raise TableFormatError(
                f"Table {str(path)!r} is unfinished: {len(missing)} of {len(expected)} units "
                f"(seed, first preset) are missing, e.g. {sorted(missing)[:3]}. Finish it "
                "with `lossagent tabulate --resume` and the same suite."
            )
        loss_names = tuple(entry["name"] for entry in header["losses"])
        metrics = tuple(header["metrics"])
        n = sum(k**d for d in range(stages + 1))
        paths = _all_paths(k, stages)
        node_of = {encode_path(p): i for i, p in enumerate(paths)}
        seed_of = {s: i for i, s in enumerate(seeds)}
        metric_of = {m: i for i, m in enumerate(metrics)}
        loss_of = {m: i for i, m in enumerate(loss_names)}

        shape = (len(seeds), n)
        values = {split: np.full((*shape, len(metrics)), np.nan) for split in SPLITS}
        invalid = {split: np.zeros((*shape, len(metrics)), bool) for split in SPLITS}
        losses = np.full((*shape, len(loss_names)), np.nan)
        diverged = np.zeros(shape, bool)
        train_seconds, eval_seconds = np.zeros(shape), np.zeros(shape)
        seen = np.zeros(shape, bool)
        for seed, p, div, train_s, eval_s in db.execute(
            "SELECT seed, path, diverged, train_seconds, eval_seconds FROM nodes"
        ):
            at = (seed_of[seed], node_of[p])
            seen[at] = True
            diverged[at], train_seconds[at], eval_seconds[at] = bool(div), train_s, eval_s
        if not seen.all():
            raise TableFormatError(f"Table {str(path)!r} lacks {int((~seen).sum())} nodes.")
        for seed, p, split, metric, value, flagged in db.execute(
            "SELECT seed, path, split, metric, value, invalid FROM metrics"
        ):
            if metric in metric_of:
                at = (seed_of[seed], node_of[p], metric_of[metric])
                invalid[split][at] = bool(flagged)
                if value is not None:
                    values[split][at] = value
        for seed, p, loss, value in db.execute("SELECT * FROM losses"):
            if value is not None and loss in loss_of:
                losses[seed_of[seed], node_of[p], loss_of[loss]] = value
    finally:
        db.close()
    weights = np.array([p["weights"] for p in header["presets"]], np.float32).reshape(k, -1)
    weights.flags.writeable = False
    arrays = [*values.values(), *invalid.values(), losses, diverged, train_seconds, eval_seconds]
    for array in arrays:
        array.flags.writeable = False
    return Table(
        header=header,
        preset_names=names,
        preset_weights=weights,
        loss_names=loss_names,
        loss_scales=np.array([e["scale"] for e in header["losses"]], np.float64),
        loss_ranges=np.array([e["value_range"] for e in header["losses"]], np.float64),
        metrics=metrics,
        seeds=seeds,
        stages=stages,
        values=values,
        invalid=invalid,
        losses=losses,
        diverged=diverged,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
    )


def _all_paths(k: int, stages: int) -> list[tuple[int, ...]]:
    """Every path, breadth-first, children in preset order (the node index order)."""
    paths: list[tuple[int, ...]] = [()]
    level: list[tuple[int, ...]] = [()]
    for _ in range(stages):
        level = [p + (a,) for p in level for a in range(k)]
        paths.extend(level)
    return paths

