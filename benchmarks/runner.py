"""The benchmark runner: a suite -> runs -> ``results.jsonl`` (+ TensorBoard, report).

:func:`run_suite` expands a suite into its runs (:mod:`benchmarks.execution.runs`), sets up or
resumes the output directory (:mod:`benchmarks.execution.results`: the layout, durability and
the resume rule), executes the runs that are not complete on a backend
(:mod:`benchmarks.execution.executor`: inline, a process pool or Ray), appends every row to
``results.jsonl`` in this process as it arrives, and rebuilds the report
(:mod:`benchmarks.reports.report`). A run that raises does not stop the others; the failures
are raised together at the end (:class:`RunsFailedError`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.errors import BenchmarkError, RunFailure, RunsFailedError
from benchmarks.execution.executor import Executor, threads_per_worker
from benchmarks.execution.output import Output, check_same
from benchmarks.execution.results import (
    RESULTS,
    RUNNER_FILE,
    SUITE_FILE,
    TABLE_RECORD,
    ResultsWriter,
    prepare_resume,
    read_json,
    read_stored_suite,
    write_json,
)
from benchmarks.execution.runs import RunSpec, expand, run_task
from benchmarks.reports.report import build_report
from benchmarks.suites.suite import (
    TABULAR_ENV_ID,
    Suite,
    TableIdentity,
    identify_table,
    table_differs,
    validate_values,
)

__all__ = [
    "WORKER_MEMORY_BYTES",
    "BenchmarkError",
    "RunFailure",
    "RunsFailedError",
    "SuiteResult",
    "auto_workers",
    "available_memory",
    "embedded_runs",
    "run_suite",
    "stored_suite",
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
    workers: int | None = 1,
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
        workers: Parallel runs (processes for ``local``; concurrent tasks for ``ray``);
            None: :func:`auto_workers`. With ``local`` and more than one worker, the
            runs of agents on the embedded chat model run in this process after the
            others, one after another (see :func:`embedded_runs`).
        backend: ``"local"`` or ``"ray"``.
        ray_address: Address of a Ray cluster; None starts a local one.
        resume: Continue the benchmark in ``out`` (the resume rule of
            :mod:`benchmarks.execution.results`).
        on_row: Called in this process with every row as it is written (progress bars).
        image_every: TensorBoard image period in stages (default ``ceil(max_stages/4)``).
        report: Rebuild ``summary.csv``, ``report.md`` and the plots at the end.
        threads: torch threads per run (default ``max(1, cores // workers)``, or on
            resume the count the benchmark was started with, from ``runner.json``).
            Runs on the embedded chat model that run in this process after a pool use
            ``threads`` too when it is given, else all the cores (their model's server
            uses as many). Results are bit-identical across ``workers`` settings at
            equal ``threads`` only (docs/performance.md).

    Returns:
        A :class:`SuiteResult`.

    Raises:
        ValueError: ``workers``, ``backend`` or ``threads`` is not allowed.
        BenchmarkError: ``out`` exists without ``resume``, or is not a benchmark
            directory / belongs to another suite with ``resume``; or some runs failed
            (after every other run has finished; their rows are kept).
    """
    t0 = time.perf_counter()
    embedded_threads = threads
    if resume and threads is None:
        # so that resumed runs reproduce the others
        threads, embedded_threads = _stored_threads(Path(out))
    if not suite.values_checked:  # everything is checked once, before anything is created
        validate_values(suite)
    runs = expand(suite, image_every=image_every)
    if workers is None:
        workers = auto_workers(suite, runs, backend)
    executor = Executor(
        backend, workers=workers, threads=threads, device=str(suite.env_kwargs.get("device", "cpu")),
        ray_address=ray_address,
    )
    embedded_threads = embedded_threads or threads_per_worker(1)
    record = _suite_record(suite)
    output = Output(out, command="lossagent bench", kind="folder", resume=resume)
    output.check()
    settings = {
        "threads": executor.threads, "embedded_threads": embedded_threads, "workers": workers, "backend": backend,
    }
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
        failures = _execute(executor, pending, output, on_row, embedded_threads)
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


def _stored_threads(out: Path) -> tuple[int | None, int | None]:
    """The torch threads a benchmark was started with (``runner.json``), each None where
    not recorded: ``threads`` (runs on the executor) and ``embedded_threads`` (runs on
    the embedded chat model after a pool)."""
    if not (out / RUNNER_FILE).is_file():
        return None, None
    settings = read_json(out / RUNNER_FILE, "The runner settings")

    def count(key: str) -> int | None:
        value = settings.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None

    return count("threads"), count("embedded_threads")


