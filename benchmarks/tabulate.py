"""Building tables for ``LossAgent/Tabular-v0``: a suite's ``[table]`` -> one SQLite file.

Suite file section (every key is documented in :class:`TableModel`)::

    [table]
    description = "What the table is for."
    stages = 4
    seeds = [0, 1, 2]
    metrics = ["psnr", "ssim", "piqe"]      # the panel, measured at every node
    threads = 1                             # torch threads per unit (default 1)

    [table.env]
    id = "LossAgent/SuperResolution-v0"
    kwargs = { scale = 2, losses = ["l1", "ssim", "gradient"], stage_iters = 40 }

    [table.presets]                         # in action order
    pixel = { l1 = 1.0 }
    structure = { l1 = 1.0, ssim = 1.0 }
    edges = [1.0, 0.0, 0.5]                 # or one weight per loss, in loss order

Other sections of the file (a bench suite's agents, objectives) are not read here.

How a build runs (:func:`tabulate`): the parent process makes the env once (which
checks the configuration and gives the header), creates the file, then hands out the
units of work, the subtrees of each ``(seed, first preset)``
(:func:`lossagent_env.tabular.build.compute_unit`), to ``workers`` spawned processes
(``backend="local"``) or to Ray tasks (``backend="ray"``, each reserving ``threads``
Ray CPUs). Finished units come back to the parent, which alone writes the file, one
transaction per unit; a kill at any moment loses at most the units in flight.
``resume=True`` skips the units already stored. Every unit runs ``threads`` torch
threads whatever the number of workers, so a resumed or parallel build equals an
uninterrupted one in every column but the wall-clock seconds.

Before it creates anything, a build checks its size (at most ``max_nodes`` nodes,
default :data:`MAX_NODES`; the refusal gives the count and an estimated time), the
output path (a file name in an existing folder; no file of the names SQLite uses beside
it, ``<out>-journal``, ``-wal`` and ``-shm``, unless it resumes; the new file is first
written under a temporary name of its own, so no other file of the user's is touched)
and starts the backend (a Ray address that does not answer within ``ray_timeout``
seconds is an error). Only then does it take the lock ``<out>.lock`` (see
:class:`benchmarks.results.OutputLock`) and create the file.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import math
import multiprocessing as mp
import os
import queue as queue_module
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import lossagent_env
from benchmarks.backends import (
    RAY_CONNECT_TIMEOUT_S,
    check_backend,
    die_with_parent,
    import_ray,
    start_ray,
)
from benchmarks.errors import BenchmarkError, RunsFailedError
from benchmarks.results import OutputLock
from benchmarks.suite import (
    EnvEntry,
    SuiteError,
    check_seeds,
    read_suite_file,
    _dotted,
    _file_loc,
    _line_of_decode_error,
    _locate,
)
from lossagent_env.config import EnvConfig
from lossagent_env.losses import offline_losses
from lossagent_env.metrics import metric_info, metric_names
from lossagent_env.registry import unknown_name_message
from lossagent_env.tabular.build import (
    RESERVED_ENV_KWARGS,
    TableSpec,
    cached_build_env,
    compute_unit,
    header_differences,
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
from lossagent_env.wrappers import resolve_presets

__all__ = [
    "MAX_NODES",
    "SECONDS_PER_NODE",
    "TableModel",
    "TabulateError",
    "TabulateResult",
    "UnitFailure",
    "UnitsFailedError",
    "load_table_spec",
    "table_nodes",
    "tabulate",
]

logger = logging.getLogger(__name__)

MAX_NODES = 100_000
"""Most nodes a build starts unless ``max_nodes`` (``--max-nodes``) allows more: about
11 hours with 2 workers at :data:`SECONDS_PER_NODE`."""

SECONDS_PER_NODE = 0.8
"""Measured cost of one node of the shipped table (the smoke env, 40 training iterations,
the panel on two splits of 3 x 128 px) per worker on 2 cores; time estimates scale it
by ``stage_iters / 40``."""

_REFERENCE_STAGE_ITERS = 40

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


# --------------------------------------------------------------------------- the spec


class TableModel(BaseModel):
    """The ``[table]`` section of a suite file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", description="What the table is for.")
    env: EnvEntry = Field(
        description="Env id and gym.make kwargs, as a bench suite's [env]; stage_iters "
        "goes here too. Not objective or max_stages: the table sets them."
    )
    stages: int = Field(ge=1, description="Depth T: stages of every preset sequence.")
    seeds: list[int] = Field(min_length=1, description="Episode seeds, one tree each.")
    presets: dict[str, dict[str, float] | list[float]] = Field(
        min_length=1,
        description="Ordered name -> {loss = weight} (others 0) or a full weight vector, "
        "weights in [0, 1]; action i plays the i-th preset.",
    )
    metrics: list[str] = Field(
        min_length=1, description="The panel: metrics measured at every node, on both splits."
    )
    threads: int = Field(default=1, ge=1, description="torch threads of every unit.")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        return check_seeds(seeds)

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, metrics: list[str]) -> list[str]:
        repeated = sorted(m for m, n in Counter(metrics).items() if n > 1)
        if repeated:
            raise ValueError(f"metrics must be unique; repeated: {repeated}")
        return metrics


