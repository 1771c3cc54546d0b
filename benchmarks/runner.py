"""The benchmark runner: a suite -> runs -> ``results.jsonl`` (+ TensorBoard, report).

A suite expands into one run per (agent, objective, seed), named
``f"{env_id}__{agent}__{objective}__{seed}"`` with characters outside
``[A-Za-z0-9._+-]`` replaced by ``-`` (so ``LossAgent/SuperResolution-v0`` becomes
``LossAgent-SuperResolution-v0``). Every run of a suite has the same budget
(``max_stages`` x ``stage_iters``), and all runs with the same seed start from the same
network, because the env's ``reset(seed=...)`` is deterministic.

Output directory::

    <out>/suite.json       the resolved suite (what --resume continues)
    <out>/runner.json      workers, backend and torch threads per run it started with
    <out>/results.jsonl    one JSON row per finished stage: the source of truth
    <out>/tb/<run name>/   TensorBoard event files of each run
    <out>/summary.csv, report.md, plots/   rebuilt from results.jsonl (benchmarks.report)

Durability and ``--resume``: only the parent process writes ``results.jsonl``; workers
send each row through a queue as soon as their stage ends, and the parent appends it,
flushes and ``os.fsync``s before reading the next. A SIGKILL at any moment therefore
loses at most the stages in flight (and leaves at most one torn last line, which is
ignored). The resume rule: a run with all ``max_stages`` rows is complete and skipped;
the rows of every incomplete run are dropped (``results.jsonl`` is rewritten atomically
without them, and their TensorBoard directories are removed) and the run is repeated
from scratch. No stage row is ever duplicated, and on CPU the repeated run reproduces
exactly what an uninterrupted run would have written.

Parallelism: ``workers=1`` runs in this process. ``workers=N`` uses N processes
(``ProcessPoolExecutor`` with the ``spawn`` start method), each with
``torch.set_num_threads(max(1, cores // N))``; worker processes die with the parent.
``backend="ray"`` runs the same run function as Ray tasks (``ray.init(address=...)``,
or a local cluster with one Ray CPU per core when no address is given; an already
initialised Ray is used as is). Each task reserves ``max(1, cores // workers)`` Ray
CPUs and runs that many torch threads. Rows stream back through a
``ray.util.queue.Queue`` to this process, which alone writes ``results.jsonl``. On a
multi-node cluster, install this package on every node and give an ``--out`` that every
node can write (TensorBoard files are written by the tasks).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import math
import multiprocessing as mp
import os
import queue as queue_module
import re
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.suite import Suite

__all__ = [
    "BACKENDS",
    "BenchmarkError",
    "RunFailure",
    "RunsFailedError",
    "RunSpec",
    "SuiteResult",
    "expand",
    "execute_run",
    "read_rows",
    "run_name",
    "run_suite",
]

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
RESULTS = "results.jsonl"
SUITE_FILE = "suite.json"
RUNNER_FILE = "runner.json"
_SAFE = re.compile(r"[^A-Za-z0-9._+\-]")

Emit = Callable[[dict[str, Any]], None]


class BenchmarkError(RuntimeError):
    """A benchmark that cannot start or continue (e.g. a bad output directory)."""


class RunsFailedError(BenchmarkError):
    """Some runs raised; every other run finished and its rows are saved.

    Attributes:
        failures: One :class:`RunFailure` per failed run.
    """

    def __init__(self, message: str, failures: list[RunFailure]):
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class RunFailure:
    """A run that raised: its name, the error's one-line message and the traceback."""

    run: str
    error: str
    traceback: str


