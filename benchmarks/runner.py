"""The benchmark runner: a suite -> runs -> ``results.jsonl`` (+ TensorBoard, report).

:func:`run_suite` expands a suite into its runs (:mod:`benchmarks.runs`), sets up or
resumes the output directory (:mod:`benchmarks.results`: the layout, durability and
the resume rule), executes the runs that are not complete on a backend
(:mod:`benchmarks.backends`: inline, a process pool or Ray), appends every row to
``results.jsonl`` in this process as it arrives, and rebuilds the report
(:mod:`benchmarks.report`). A run that raises does not stop the others; the failures
are raised together at the end (:class:`RunsFailedError`).

The names the runner works with are importable from here too: :class:`RunSpec`,
:func:`expand`, :func:`run_name`, :func:`execute_run` (runs), :func:`read_rows`,
:func:`complete_runs`, ``RESULTS`` (results), ``BACKENDS``, :func:`threads_per_worker`
(backends), and the errors.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.backends import BACKENDS, run_inline, run_pool, run_ray, threads_per_worker
from benchmarks.errors import BenchmarkError, RunFailure, RunsFailedError
from benchmarks.report import build_report
from benchmarks.results import (
    RESULTS,
    RUNNER_FILE,
    SUITE_FILE,
    TABLE_RECORD,
    OutputLock,
    ResultsWriter,
    complete_runs,
    prepare_resume,
    read_json,
    read_rows,
    read_stored_suite,
    write_json,
)
from benchmarks.runs import RunSpec, execute_run, expand, run_name
from benchmarks.suite import TABULAR_ENV_ID, Suite, identify_table, validate_values

__all__ = [
    "BACKENDS",
    "RESULTS",
    "BenchmarkError",
    "RunFailure",
    "RunSpec",
    "RunsFailedError",
    "SuiteResult",
    "complete_runs",
    "execute_run",
    "expand",
    "read_rows",
    "run_name",
    "run_suite",
    "stored_suite",
    "threads_per_worker",
]

logger = logging.getLogger(__name__)


@dataclass
class SuiteResult:
    """What :func:`run_suite` did.

    Attributes:
        out: The output directory.
        runs: Names of all runs of the suite.
        skipped: Runs already complete before this call (``resume``).
        executed: Runs executed by this call.
        dropped_rows: Rows of incomplete runs removed on resume.
        failures: Runs that raised.
        wall_s: Wall time of this call.
    """

    out: Path
    runs: list[str]
    skipped: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    dropped_rows: int = 0
    failures: list[RunFailure] = field(default_factory=list)
    wall_s: float = 0.0


def run_suite(
    suite: Suite,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
    on_row: Callable[[Mapping[str, Any]], None] | None = None,
    image_every: int | None = None,
    report: bool = True,
    threads: int | None = None,
) -> SuiteResult:
    """Run every run of ``suite`` that is not already complete under ``out``.

    Args:
        suite: The validated suite.
        out: Output directory; must not exist unless ``resume``.
        workers: Parallel runs (processes for ``local``; concurrent tasks for ``ray``).
        backend: ``"local"`` or ``"ray"``.
        ray_address: Address of a Ray cluster; None starts a local one.
        resume: Continue the benchmark in ``out`` (the resume rule of
            :mod:`benchmarks.results`).
        on_row: Called in this process with every row as it is written (progress bars).
        image_every: TensorBoard image period in stages (default ``ceil(max_stages/4)``).
        report: Rebuild ``summary.csv``, ``report.md`` and the plots at the end.
        threads: torch threads per run (default ``max(1, cores // workers)``, or on
            resume the count the benchmark was started with, from ``runner.json``).
            Float32 reductions depend on the thread count, so results are
            bit-identical across ``workers`` settings at equal ``threads``; otherwise
            they drift apart during training (measured here: 3e-3 relative in the
            objective after 200 iterations, 2e-2 after 2000).

    Returns:
        A :class:`SuiteResult`.

    Raises:
        ValueError: ``workers`` or ``backend`` is not allowed.
        BenchmarkError: ``out`` exists without ``resume``, or is not a benchmark
            directory / belongs to another suite with ``resume``; or some runs failed
            (after every other run has finished; their rows are kept).
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is not allowed. Allowed: an integer >= 1")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed. Allowed: {BACKENDS}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r} is not allowed. Allowed: an integer >= 1")
    out = Path(out)
    t0 = time.perf_counter()
    validate_values(suite)  # everything is checked before anything is created
    runs = expand(suite, image_every=image_every)
    stored = suite.to_dict()
    if suite.env_id == TABULAR_ENV_ID:  # the table it scores against, hashed once, now
        stored[TABLE_RECORD] = identify_table(suite.env_kwargs["table"]).model_dump()
    created = False
    if resume:
        if not out.is_dir():
            raise BenchmarkError(
                f"Cannot resume: {str(out)!r} does not exist or is not a folder. Start a new "
                "benchmark without --resume."
            )
    else:
        if out.exists():
            raise BenchmarkError(
                f"Output directory {str(out)!r} already exists. Pass --resume to continue "
                "the benchmark in it, or choose another --out."
            )
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise BenchmarkError(f"Cannot create the output directory {str(out)!r}: {e.strerror or e}.") from None
        created = True
    lock = OutputLock(out, "lossagent bench")
    try:
        lock.acquire()
    except BenchmarkError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    rows_written = 0
    try:
        if resume:
            _check_resumable(out, stored)
            done, dropped = prepare_resume(out, [r.name for r in runs])
            if threads is None and (out / RUNNER_FILE).is_file():
                # the same thread count as before, so resumed runs reproduce the others
                threads = read_json(out / RUNNER_FILE, "The runner settings").get("threads")
        else:
            done, dropped = set(), 0
        if threads is None:
            threads = threads_per_worker(workers)
        if not resume:
            options = {"threads": threads, "workers": workers, "backend": backend}
            write_json(out / RUNNER_FILE, options)
            write_json(out / SUITE_FILE, stored)  # last: its presence marks a benchmark directory
        pending = [r for r in runs if r.name not in done]
        result = SuiteResult(out=out, runs=[r.name for r in runs], skipped=sorted(done), dropped_rows=dropped)
        logger.info(
            "Suite %r: %d runs, %d already complete, %d to run (%s backend, %d worker(s)).",
            suite.name, len(runs), len(done), len(pending), backend, workers,
        )
        with ResultsWriter(out / RESULTS) as writer:

            def write(row: Mapping[str, Any]) -> None:
                nonlocal rows_written
                writer.write(row)
                rows_written += 1
                if on_row is not None:
                    on_row(row)

            if backend == "ray":
                failures = run_ray(pending, out, write, threads, ray_address)
            elif workers == 1:
                failures = run_inline(pending, out, write, threads)
            else:
                failures = run_pool(pending, out, write, workers, threads)
        result.executed = [r.name for r in pending]
        result.failures = failures
        result.wall_s = time.perf_counter() - t0
        if created and rows_written == 0 and failures:
            # Nothing was computed: leave nothing behind, so the fixed command runs as is.
            lock.release()
            shutil.rmtree(out, ignore_errors=True)
            lines = "\n".join(f"  {f.run}: {f.error}" for f in failures)
            raise RunsFailedError(
                f"All {len(failures)} runs failed before their first stage; nothing was kept "
                f"and {str(out)!r} was removed:\n{lines}",
                failures,
            )
        if report:
            build_report(out)
    except BaseException:
        if created and rows_written == 0 and out.exists():
            lock.release()
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        lock.release()
    if failures:
        lines = "\n".join(f"  {f.run}: {f.error}" for f in failures)
        raise RunsFailedError(
            f"{len(failures)} of {len(pending)} runs failed (the others are saved; fix the "
            f"cause and rerun with --resume --out {out}):\n{lines}",
            failures,
        )
    return result