def load_table_spec(name_or_path: str | os.PathLike[str]) -> TableSpec:
    """Load and check the ``[table]`` section of a suite file.

    Args:
        name_or_path: A shipped suite name, or the path of a ``.toml`` file.

    Returns:
        The table's :class:`~lossagent_env.tabular.build.TableSpec`.

    Raises:
        SuiteError: The file is not UTF-8, or the section is missing or malformed, or
            names an unknown env, EnvConfig field, metric or loss; the message names
            file, line and key.
        FileNotFoundError: No such file.
        KeyError: An unknown suite name (with a "Did you mean" hint).
    """
    path, text = read_suite_file(name_or_path)
    return table_spec_from_text(text, source=str(path))


def table_spec_from_text(text: str, source: str = "<string>") -> TableSpec:
    """Like :func:`load_table_spec`, for TOML given as a string."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(source, _line_of_decode_error(e), None, f"not valid TOML: {e}") from e

    def fail(loc: tuple, message: str) -> SuiteError:
        return SuiteError(source, _locate(text, loc), _dotted(loc), message)

    if not isinstance(data.get("table"), dict):
        raise fail(("table",), "no [table] section; a table needs one (see benchmarks.tabulate)")
    section = data["table"]
    try:
        model = TableModel.model_validate(section)
    except ValidationError as e:
        error = next((x for x in e.errors() if x["type"] == "extra_forbidden"), e.errors()[0])
        loc = ("table", *_file_loc(section, tuple(error["loc"]), keep_missing=True))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            parent = {("table",): TableModel, ("table", "env"): EnvEntry}.get(loc[:-1])
            message = unknown_name_message("key", loc[-1], list(parent.model_fields) if parent else [])
        elif error["type"] == "missing":
            message = "required key is missing"
        raise fail(loc, message) from None
    _check_names(model, fail)
    return TableSpec(
        env_id=model.env.id,
        env_kwargs=dict(model.env.kwargs),
        presets=dict(model.presets),
        metrics=tuple(model.metrics),
        seeds=tuple(model.seeds),
        stages=model.stages,
        threads=model.threads,
        description=model.description,
    )


def _check_names(model: TableModel, fail: Callable[[tuple, str], SuiteError]) -> None:
    """Env id, env kwargs, metric and loss names against the registries."""
    if model.env.id not in lossagent_env.ENV_IDS:
        raise fail(("table", "env", "id"), unknown_name_message("env id", model.env.id, lossagent_env.ENV_IDS))
    fields = {f.name for f in dataclasses.fields(EnvConfig)} - {"task", *RESERVED_ENV_KWARGS}
    for key in model.env.kwargs:
        if key in RESERVED_ENV_KWARGS:
            raise fail(("table", "env", "kwargs", key), "set by the table (metrics, stages), not in env kwargs")
        if key not in fields:
            raise fail(("table", "env", "kwargs", key), unknown_name_message("EnvConfig field", key, fields))
    known = metric_names()
    for i, metric in enumerate(model.metrics):
        if metric not in known:
            raise fail(("table", "metrics", i), unknown_name_message("metric", metric, known))
        if metric_info(metric).set_level:
            raise fail(("table", "metrics", i), f"metric {metric!r} compares sets of images and cannot score a node")
    losses = model.env.kwargs.get("losses") or offline_losses()
    loss_names = [spec.get("type") if isinstance(spec, dict) else spec for spec in losses]
    for name, weights in model.presets.items():
        try:
            resolve_presets({name: weights}, loss_names)
        except (KeyError, ValueError) as e:
            raise fail(("table", "presets", name), str(e.args[0])) from None


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
        TabulateError: The table has more than ``max_nodes`` nodes; ``out`` is a folder,
            or its folder does not exist; ``out`` exists without ``resume`` (or one of
            :data:`SIDE_FILES` beside it); with ``resume``, it does not exist, is not a
            table or its header differs from ``spec`` (the message says where); or
            some units failed (after every other unit is stored).
        BenchmarkError: The Ray cluster does not answer, or the lock is refused.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers={workers!r} is not allowed. Allowed: an integer >= 1")
    check_backend(backend, ray_address)
    if max_nodes is not None and (not isinstance(max_nodes, int) or isinstance(max_nodes, bool) or max_nodes < 1):
        raise ValueError(f"max_nodes={max_nodes!r} is not allowed. Allowed: an integer >= 1, or None")
    if not isinstance(spec, TableSpec):
        spec = load_table_spec(spec)
    out = Path(out)
    t0 = time.perf_counter()
    _check_size(spec, workers, max_nodes)
    _check_out(out, resume)
    header = table_header(spec, cached_build_env(spec))
    with _backend_up(backend, ray_address, workers * spec.threads, ray_timeout):
        lock = OutputLock.for_file(out, "lossagent tabulate").acquire()
        try:
            if resume:
                _check_resumable(out, header)
            else:
                create_table(out, header)
            return _build(spec, out, db_path=out, workers=workers, backend=backend,
                          progress=progress, t0=t0)
        finally:
            lock.release()


def table_nodes(spec: TableSpec) -> int:
    """Nodes of a table: ``len(seeds) * (1 + K + K**2 + ... + K**T)``."""
    k, t = spec.n_presets, spec.stages
    return len(spec.seeds) * (t + 1 if k == 1 else (k ** (t + 1) - 1) // (k - 1))


def _log10_nodes(spec: TableSpec) -> float:
    """``log10(table_nodes(spec))``, closely enough, without counting a huge table."""
    k, t = spec.n_presets, spec.stages
    per_seed = math.log10(t + 1) if k == 1 else (t + 1) * math.log10(k) - math.log10(k - 1)
    return math.log10(len(spec.seeds)) + per_seed


def _check_size(spec: TableSpec, workers: int, max_nodes: int | None) -> None:
    """Refuse a table of more than ``max_nodes`` nodes, with its count and an estimated time."""
    if max_nodes is None:
        return
    log10_nodes = _log10_nodes(spec)
    exact = log10_nodes < 1000  # counted exactly (a few thousand bits at most)
    nodes = table_nodes(spec) if exact else None
    if nodes is not None and nodes <= max_nodes:
        return
    iters = spec.env_kwargs.get("stage_iters", EnvConfig.stage_iters)
    if not isinstance(iters, (int, float)) or isinstance(iters, bool) or not 0 < iters < math.inf:
        iters = EnvConfig.stage_iters  # a bad value is refused when the env is made
    per_node = SECONDS_PER_NODE * iters / _REFERENCE_STAGE_ITERS
    log10_seconds = log10_nodes + math.log10(per_node / workers)
    count = f"{nodes:,} nodes ({nodes:.3g})" if nodes is not None and log10_nodes < 30 else (
        f"about 10^{log10_nodes:.0f} nodes"
    )
    raise TabulateError(
        f"The table has {count}: {len(spec.seeds)} seed(s) x (1 + K + ... + K^T) with K = "
        f"{spec.n_presets} presets and T = {spec.stages} stages; the limit is {max_nodes:,}. "
        f"Estimated build time: {_duration(log10_seconds)} with {workers} worker(s) (a rough "
        f"estimate: {per_node:.2g} s per node and worker, the shipped table's measured cost "
        f"scaled to stage_iters = {iters}). Reduce stages, presets or seeds, or pass "
        f"--max-nodes {nodes if nodes is not None and log10_nodes < 30 else 'N'} to build it anyway."
    )


def _duration(log10_seconds: float) -> str:
    """``log10(3725.0)`` -> ``"1.03 hours"``: a duration in the largest unit that fits."""
    year = 365.25 * 86400
    if log10_seconds - math.log10(year) >= 6:
        return f"about 10^{log10_seconds - math.log10(year):.0f} years"
    seconds = 10**log10_seconds
    for unit, size in (("years", year), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} seconds"


def _check_out(out: Path, resume: bool) -> None:
    """Refuse an ``out`` a build cannot use, with a message that says what will work."""
    folder = out.parent
    if out.is_dir():
        raise TabulateError(
            f"--out {str(out)!r} is a folder; --out is the table file to write, e.g. "
            f"{str(out / 'table.sqlite')!r}."
        )
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise TabulateError(
            f"Cannot write the table {str(out)!r}: its folder {str(folder)!r} {what}. Create the "
            "folder, or choose another --out."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TabulateError(
            f"Cannot write the table {str(out)!r}: the folder {str(folder)!r} is not writable. "
            "Choose an --out in a folder you can write."
        )
    if resume:
        if not out.exists():
            dangling = " (a symbolic link to a missing file)" if out.is_symlink() else ""
            raise TabulateError(
                f"Cannot resume: {str(out)!r} does not exist{dangling}. Start without --resume "
                "to build a new table."
            )
        return
    if out.is_symlink() and not out.exists():
        raise TabulateError(
            f"--out {str(out)!r} is a symbolic link to a missing file. Remove the link, or "
            "choose another --out."
        )
    if out.exists():
        problem = _not_a_table(out)
        if problem:
            raise TabulateError(
                f"{str(out)!r} already exists and is not a table ({problem}); a build never "
                "overwrites a file. Move it away, or choose another --out."
            )
        raise TabulateError(
            f"{str(out)!r} already exists. Pass --resume to finish the table in it, or "
            "choose another --out."
        )
    for suffix in SIDE_FILES:
        side = Path(f"{out}{suffix}")
        if side.exists() or side.is_symlink():
            raise TabulateError(
                f"{str(side)!r} exists; a new table {str(out)!r} would use that name for its "
                "own file. Move it away, or choose another --out."
            )


def _not_a_table(path: Path) -> str | None:
    """Why ``path`` is not a table that ``resume`` can finish, or None if it is one."""
    if not path.is_file():
        return "not a regular file"
    try:
        db = connect_readonly(path)
    except (OSError, sqlite3.Error) as e:
        return str(e)
    try:
        read_header(db, source=repr(str(path)))
    except (ValueError, sqlite3.Error) as e:  # TableFormatError, or a damaged header
        return str(e)
    finally:
        db.close()
    return None


@contextlib.contextmanager
def _backend_up(backend: str, ray_address: str | None, cpus: int, timeout: float) -> Iterator[None]:
    """Start (and at the end stop) what ``backend`` needs: nothing, or Ray."""
    if backend != "ray":
        yield
        return
    ray = import_ray()
    started_here = start_ray(ray_address, cpus, timeout=timeout)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def _build(
    spec: TableSpec, out: Path, *, db_path: Path, workers: int, backend: str, progress: bool,
    t0: float,
) -> TabulateResult:
    db = sqlite3.connect(db_path)
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

        def store(seed: int, first: int, records: list[NodeRecord]) -> None:
            try:
                write_unit(db, seed, first, records)
            except sqlite3.IntegrityError as e:
                raise TabulateError(
                    f"Cannot store unit (seed {seed}, first preset {first}) in {str(out)!r}: some "
                    f"of its nodes are stored already ({e}), so another process writes this table "
                    "too (through another path to the same file, e.g. a hard link). Let one build "
                    "end (or stop both), then finish with --resume."
                ) from None
            result.computed += 1
            result.nodes += len(records)

        def tick(count: int = 1) -> None:
            bar.update(count)

        try:
            if backend == "ray":
                failures = _run_ray(spec, pending, store, tick)
            elif workers == 1:
                failures = _run_inline(spec, pending, store, tick)
            else:
                failures = _run_pool(spec, pending, store, tick, workers)
        finally:
            bar.close()
    finally:
        db.close()
    result.failures = failures
    result.wall_s = time.perf_counter() - t0
    if failures:
        lines = "\n".join(f"  seed {f.seed}, first preset {f.first}: {f.error}" for f in failures)
        raise UnitsFailedError(
            f"{len(failures)} of {len(pending)} units failed (the others are stored; fix the "
            f"cause and rerun with --resume):\n{lines}",
            failures,
        )
    return result


def _check_resumable(out: Path, header: dict[str, Any]) -> None:
    problem = _not_a_table(out)
    if problem:
        raise TabulateError(
            f"Cannot resume {str(out)!r}: it is not a table that a build can finish ({problem}). "
            "Build a new table with another --out (without --resume)."
        )
    db = connect_readonly(out)
    try:
        stored = read_header(db, source=repr(str(out)))
    finally:
        db.close()
    changed = header_differences(stored, header)
    if changed:
        details = "; ".join(
            f"{key}: table has {stored.get(key)!r}, this build {header.get(key)!r}"
            for key in changed
        )
        raise TabulateError(
            f"Cannot resume {str(out)!r}: its header differs from this build in {changed} "
            f"({details}). Resume with the same suite and environment, or use a new --out."
        )


Store = Callable[[int, int, list[NodeRecord]], None]
Tick = Callable[..., None]


def _failure(seed: int, first: int, error: BaseException) -> UnitFailure:
    logger.error("Unit (seed %d, first preset %d) failed: %s: %s", seed, first, type(error).__name__, error)
    return UnitFailure(seed, first, f"{type(error).__name__}: {error}")


def _run_inline(spec: TableSpec, pending: list[tuple[int, int]], store: Store, tick: Tick) -> list[UnitFailure]:
    failures = []
    for seed, first in pending:
        try:
            records = compute_unit(spec, seed, first, on_node=lambda _: tick())
        except Exception as e:  # recorded, reported at the end; other units go on
            failures.append(_failure(seed, first, e))
            continue
        store(seed, first, records)
    return failures


# Worker-process state (set by the pool initializer).
_TICKS: Any = None


def _init_worker(ticks: Any, threads: int) -> None:
    global _TICKS
    _TICKS = ticks
    die_with_parent()
    import torch

    torch.set_num_threads(threads)


def _pool_unit(spec: TableSpec, seed: int, first: int) -> list[NodeRecord]:
    return compute_unit(spec, seed, first, on_node=lambda _: _TICKS.put(1))


def _drain(ticks: Any, tick: Tick) -> None:
    """Count the node ticks waiting in the queue."""
    count = 0
    while True:
        try:
            count += ticks.get_nowait()
        except queue_module.Empty:  # also ray.util.queue.Empty, a subclass
            break
    if count:
        tick(count)


def _run_pool(
    spec: TableSpec, pending: list[tuple[int, int]], store: Store, tick: Tick, workers: int
) -> list[UnitFailure]:
    if not pending:
        return []
    ctx = mp.get_context("spawn")
    ticks = ctx.Queue()
    failures: list[UnitFailure] = []
    with cf.ProcessPoolExecutor(
        max_workers=min(workers, len(pending)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(ticks, spec.threads),
    ) as pool:
        futures = {pool.submit(_pool_unit, spec, seed, first): (seed, first) for seed, first in pending}
        while futures:
            done, _ = cf.wait(futures, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            _drain(ticks, tick)
            for future in done:
                seed, first = futures.pop(future)
                error = future.exception()
                if error is not None:
                    failures.append(_failure(seed, first, error))
                else:
                    store(seed, first, future.result())
    _drain(ticks, tick)
    return failures


def _ray_unit(spec: TableSpec, seed: int, first: int, ticks: Any) -> list[NodeRecord]:
    return compute_unit(spec, seed, first, on_node=lambda _: ticks.put(1))


def _run_ray(spec: TableSpec, pending: list[tuple[int, int]], store: Store, tick: Tick) -> list[UnitFailure]:
    """Compute ``pending`` as Ray tasks of ``spec.threads`` CPUs each (Ray is up)."""
    ray = import_ray()
    from ray.util.queue import Queue

    if not pending:
        return []
    ticks = Queue()
    task = ray.remote(num_cpus=spec.threads)(_ray_unit)
    refs = {task.remote(spec, seed, first, ticks): (seed, first) for seed, first in pending}
    failures: list[UnitFailure] = []
    while refs:
        ready, _ = ray.wait(list(refs), timeout=0.2, num_returns=1)
        _drain(ticks, tick)
        for ref in ready:
            seed, first = refs.pop(ref)
            try:
                records = ray.get(ref)
            except Exception as e:  # the unit raised, or its worker died
                failures.append(_failure(seed, first, e))
                continue
            store(seed, first, records)
    _drain(ticks, tick)
    return failures