@dataclass(frozen=True)
class RunSpec:
    """Everything one worker needs to execute one run (plain, picklable data).

    Attributes:
        name: The run name (file-system safe).
        suite: Suite name.
        env_id: Gymnasium id.
        env_kwargs: ``gym.make`` kwargs without objective and budget.
        agent: Agent label (run names, reports).
        agent_name: Name for ``agents.make_agent``.
        agent_kwargs: Its keyword arguments.
        objective: Objective label.
        objective_spec: What is passed as ``objective=``.
        seed: Episode seed (the env's and the agent's).
        max_stages: Stages per episode.
        stage_iters: Iterations per stage.
        image_every: TensorBoard image period in stages (0: none).
    """

    name: str
    suite: str
    env_id: str
    env_kwargs: dict[str, Any]
    agent: str
    agent_name: str
    agent_kwargs: dict[str, Any]
    objective: str
    objective_spec: str | dict[str, float]
    seed: int
    max_stages: int
    stage_iters: int
    image_every: int = 1

    def make_env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``gym.make(self.env_id, **kwargs)``."""
        return {
            **self.env_kwargs,
            "objective": self.objective_spec,
            "max_stages": self.max_stages,
            "stage_iters": self.stage_iters,
            "render_mode": "rgb_array",
        }


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


def run_name(env_id: str, agent: str, objective: str, seed: int) -> str:
    """``f"{env_id}__{agent}__{objective}__{seed}"``, made file-system safe."""
    return _SAFE.sub("-", f"{env_id}__{agent}__{objective}__{seed}")


def expand(suite: Suite, image_every: int | None = None) -> list[RunSpec]:
    """All runs of a suite: agents x objectives x seeds, in that nesting order.

    Args:
        suite: A validated suite.
        image_every: TensorBoard image period; default ``ceil(max_stages / 4)``.
    """
    if image_every is None:
        image_every = max(1, math.ceil(suite.max_stages / 4))
    runs = []
    for agent in suite.agents:
        for objective in suite.objectives:
            for seed in suite.seeds:
                runs.append(
                    RunSpec(
                        name=run_name(suite.env_id, agent.display, objective.label, seed),
                        suite=suite.name,
                        env_id=suite.env_id,
                        env_kwargs=dict(suite.env_kwargs),
                        agent=agent.display,
                        agent_name=agent.name,
                        agent_kwargs=dict(agent.kwargs),
                        objective=objective.label,
                        objective_spec=objective.spec,
                        seed=seed,
                        max_stages=suite.max_stages,
                        stage_iters=suite.stage_iters,
                        image_every=image_every,
                    )
                )
    return runs


# --------------------------------------------------------------------------- one run


def execute_run(spec: RunSpec, out: str | os.PathLike[str] | None, emit: Emit) -> int:
    """Run one episode of one agent and ``emit`` one row per finished stage.

    The env is wrapped in :class:`lossagent_env.wrappers.TensorBoardLogger` writing to
    ``<out>/tb/<run name>``; the agent's notes (rationale, retries, tokens, latency)
    go there as ``agent/...`` entries.

    Args:
        spec: The run.
        out: The benchmark's output directory; None writes no TensorBoard files.
        emit: Called with each stage's row (a JSON-able dict) as soon as it ends.

    Returns:
        The number of stages run.

    Raises:
        BenchmarkError: The episode ended before the suite's budget.
    """
    import gymnasium as gym

    import agents
    import lossagent_env  # noqa: F401  (registers the env ids)
    from lossagent_env.wrappers import TensorBoardLogger

    t_setup = time.perf_counter()
    env = gym.make(spec.env_id, **spec.make_env_kwargs())
    logger_env: TensorBoardLogger | None = None
    if out is not None:
        env = logger_env = TensorBoardLogger(
            env,
            Path(out) / "tb" / spec.name,
            image_every=spec.image_every,
            run_config={
                "run": spec.name,
                "suite": spec.suite,
                "agent": spec.agent,
                "agent_kwargs": json.dumps(spec.agent_kwargs, sort_keys=True),
                "objective": spec.objective,
                "seed": spec.seed,
            },
        )
    count = 0
    try:
        agent = agents.make_agent(spec.agent_name, **spec.agent_kwargs)
        setup_s = time.perf_counter() - t_setup
        t0 = time.perf_counter()
        prepare = getattr(agent, "prepare", None)
        if callable(prepare) and logger_env is not None:
            # Agents that use the env before the episode (PPO trains on it when
            # untrained) get it without the logger, so TensorBoard shows the episode
            # only; run_episode calls prepare again, which is then a no-op / rebinding.
            prepare(logger_env.env)

        def on_stage(stage: Any, stage_env: gym.Env) -> None:
            nonlocal count
            count += 1
            notes = _jsonable(stage.notes or {})
            if logger_env is not None:
                logger_env.log_notes(notes)
            timings = dict(stage.timings or {})
            emit(
                {
                    "run": spec.name,
                    "suite": spec.suite,
                    "env_id": spec.env_id,
                    "agent": spec.agent,
                    "objective": spec.objective,
                    "seed": spec.seed,
                    "stage": int(stage.stage),
                    "max_stages": spec.max_stages,
                    "loss_names": list(stage_env.unwrapped.loss_names),
                    "action": _jsonable(stage.action),
                    "weights": _jsonable(stage.weights),
                    "metrics": _jsonable(stage.metrics),
                    "loss_values": _jsonable(stage.loss_values),
                    "objective_value": float(stage.objective),
                    "reward": float(stage.reward),
                    "notes": notes,
                    "diverged": bool(stage.diverged),
                    "feedback": stage.feedback,
                    "wall_s": time.perf_counter() - t0,
                    "setup_s": setup_s,
                    "act_s": float(timings.get("act_seconds", 0.0)),
                    "train_s": float(timings.get("train_seconds", 0.0)),
                    "eval_s": float(timings.get("eval_seconds", 0.0)),
                }
            )

        agents.run_episode(env, agent, seed=spec.seed, callbacks=(on_stage,))
    finally:
        env.close()
    if count != spec.max_stages:
        raise BenchmarkError(
            f"Run {spec.name!r} ended after {count} stages; the suite's budget is "
            f"{spec.max_stages}. The agent or env stopped the episode early."
        )
    return count


def _jsonable(value: Any) -> Any:
    """numpy arrays/scalars and tuples -> plain JSON values; other objects -> ``str``."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item") and callable(value.item):  # a torch scalar
        return value.item()
    return str(value)


