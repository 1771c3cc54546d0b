"""Building tables for ``LossAgent/Tabular-v0``: a suite's ``[table]`` -> one SQLite file.

The section is read by :mod:`benchmarks.suites.table`; how a build runs, resumes and is
refused is in docs/tables.md ("Building a table"). Here (:func:`tabulate`): the parent
process makes the env once (which checks the configuration and gives the header),
checks the size (:mod:`benchmarks.suites.size`) and the output path
(:class:`benchmarks.execution.output.Output`: a file name in an existing folder, and
none of :data:`SIDE_FILES` beside it unless it resumes), starts the backend, and only
then takes the lock ``<out>.lock`` and creates the file. It hands the units, the
subtrees of each ``(seed, first preset)`` (:func:`lossagent_env.tabular.build.compute_unit`),
to the executor (:mod:`benchmarks.execution.executor`), and alone writes the file, one
transaction per unit, so a kill loses at most the units in flight. Every unit runs
``threads`` torch threads whatever the number of workers, so a resumed or parallel build
equals an uninterrupted one in every column but the wall-clock seconds. A build in which
no unit could be stored removes the file it created.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.errors import BenchmarkError, RunsFailedError
from benchmarks.execution.executor import RAY_CONNECT_TIMEOUT_S, Context, Executor
from benchmarks.execution.output import Output, check_same
from benchmarks.suites.size import MAX_NODES, count_nodes, size_refusal
from benchmarks.suites.table import load_table_spec, table_spec_from_text
from lossagent_env.config import EnvConfig
from lossagent_env.tabular.build import (
    HEADER_NOT_COMPARED,
    TableSpec,
    cached_build_env,
    compute_unit,
    table_header,
    unit_size,
    units,
)
from lossagent_env.tabular.format import (
    NodeRecord,
    connect_readonly,
    create_table,
    done_units,
    read_header,
    write_unit,
)

__all__ = [
    "MAX_NODES",
    "TabulateError",
    "TabulateResult",
    "UnitFailure",
    "UnitsFailedError",
    "load_table_spec",
    "table_nodes",
    "table_spec_from_text",
    "tabulate",
]

logger = logging.getLogger(__name__)

SIDE_FILES = ("-journal", "-wal", "-shm")
"""Suffixes of SQLite's journals beside a table ``<out>``. A new build refuses to start
where one of them exists (SQLite would take it for the new table's journal)."""


class TabulateError(BenchmarkError):
    """A table build that cannot start or continue."""


class UnitsFailedError(TabulateError, RunsFailedError):
    """Some units raised; every other unit is stored (finish with ``resume``).

    Attributes:
        failures: One :class:`UnitFailure` per failed unit.
    """

    def __init__(self, message: str, failures: list[UnitFailure]):
        super().__init__(message, failures)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the build


@dataclass(frozen=True)
class UnitFailure:
    """A unit that raised: its ``(seed, first preset)`` and the error."""

    seed: int
    first: int
    error: str


@dataclass
class TabulateResult:
    """What :func:`tabulate` did.

    Attributes:
        out: The table file.
        units: Units of the table.
        skipped: Units already stored before this call (``resume``).
        computed: Units computed and stored by this call.
        nodes: Nodes computed by this call.
        wall_s: Wall time of this call.
        failures: Units that raised.
    """

    out: Path
    units: int
    skipped: int = 0
    computed: int = 0
    nodes: int = 0
    wall_s: float = 0.0
    failures: list[UnitFailure] = field(default_factory=list)


def tabulate(
    spec: TableSpec | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    backend: str = "local",
    resume: bool = False,
    progress: bool = True,
    ray_address: str | None = None,
    ray_timeout: float = RAY_CONNECT_TIMEOUT_S,
    max_nodes: int | None = MAX_NODES,
) -> TabulateResult:
    """Build (or finish) the table of ``spec`` in the file ``out``.

    Args:
        spec: A :class:`TableSpec`, or a suite name or file with a ``[table]`` section.
        out: The table file; must not exist unless ``resume``. Its folder must exist.
        workers: Units computed at once (processes for ``local``; for ``ray``, the size
            of the local cluster started when none is running and no address given).
        backend: ``"local"`` or ``"ray"``.
        resume: Finish the table in ``out``: its header must match ``spec``.
        progress: Show a progress bar (nodes done, nodes/s, time left) on stderr.
        ray_address: Address of a Ray cluster (``backend="ray"`` only); None starts a
            local one.
        ray_timeout: Seconds to wait for the Ray cluster at ``ray_address``.
        max_nodes: Most nodes the table may have (:data:`MAX_NODES`); None for no limit.

    Returns:
        A :class:`TabulateResult`.

    Raises:
        ValueError: ``workers``, ``backend``, ``ray_address`` or ``max_nodes`` is not
            allowed.
        SuiteError: ``spec`` names a suite that :func:`~benchmarks.suites.table.load_table_spec` refuses.
        TabulateError: The table has more than ``max_nodes`` nodes; ``out`` cannot be
            written or (with ``resume``) finished (the module docstring; the message says
            why); or some units failed (after every other unit is stored).
        BenchmarkError: The Ray cluster does not answer, or the lock is refused.
    """
    if max_nodes is not None and (not isinstance(max_nodes, int) or isinstance(max_nodes, bool) or max_nodes < 1):
        raise ValueError(f"max_nodes={max_nodes!r} is not allowed. Allowed: an integer >= 1, or None")
    if not isinstance(spec, TableSpec):
        spec = load_table_spec(spec, max_nodes=max_nodes, workers=workers)  # its size counted first
        max_nodes = None
    executor = Executor(
        backend, workers=workers, threads=spec.threads, device=str(spec.env_kwargs.get("device", "cpu")),
        ray_address=ray_address, ray_timeout=ray_timeout,
    )
    t0 = time.perf_counter()
    _check_size(spec, workers, max_nodes)
    output = Output(out, command="lossagent tabulate", kind="file", resume=resume, error=TabulateError,
                    noun="table file")
    _check_out(output)
    header = table_header(spec, cached_build_env(spec))
    with executor, output.claim(
        create=lambda path: create_table(path, header),
        check_resumable=lambda path: _check_resumable(path, header),
    ):
        result = _build(spec, executor, output, progress=progress)
    result.wall_s = time.perf_counter() - t0
    return result


def table_nodes(spec: TableSpec) -> int:
    """Nodes of a table: ``len(seeds) * (1 + K + K**2 + ... + K**T)``."""
    return count_nodes(len(spec.seeds), spec.n_presets, spec.stages)


def _check_size(spec: TableSpec, workers: int, max_nodes: int | None) -> None:
    """Refuse a table of more than ``max_nodes`` nodes, with its count and an estimated time."""
    if max_nodes is None:
        return
    refusal = size_refusal(
        trees=len(spec.seeds), trees_text=f"{len(spec.seeds)} seed(s)", presets=spec.n_presets,
        stages=spec.stages, stage_iters=spec.env_kwargs.get("stage_iters", EnvConfig.stage_iters),
        workers=workers, max_nodes=max_nodes,
    )
    if refusal is not None:
        raise TabulateError(refusal)


def _check_out(output: Output) -> None:
    """Refuse an ``out`` a build cannot use, with a message that says what will work."""
    out = output.path
    if not output.resume and out.is_file():
        _, problem = _table_header(out)
        if problem:
            raise TabulateError(
                f"{str(out)!r} already exists and is not a table ({problem}); a build never "
                "overwrites a file. Move it away, or choose another --out."
            )
    output.check()
    if output.resume:
        return
    for suffix in SIDE_FILES:
        side = Path(f"{out}{suffix}")
        if side.exists() or side.is_symlink():
            raise TabulateError(
                f"{str(side)!r} exists; a new table {str(out)!r} would use that name for its "
                "own file. Move it away, or choose another --out."
            )


def _table_header(path: Path) -> tuple[dict[str, Any], str | None]:
    """The header of the table ``path``, and why it is not a table that ``resume`` can
    finish (None if it is one; then the header is ``{}``)."""
    if not path.is_file():
        return {}, "not a regular file"
    try:
        db = connect_readonly(path)
    except (OSError, sqlite3.Error) as e:
        return {}, str(e)
    try:
        return read_header(db, source=repr(str(path))), None
    except (ValueError, sqlite3.Error) as e:  # TableFormatError, or a damaged header
        return {}, str(e)
    finally:
        db.close()


def _check_resumable(out: Path, header: dict[str, Any]) -> None:
    stored, problem = _table_header(out)
    if problem:
        raise TabulateError(
            f"Cannot resume {str(out)!r}: it is not a table that a build can finish ({problem}). "
            "Build a new table with another --out (without --resume)."
        )
    check_same(out, stored, header, what="table header", ignore=HEADER_NOT_COMPARED, error=TabulateError)


def _build(spec: TableSpec, executor: Executor, output: Output, *, progress: bool) -> TabulateResult:
    """Compute the units not yet stored in ``output``; this process alone writes the file."""
    out = output.path
    db = sqlite3.connect(out)
    try:
        all_units = units(spec)
        done = done_units(db)
        pending = [u for u in all_units if u not in done]
        result = TabulateResult(out=out, units=len(all_units), skipped=len(all_units) - len(pending))
        logger.info(
            "Table %s: %d units of %d nodes, %d already stored, %d to compute.",
            out, len(all_units), unit_size(spec), result.skipped, len(pending),
        )
        from tqdm import tqdm

        bar = tqdm(
            total=len(pending) * unit_size(spec), unit="node", desc="tabulate",
            disable=not progress, dynamic_ncols=True,
        )

        def store(unit: tuple[int, int], records: list[NodeRecord]) -> None:
            seed, first = unit
            try:
                write_unit(db, seed, first, records)
            except sqlite3.IntegrityError as e:
                raise TabulateError(
                    f"Cannot store unit (seed {seed}, first preset {first}) in {str(out)!r}: some "
                    f"of its nodes are stored already ({e}), so another process writes this table "
                    "too (through another path to the same file, e.g. a hard link). Let one build "
                    "end (or stop both), then finish with --resume."
                ) from None
            output.keep()
            result.computed += 1
            result.nodes += len(records)

        t0 = time.perf_counter()
        try:
            failed = executor.map(
                functools.partial(_unit_task, spec),
                [(unit, unit) for unit in pending],
                on_message=lambda _unit, nodes: bar.update(nodes),
                on_result=store,
            )
        finally:
            bar.close()
            if result.computed:
                _add_build_seconds(db, time.perf_counter() - t0)
    finally:
        db.close()
    for f in failed:
        logger.error("Unit (seed %d, first preset %d) failed: %s", *f.key, f.error)
    result.failures = [UnitFailure(f.key[0], f.key[1], f.error) for f in failed]
    if result.failures:
        lines = "\n".join(f"  seed {f.seed}, first preset {f.first}: {f.error}" for f in result.failures)
        kept = "the others are stored; fix the cause and rerun with --resume" if output.kept else (
            "nothing was stored, and the new table file is removed; fix the cause and rerun"
        )
        raise UnitsFailedError(
            f"{len(result.failures)} of {len(pending)} units failed ({kept}):\n{lines}",
            result.failures,
        )
    return result


def _add_build_seconds(db: sqlite3.Connection, seconds: float) -> None:
    """Add this call's wall time to the header's ``build.seconds`` (the measured build
    time, summed over the calls of a resumed build)."""
    (text,) = db.execute("SELECT value FROM header WHERE key = 'build'").fetchone() or ("{}",)
    build = json.loads(text) or {}
    build["seconds"] = round(float(build.get("seconds", 0.0)) + seconds, 1)
    with db:
        db.execute("INSERT OR REPLACE INTO header VALUES ('build', ?)", (json.dumps(build),))


def _unit_task(spec: TableSpec, unit: tuple[int, int], context: Context) -> list[NodeRecord]:
    """The executor's task for one unit: its nodes; one message per node (the progress bar)."""
    if context.device is not None:  # a GPU of this worker's own
        spec = dataclasses.replace(spec, env_kwargs={**spec.env_kwargs, "device": context.device})
    seed, first = unit
    return compute_unit(spec, seed, first, on_node=lambda _: context.send(1))