def _check_resumable(out: Path, stored: dict[str, Any]) -> None:
    suite_file = out / SUITE_FILE
    if not suite_file.is_file():
        raise BenchmarkError(
            f"Cannot resume: {str(suite_file)!r} does not exist, so {str(out)!r} is not the "
            "output directory of a benchmark. Start a new one without --resume."
        )
    previous = read_json(suite_file, "The stored suite")
    if not isinstance(previous, dict):
        raise BenchmarkError(f"The stored suite {str(suite_file)!r} is corrupt (not a JSON object).")
    if TABLE_RECORD in stored:
        # the same table by content; its path may read differently from another folder
        _check_same_table(previous.get(TABLE_RECORD), stored[TABLE_RECORD], suite_file)
        previous = {k: v for k, v in previous.items() if k != TABLE_RECORD}
        stored = {k: v for k, v in stored.items() if k != TABLE_RECORD}
    if previous != json.loads(json.dumps(stored)):
        changed = sorted(k for k in set(previous) | set(stored) if previous.get(k) != stored.get(k))
        raise BenchmarkError(
            f"Cannot resume {str(out)!r}: it holds a benchmark of a different suite "
            f"(differs in: {changed}). Resume with the same suite and options, or use a "
            "new --out."
        )


def _check_same_table(recorded: Any, now: dict[str, Any], suite_file: Path) -> None:
    """Refuse to resume a tabular benchmark on another table file than it started with."""
    if isinstance(recorded, dict) and recorded.get("sha256") == now["sha256"]:
        return
    was = f"sha256 {recorded.get('sha256')}" if isinstance(recorded, dict) else "no recorded table"
    raise BenchmarkError(
        f"Cannot resume: the table {now['table']!r} ({now['path']}) is not the file this "
        f"benchmark started with: it has sha256 {now['sha256']}, {str(suite_file)!r} holds "
        f"{was}. Restore that table file, or start a new benchmark with another --out."
    )


def stored_suite(out: str | os.PathLike[str]) -> Suite:
    """The suite a benchmark directory was started with (``<out>/suite.json``).

    Raises:
        BenchmarkError: ``out`` is not a benchmark directory.
        SuiteError: ``suite.json`` does not hold a valid suite.
    """
    suite, _ = read_stored_suite(out)
    return suite