def auto_workers(suite: Suite, runs: Sequence[RunSpec], backend: str = "local") -> int:
    """``--workers`` by default: one process per core for runs that train on the CPU
    (a small network gains little from a second thread; measured in docs/performance.md).

    Runs on the embedded chat model are not counted (they run in this process, after
    the others: :func:`embedded_runs`). Each process is given
    :data:`WORKER_MEMORY_BYTES` of the available memory, so a many-core machine with
    little memory starts fewer.

    Returns:
        1 for a table replay (microseconds a stage; a process costs seconds to start),
        an env whose device is not ``cpu`` (several processes would share one GPU), or
        the ``ray`` backend; else ``min(cores, available memory // WORKER_MEMORY_BYTES,
        runs that train without the embedded model)``, at least 1.
    """
    if backend != "local" or suite.env_id == TABULAR_ENV_ID or str(suite.env_kwargs.get("device", "cpu")) != "cpu":
        return 1
    cores = threads_per_worker(1)
    by_memory = available_memory() // WORKER_MEMORY_BYTES
    return max(1, min(cores, by_memory, len(runs) - len(embedded_runs(runs))))


WORKER_MEMORY_BYTES = 2 * 1024**3
"""Memory :func:`auto_workers` sets aside for each process (a smoke worker peaked at 1.0 GB)."""


def available_memory() -> int:
    """Bytes of memory available for new processes (``MemAvailable`` on Linux, else the
    free physical pages; a very large number where neither can be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 2**62


def embedded_runs(runs: Sequence[RunSpec]) -> list[RunSpec]:
    """The runs whose agent declares that it asks the embedded chat model
    (:func:`agents.uses_embedded_model`).

    With a process pool they run in this process after the others, one after another,
    with all the cores: one server then answers them all with its prompt cache warm,
    instead of one server per worker on a share of the cores (two 1-thread servers on
    2 cores answered a smoke decision in 2.3 s, one 2-thread server in 1.0 s).
    """
    from agents import uses_embedded_model

    return [r for r in runs if uses_embedded_model(r.agent_name, r.agent_kwargs)]


def _start_folder(out: Path, record: dict[str, Any], settings: dict[str, Any]) -> None:
    write_json(out / RUNNER_FILE, settings)
    write_json(out / SUITE_FILE, record)  # last: its presence marks a benchmark directory


def _execute(
    executor: Executor, pending: list[RunSpec], output: Output,
    on_row: Callable[[Mapping[str, Any]], None] | None,
    embedded_threads: int,
) -> list[RunFailure]:
    """Run ``pending``; every row is appended to ``results.jsonl`` as it arrives.

    With a process pool, the runs on the embedded chat model run here afterwards
    (:func:`embedded_runs`), with ``embedded_threads`` torch threads.
    """
    pooled = executor.backend == "local" and executor.workers > 1
    inline = embedded_runs(pending) if pooled else []
    here = {r.name for r in inline}
    if inline:
        logger.info(
            "%d run(s) on the embedded chat model run in this process after the others, with %d thread(s).",
            len(inline), embedded_threads,
        )
        if len(inline) < len(pending):
            _start_embedded_model(inline[0], embedded_threads)
    task = functools.partial(run_task, out=str(output.path.resolve()))
    with ResultsWriter(output.path / RESULTS) as writer:

        def write(_run: Any, row: Mapping[str, Any]) -> None:
            writer.write(row)
            output.keep()
            if on_row is not None:
                on_row(row)

        failures = executor.map(task, [(r.name, r) for r in pending if r.name not in here], on_message=write)
        failures += Executor("local", threads=embedded_threads).map(
            task, [(r.name, r) for r in inline], on_message=write
        )
    for failure in failures:
        logger.error("Run %s failed: %s", failure.key, failure.error)
    return [RunFailure(f.key, f.error, f.traceback) for f in failures]


def _start_embedded_model(run: RunSpec, threads: int) -> None:
    """Have ``run``'s agent start its embedded model in the background, on ``threads`` threads.

    It loads its model (about a second, mostly one thread) while the pool trains, instead
    of before the first decision. A failure here is only logged: the agent starts the
    model again when it first asks, and reports the error then.
    """
    import threading

    import torch

    from agents import check_agent_arguments

    start_model = getattr(check_agent_arguments(run.agent_name, run.agent_kwargs), "start_embedded_model", None)
    if not callable(start_model):
        return
    torch.set_num_threads(threads)  # the embedded model's server takes this process's thread count

    def start() -> None:
        try:
            start_model(run.agent_kwargs)
        except Exception as e:
            logger.debug("Starting the embedded model ahead of its runs failed: %s", e)

    threading.Thread(target=start, name="embedded-model-start", daemon=True).start()


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
    """Refuse to resume a tabular benchmark on another table than it started with."""
    before = TableIdentity.model_validate(recorded) if isinstance(recorded, dict) else None
    why = table_differs(before, TableIdentity.model_validate(now))
    if why is not None:
        raise BenchmarkError(
            f"Cannot resume: the table {now['table']!r} ({now['path']}) is not the table this benchmark "
            f"started with ({str(suite_file)!r}): {why}. Restore that table file, or start a new "
            "benchmark with another --out."
        )


def stored_suite(out: str | os.PathLike[str]) -> Suite:
    """The suite a benchmark directory was started with (``<out>/suite.json``).

    Raises:
        BenchmarkError: ``out`` is not a benchmark directory.
        SuiteError: ``suite.json`` does not hold a valid suite.
    """
    suite, _ = read_stored_suite(out)
    return suite