# --------------------------------------------------------------------------- results file


class _ResultsWriter:
    """Appends rows to ``results.jsonl``, each flushed and fsync'ed before returning."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(row, sort_keys=True, allow_nan=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.jsonl``; a torn last line (killed mid-write) is ignored.

    Raises:
        BenchmarkError: A line other than the last is not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):
                logger.warning("%s:%d: ignoring a torn last line (%s)", path, number, e)
                continue
            raise BenchmarkError(f"{path}:{number}: not a JSON row ({e}).") from e
    return rows


def complete_runs(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of runs whose stages ``1..max_stages`` are all present."""
    stages: dict[str, set[int]] = {}
    budget: dict[str, int] = {}
    for row in rows:
        stages.setdefault(row["run"], set()).add(int(row["stage"]))
        budget[row["run"]] = int(row["max_stages"])
    return {run for run, seen in stages.items() if seen >= set(range(1, budget[run] + 1))}


def _prepare_resume(out: Path, runs: list[RunSpec]) -> tuple[set[str], int]:
    """Keep the rows of complete runs only; return (complete run names, dropped rows)."""
    path = out / RESULTS
    rows = read_rows(path)
    names = {r.name for r in runs}
    done = complete_runs(rows) & names
    keep = [row for row in rows if row["run"] in done]
    dropped = len(rows) - len(keep)
    # one row per (run, stage): the first one wins (there is never more than one)
    seen: set[tuple[str, int]] = set()
    unique = []
    for row in keep:
        key = (row["run"], int(row["stage"]))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    dropped += len(keep) - len(unique)
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in unique:
            f.write(json.dumps(row, sort_keys=True, allow_nan=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(out)
    for run in sorted(names - done):
        tb_dir = out / "tb" / run
        if tb_dir.exists():
            shutil.rmtree(tb_dir)
    return done, dropped


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the suite


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
        resume: Continue the benchmark in ``out`` (see the module docstring).
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
    runs = expand(suite, image_every=image_every)
    stored = suite.to_dict()
    if resume:
        _check_resumable(out, stored)
        done, dropped = _prepare_resume(out, runs)
        if threads is None and (out / RUNNER_FILE).is_file():
            # the same thread count as before, so resumed runs reproduce the others
            threads = json.loads((out / RUNNER_FILE).read_text()).get("threads")
    else:
        if out.exists():
            raise BenchmarkError(
                f"Output directory {str(out)!r} already exists. Pass --resume to continue "
                "the benchmark in it, or choose another --out."
            )
        out.mkdir(parents=True)
        done, dropped = set(), 0
    if threads is None:
        threads = threads_per_worker(workers)
    if not resume:
        options = {"threads": threads, "workers": workers, "backend": backend}
        _write_json(out / RUNNER_FILE, options)
        _write_json(out / SUITE_FILE, stored)  # last: its presence marks a benchmark directory
    pending = [r for r in runs if r.name not in done]
    result = SuiteResult(out=out, runs=[r.name for r in runs], skipped=sorted(done), dropped_rows=dropped)
    logger.info(
        "Suite %r: %d runs, %d already complete, %d to run (%s backend, %d worker(s)).",
        suite.name,
        len(runs),
        len(done),
        len(pending),
        backend,
        workers,
    )
    writer = _ResultsWriter(out / RESULTS)

    def write(row: Mapping[str, Any]) -> None:
        writer.write(row)
        if on_row is not None:
            on_row(row)

    try:
        if backend == "ray":
            failures = _run_ray(pending, out, write, threads, ray_address)
        elif workers == 1:
            failures = _run_inline(pending, out, write, threads)
        else:
            failures = _run_pool(pending, out, write, workers, threads)
    finally:
        writer.close()
    result.executed = [r.name for r in pending]
    result.failures = failures
    result.wall_s = time.perf_counter() - t0
    if report:
        from benchmarks.report import build_report

        build_report(out)
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
    previous = json.loads(suite_file.read_text())
    if previous != json.loads(json.dumps(stored)):
        changed = sorted(k for k in set(previous) | set(stored) if previous.get(k) != stored.get(k))
        raise BenchmarkError(
            f"Cannot resume {str(out)!r}: it holds a benchmark of a different suite "
            f"(differs in: {changed}). Resume with the same suite and options, or use a "
            "new --out."
        )


def stored_suite(out: str | os.PathLike[str]) -> Suite:
    """The suite a benchmark directory was started with (``<out>/suite.json``).

    Raises:
        BenchmarkError: ``out`` is not a benchmark directory.
    """
    path = Path(out) / SUITE_FILE
    if not path.is_file():
        raise BenchmarkError(
            f"{str(path)!r} does not exist, so {str(out)!r} is not the output directory of a benchmark."
        )
    return Suite.from_dict(json.loads(path.read_text()), source=str(path))


# --------------------------------------------------------------------------- backends


def _failure(spec: RunSpec, error: BaseException) -> RunFailure:
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    logger.error("Run %s failed: %s: %s", spec.name, type(error).__name__, error)
    return RunFailure(spec.name, f"{type(error).__name__}: {error}", tb)


def _run_inline(pending: list[RunSpec], out: Path, write: Emit, threads: int) -> list[RunFailure]:
    import torch

    failures = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for spec in pending:
            try:
                execute_run(spec, out, write)
            except Exception as e:  # recorded as a failed run and reported at the end
                failures.append(_failure(spec, e))
    finally:
        torch.set_num_threads(previous)
    return failures


# Worker-process state (set by the pool initializer).
_WORKER_QUEUE: Any = None
_PARENT_PID: int | None = None


def threads_per_worker(workers: int) -> int:
    """``max(1, cores // workers)``: torch threads for each of ``workers`` processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


def _init_worker(rows: Any, threads: int, parent_pid: int) -> None:
    global _WORKER_QUEUE, _PARENT_PID
    _WORKER_QUEUE = rows
    _PARENT_PID = parent_pid
    _die_with_parent()
    import torch

    torch.set_num_threads(threads)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the parent dies (no orphan keeps running)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())


def _pool_task(spec: RunSpec, out: str) -> int:
    def emit(row: dict[str, Any]) -> None:
        if _PARENT_PID is not None and os.getppid() != _PARENT_PID:
            raise SystemExit("the benchmark process is gone; stopping this run")
        _WORKER_QUEUE.put(("row", spec.name, row))

    try:
        count = execute_run(spec, out, emit)
    except Exception as e:  # sent to the parent, which records the failed run
        _WORKER_QUEUE.put(("error", spec.name, _failure(spec, e)))
        return 0
    _WORKER_QUEUE.put(("done", spec.name, count))
    return count


def _drain(rows: Any, write: Emit, pending: set[str], failures: list[RunFailure], timeout: float) -> None:
    """Handle queued messages: wait up to ``timeout`` for the first, then take the rest."""
    while True:
        try:
            kind, name, payload = rows.get(timeout=timeout)
        except queue_module.Empty:  # also ray.util.queue.Empty, a subclass
            return
        if kind == "row":
            write(payload)
        elif kind == "error":
            failures.append(payload)
            pending.discard(name)
        else:
            pending.discard(name)
        timeout = 0.01


def _run_pool(pending: list[RunSpec], out: Path, write: Emit, workers: int, threads: int) -> list[RunFailure]:
    if not pending:
        return []
    ctx = mp.get_context("spawn")
    rows = ctx.Queue()
    failures: list[RunFailure] = []
    open_runs = {r.name for r in pending}
    with cf.ProcessPoolExecutor(
        max_workers=min(workers, len(pending)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(rows, threads, os.getpid()),
    ) as pool:
        futures = {pool.submit(_pool_task, spec, str(out)): spec for spec in pending}
        while open_runs:
            _drain(rows, write, open_runs, failures, timeout=0.2)
            for future, spec in list(futures.items()):
                if future.done():
                    del futures[future]
                    error = future.exception()
                    if error is not None:  # the worker process died (not a Python error)
                        _task_crashed(rows, write, open_runs, failures, spec, error)
            if not futures and open_runs:
                _tasks_ended(rows, write, open_runs, failures, "worker ended without a result")
    return failures


def _task_crashed(rows, write: Emit, open_runs: set[str], failures: list[RunFailure],
                  spec: RunSpec, error: BaseException) -> None:
    """A task died: keep the rows it sent, then record its run as failed if still open."""
    _drain(rows, write, open_runs, failures, timeout=0.5)
    if spec.name in open_runs:
        failures.append(_failure(spec, error))
        open_runs.discard(spec.name)


def _tasks_ended(rows, write: Emit, open_runs: set[str], failures: list[RunFailure],
                 reason: str) -> None:
    """Every task returned: their last rows may still be in the queue; runs left open failed."""
    _drain(rows, write, open_runs, failures, timeout=1.0)
    for name in sorted(open_runs):
        failures.append(RunFailure(name, reason, ""))
    open_runs.clear()


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise BenchmarkError(
            "--backend ray needs Ray, which is not installed. Install the `ray` extra: "
            "pip install 'lossagent-env[ray]'"
        ) from e
    return ray


def _ray_task(spec: RunSpec, out: str, rows: Any, threads: int) -> int:
    import torch

    torch.set_num_threads(threads)

    def emit(row: dict[str, Any]) -> None:
        rows.put(("row", spec.name, row))

    try:
        count = execute_run(spec, out, emit)
    except Exception as e:  # sent to the driver, which records the failed run
        rows.put(("error", spec.name, _failure(spec, e)))
        return 0
    rows.put(("done", spec.name, count))
    return count


def _run_ray(
    pending: list[RunSpec], out: Path, write: Emit, threads: int, address: str | None
) -> list[RunFailure]:
    ray = _import_ray()
    from ray.util.queue import Queue

    if not pending:
        return []
    started_here = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            cores = threads_per_worker(1)
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        started_here = True
    try:
        rows = Queue()
        # each task reserves as many Ray CPUs as it runs torch threads, so that about
        # `workers` tasks run at once on a cluster of this machine's size
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        if threads > cluster_cpus:  # a task asking for more CPUs than exist never starts
            logger.warning(
                "Ray cluster has %d CPUs; running %d threads per task.", cluster_cpus, cluster_cpus
            )
            threads = max(1, cluster_cpus)
        task = ray.remote(num_cpus=threads)(_ray_task)
        refs = {task.remote(spec, str(out.resolve()), rows, threads): spec for spec in pending}
        failures: list[RunFailure] = []
        open_runs = {r.name for r in pending}
        while open_runs:
            _drain(rows, write, open_runs, failures, timeout=0.2)
            ready, _ = ray.wait(list(refs), timeout=0, num_returns=len(refs)) if refs else ([], [])
            for ref in ready:
                spec = refs.pop(ref)
                try:
                    ray.get(ref)
                except Exception as e:  # the task itself crashed (worker died)
                    _task_crashed(rows, write, open_runs, failures, spec, e)
            if not refs and open_runs:
                _tasks_ended(rows, write, open_runs, failures, "Ray task ended without a result")
        return failures
    finally:
        if started_here:
            ray.shutdown()


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    """A run spec as plain data (for logs and tests)."""
    return asdict(spec)
