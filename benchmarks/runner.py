"""The benchmark runner: a suite -> runs -> ``results.jsonl`` (+ TensorBoard, report).

:func:`run_suite` expands a suite into its runs (:mod:`benchmarks.runs`), sets up or
resumes the output directory (:mod:`benchmarks.results`: the layout, durability and
the resume rule), executes the runs that are not complete on a backend
(:mod:`benchmarks.executor`: inline, a process pool or Ray), appends every row to
``results.jsonl`` in this process as it arrives, and rebuilds the report
(:mod:`benchmarks.report`). A run that raises does not stop the others; the failures
are raised together at the end (:class:`RunsFailedError`).

The names the runner works with are importable from here too: :class:`RunSpec`,
:func:`expand`, :func:`run_name`, :func:`execute_run` (runs), :func:`read_rows`,
:func:`complete_runs`, ``RESULTS`` (results), ``BACKENDS``, :func:`threads_per_worker`
(executor), and the errors.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.errors import BenchmarkError, RunFailure, RunsFailedError
from benchmarks.executor import BACKENDS, Executor, threads_per_worker
from benchmarks.output import Output, check_same
from benchmarks.report import build_report
from benchmarks.results import (
    RESULTS,
    RUNNER_FILE,
    SUITE_FILE,
    TABLE_RECORD,
    ResultsWriter,
    complete_runs,
    prepare_resume,
    read_json,
    read_rows,
    read_stored_suite,
    write_json,
)
from benchmarks.runs import RunSpec, execute_run, expand, run_name, run_task
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
        ValueError: ``workers``, ``backend`` or ``threads`` is not allowed.
        BenchmarkError: ``out`` exists without ``resume``, or is not a benchmark
            directory / belongs to another suite with ``resume``; or some runs failed
            (after every other run has finished; their rows are kept).
    """
    t0 = time.perf_counter()
    if resume and threads is None:
        threads = _stored_threads(Path(out))  # so that resumed runs reproduce the others
    executor = Executor(
        backend, workers=workers, threads=threads, device=str(suite.env_kwargs.get("device", "cpu")),
        ray_address=ray_address,
    )
    validate_values(suite)  # everything is checked before anything is created
    runs = expand(suite, image_every=image_every)
    record = _suite_record(suite)
    output = Output(out, command="lossagent bench", kind="folder", resume=resume)
    output.check()
    settings = {"threads": executor.threads, "workers": workers, "backend": backend}
    with executor, output.claim(
        create=lambda path: _start_folder(path, record, settings),
        check_resumable=lambda path: _check_resumable(path, record),
    ):
        done, dropped = prepare_resume(output.path, [r.name for r in runs]) if resume else (set(), 0)
        pending = [r for r in runs if r.name not in done]
        logger.info(
            "Suite %r: %d runs, %d already complete, %d to run (%s backend, %d worker(s)).",
            suite.name, len(runs), len(done), len(pending), backend, workers,
        )
        failures = _execute(executor, pending, output, on_row)
        if failures and not output.kept:
            # Nothing was computed: leave nothing behind, so the fixed command runs as is.
            raise RunsFailedError(
                f"All {len(failures)} runs failed before their first stage; nothing was kept"
                f"{f' and {str(output.path)!r} was removed' if output.created else ''}:\n"
                + _failure_lines(failures),
                failures,
            )
        if report:
            build_report(output.path)
    if failures:
        raise RunsFailedError(
            f"{len(failures)} of {len(pending)} runs failed (the others are saved; fix the "
            f"cause and rerun with --resume --out {output.path}):\n" + _failure_lines(failures),
            failures,
        )
    return SuiteResult(
        out=output.path, runs=[r.name for r in runs], skipped=sorted(done),
        executed=[r.name for r in pending], dropped_rows=dropped, wall_s=time.perf_counter() - t0,
    )


def _suite_record(suite: Suite) -> dict[str, Any]:
    """What ``suite.json`` holds: the suite, and the table a replay scores against,
    hashed once, now."""
    record = suite.to_dict()
    if suite.env_id == TABULAR_ENV_ID:
        record[TABLE_RECORD] = identify_table(suite.env_kwargs["table"]).model_dump()
    return record


def _stored_threads(out: Path) -> int | None:
    """The torch threads a benchmark was started with (``runner.json``), if recorded."""
    if not (out / RUNNER_FILE).is_file():
        return None
    threads = read_json(out / RUNNER_FILE, "The runner settings").get("threads")
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None


def _start_folder(out: Path, record: dict[str, Any], settings: dict[str, Any]) -> None:
    write_json(out / RUNNER_FILE, settings)
    write_json(out / SUITE_FILE, record)  # last: its presence marks a benchmark directory


def _execute(
    executor: Executor, pending: list[RunSpec], output: Output,
    on_row: Callable[[Mapping[str, Any]], None] | None,
) -> list[RunFailure]:
    """Run ``pending``; every row is appended to ``results.jsonl`` as it arrives."""
    with ResultsWriter(output.path / RESULTS) as writer:

        def write(_run: Any, row: Mapping[str, Any]) -> None:
            writer.write(row)
            output.keep()
            if on_row is not None:
                on_row(row)

        failures = executor.map(
            functools.partial(run_task, out=str(output.path.resolve())),
            [(spec.name, spec) for spec in pending],
            on_message=write,
        )
    for failure in failures:
        logger.error("Run %s failed: %s", failure.key, failure.error)
    return [RunFailure(f.key, f.error, f.traceback) for f in failures]


def _failure_lines(failures: list[RunFailure]) -> str:
    return "\n".join(f"  {f.run}: {f.error}" for f in failures)


def _check_resumable(out: Path, record: dict[str, Any]) -> None:
    suite_file = out / SUITE_FILE
    if not suite_file.is_file():
        raise BenchmarkError(
            f"Cannot resume: {str(suite_file)!r} does not exist, so {str(out)!r} is not the "
            "output directory of a benchmark. Start a new one without --resume."
        )
    previous = read_json(suite_file, "The stored suite")
    if not isinstance(previous, dict):
        raise BenchmarkError(f"The stored suite {str(suite_file)!r} is corrupt (not a JSON object).")
    if TABLE_RECORD in record:
        # the same table by content; its path may read differently from another folder
        _check_same_table(previous.get(TABLE_RECORD), record[TABLE_RECORD], suite_file)
    check_same(out, previous, record, what="suite", ignore=(TABLE_RECORD,))


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
