"""Backends: where the runs of a suite execute, and how their rows come back.

Every backend runs the same task, :func:`run_task`: it executes one run and puts
messages on a queue, ``(kind, run name, payload)``:

=========  ========================  ============================================
``kind``   sent                      ``payload``
=========  ========================  ============================================
``row``    after each stage          the stage's row
``error``  when the run raised       a :class:`~benchmarks.errors.RunFailure`
``done``   when the run finished     the number of stages
=========  ========================  ============================================

In the benchmark process one collector takes them off the queue, passes each row to
``write`` (which appends it to ``results.jsonl``, see :mod:`benchmarks.results`) and
records failures. A task that dies without a message (a killed worker process, a lost
Ray worker) is handled the same way by every backend: its rows already queued are
written, then its run is recorded as failed; when every task has returned, runs still
open are failed too.

- :func:`run_inline` (``workers=1``): the runs one after another in this process, with
  ``torch.set_num_threads(threads)`` while they run. The queue hands each message to
  the collector as it is put, so rows are written as their stage ends.
- :func:`run_pool` (``workers=N``): N processes (``ProcessPoolExecutor`` with the
  ``spawn`` start method), each with ``torch.set_num_threads(threads)``. Worker
  processes die with the parent (``PR_SET_PDEATHSIG`` on Linux, and a check of the
  parent before each row is sent).
- :func:`run_ray`: Ray tasks (``ray.init(address=...)``, or a local cluster with one Ray
  CPU per core when no address is given; an already initialised Ray is used as is). A
  cluster address that does not answer within :data:`RAY_CONNECT_TIMEOUT_S` seconds is
  an error (:func:`start_ray`).
  Each task reserves ``threads`` Ray CPUs and runs that many torch threads, so about
  ``workers`` tasks run at once on a cluster of this machine's size. Rows stream back
  through a ``ray.util.queue.Queue``. On a multi-node cluster, install this package on
  every node and give an output directory that every node can write (TensorBoard files
  are written by the tasks).

GPUs: runs whose device is ``cuda`` or ``auto`` ask Ray for a share of the cluster's
GPUs (:func:`ray_gpus`: all GPUs split over the tasks that run at once, at most one
each), because Ray hides the GPUs from a task that asked for none. In a process pool,
worker ``i`` trains on ``cuda:i % G`` when ``G >= 2`` GPUs are visible
(:func:`worker_device`). Every row records the device it trained on (``device``).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing as mp
import os
import queue as queue_module
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, Protocol

from benchmarks.errors import BenchmarkError, RunFailure
from benchmarks.runs import Emit, RunSpec, execute_run

__all__ = [
    "BACKENDS",
    "RAY_CONNECT_TIMEOUT_S",
    "check_backend",
    "run_inline",
    "run_pool",
    "run_ray",
    "run_task",
    "start_ray",
    "threads_per_worker",
]

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
"""Values of ``backend``: ``local`` runs inline or in a process pool, ``ray`` on Ray."""

RAY_CONNECT_TIMEOUT_S = 60.0
"""Seconds :func:`start_ray` waits for the Ray cluster at a given address before it gives up."""

Message = tuple[str, str, Any]
"""``(kind, run name, payload)``, see the module docstring."""


class MessageQueue(Protocol):
    """What :func:`run_task` puts its messages on (a multiprocessing or Ray queue)."""

    def put(self, message: Message) -> None: ...


def threads_per_worker(workers: int) -> int:
    """``max(1, cores // workers)``: torch threads for each of ``workers`` processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


# --------------------------------------------------------------------------- the task


def run_task(
    spec: RunSpec,
    out: str | os.PathLike[str],
    messages: MessageQueue,
    threads: int | None = None,
    parent_pid: int | None = None,
    device: str | None = None,
) -> int:
    """Execute one run and report it on ``messages``: its rows, then ``done`` or ``error``.

    Args:
        spec: The run.
        out: The benchmark directory (TensorBoard files).
        messages: Where the messages go.
        threads: torch threads to set first; None leaves the count as it is.
        parent_pid: Stop (``SystemExit``) before sending a row once the process is no
            longer this one's parent: the benchmark is gone.
        device: The env device to use instead of the suite's (a worker's own GPU).

    Returns:
        The number of stages run; 0 if the run raised (the error is on ``messages``).
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if device is not None:
        spec = dataclasses.replace(spec, env_kwargs={**spec.env_kwargs, "device": device})

    def emit(row: dict[str, Any]) -> None:
        if parent_pid is not None and os.getppid() != parent_pid:
            raise SystemExit("the benchmark process is gone; stopping this run")
        messages.put(("row", spec.name, row))

    try:
        count = execute_run(spec, out, emit)
    except Exception as e:  # sent to the benchmark process, which records the failed run
        messages.put(("error", spec.name, _failure(spec, e)))
        return 0
    messages.put(("done", spec.name, count))
    return count


def _failure(spec: RunSpec, error: BaseException) -> RunFailure:
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    logger.error("Run %s failed: %s: %s", spec.name, type(error).__name__, error)
    return RunFailure(spec.name, f"{type(error).__name__}: {error}", tb)


# --------------------------------------------------------------------------- the collector


class _Collector:
    """The benchmark process's end of the queue: writes rows and closes runs.

    Attributes:
        open_runs: Runs without a ``done`` or ``error`` message yet.
        failures: The failed runs, in the order their failure was seen.
    """

    def __init__(self, messages: Any, write: Emit, runs: Iterable[RunSpec]):
        self.messages = messages
        self.write = write
        self.open_runs = {r.name for r in runs}
        self.failures: list[RunFailure] = []

    def handle(self, message: Message) -> None:
        kind, name, payload = message
        if kind == "row":
            self.write(payload)
        elif kind == "error":
            self.failures.append(payload)
            self.open_runs.discard(name)
        else:
            self.open_runs.discard(name)

    def drain(self, timeout: float) -> None:
        """Handle queued messages: wait up to ``timeout`` for the first, then take the rest."""
        while True:
            try:
                message = self.messages.get(timeout=timeout)
            except queue_module.Empty:  # also ray.util.queue.Empty, a subclass
                return
            self.handle(message)
            timeout = 0.01

    def watch(
        self,
        tasks: dict[Any, RunSpec],
        finished: Callable[[list[Any]], Collection[Any]],
        error_of: Callable[[Any], BaseException | None],
        reason: str,
    ) -> list[RunFailure]:
        """Handle messages until every run is closed; return the failures.

        Args:
            tasks: A handle of each running task (future, object ref) -> its run.
            finished: Which of the given handles have finished (without waiting).
            error_of: The error a finished task died of (not one its run raised, which
                comes as a message), or None.
            reason: The failure recorded for runs still open when all tasks returned.
        """
        while self.open_runs:
            self.drain(timeout=0.2)
            for handle in finished(list(tasks)) if tasks else ():
                spec = tasks.pop(handle)
                error = error_of(handle)
                if error is not None:
                    self._crashed(spec, error)
            if not tasks and self.open_runs:
                self._ended(reason)
        return self.failures

    def _crashed(self, spec: RunSpec, error: BaseException) -> None:
        """A task died: keep the rows it sent, then record its run as failed if still open."""
        self.drain(timeout=0.5)
        if spec.name in self.open_runs:
            self.failures.append(_failure(spec, error))
            self.open_runs.discard(spec.name)

    def _ended(self, reason: str) -> None:
        """Every task returned: their last rows may still be queued; runs left open failed."""
        self.drain(timeout=1.0)
        for name in sorted(self.open_runs):
            self.failures.append(RunFailure(name, reason, ""))
        self.open_runs.clear()


class _Immediate:
    """The inline backend's queue: each message is handled as it is put."""

    def __init__(self, handle: Callable[[Message], None]):
        self.put = handle


# --------------------------------------------------------------------------- backends


def run_inline(pending: list[RunSpec], out: Path, write: Emit, threads: int) -> list[RunFailure]:
    """Execute ``pending`` one after another in this process; return the failed runs."""
    import torch

    collector = _Collector(None, write, pending)
    messages = _Immediate(collector.handle)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for spec in pending:
            run_task(spec, out, messages)
    finally:
        torch.set_num_threads(previous)
    return collector.failures


def uses_cuda(device: object) -> bool:
    """Whether an env ``device`` setting may train on a GPU (``cuda``, ``cuda:N``, ``auto``)."""
    return str(device).startswith("cuda") or device == "auto"


def worker_device(device: object, worker: int, gpus: int) -> str | None:
    """The device worker number ``worker`` uses when ``gpus`` GPUs are visible.

    Workers take the GPUs in turn (``cuda:worker % gpus``), so N workers spread over
    the GPUs instead of all using GPU 0. A suite that names a GPU (``cuda:1``), asks
    for the CPU, or runs where fewer than two GPUs are visible keeps its setting
    (None).
    """
    if gpus < 2 or device not in ("cuda", "auto"):
        return None
    return f"cuda:{worker % gpus}"


# Worker-process state (set by the pool initializer).
_WORKER_QUEUE: Any = None
_PARENT_PID: int | None = None
_WORKER_INDEX: int = 0


def _init_worker(messages: Any, threads: int, parent_pid: int, counter: Any) -> None:
    global _WORKER_QUEUE, _PARENT_PID, _WORKER_INDEX
    _WORKER_QUEUE = messages
    _PARENT_PID = parent_pid
    with counter.get_lock():
        _WORKER_INDEX = counter.value
        counter.value += 1
    die_with_parent()
    import torch

    torch.set_num_threads(threads)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the parent dies (no orphan keeps running)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())


def _pool_task(spec: RunSpec, out: str) -> int:
    # a multiprocessing queue reaches a worker only when the worker starts (initializer),
    # not as an argument of each task
    device = spec.env_kwargs.get("device", "cpu")
    gpus = 0
    if uses_cuda(device):  # a spawned worker may look at CUDA; the parent never does
        import torch

        gpus = torch.cuda.device_count()
    return run_task(
        spec, out, _WORKER_QUEUE, parent_pid=_PARENT_PID,
        device=worker_device(device, _WORKER_INDEX, gpus),
    )


def run_pool(pending: list[RunSpec], out: Path, write: Emit, workers: int, threads: int) -> list[RunFailure]:
    """Execute ``pending`` in ``workers`` spawned processes; return the failed runs."""
    if not pending:
        return []
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    collector = _Collector(messages, write, pending)
    with cf.ProcessPoolExecutor(
        max_workers=min(workers, len(pending)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(messages, threads, os.getpid(), ctx.Value("i", 0)),
    ) as pool:
        futures = {pool.submit(_pool_task, spec, str(out)): spec for spec in pending}
        return collector.watch(
            futures,
            finished=lambda handles: [f for f in handles if f.done()],
            error_of=lambda future: future.exception(),  # the worker process died
            reason="worker ended without a result",
        )


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise BenchmarkError(
            "--backend ray needs Ray, which is not installed. Install the `ray` extra: "
            "pip install 'lossagent-env[ray]'"
        ) from e
    return ray


def check_backend(backend: str, ray_address: str | None) -> None:
    """Refuse a backend name not in :data:`BACKENDS`, and a Ray address without Ray.

    Raises:
        ValueError: The message names the value and what is allowed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed. Allowed: {BACKENDS}")
    if ray_address is not None and backend != "ray":
        raise ValueError(
            f"A Ray address ({ray_address!r}, --ray-address) is used only by the ray backend, "
            f"and the backend is {backend!r}. Add --backend ray, or leave out the address."
        )


def start_ray(address: str | None, cpus: int, timeout: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Connect to Ray unless it already runs: to ``address``, or a local cluster of
    ``cpus`` CPUs. Returns True if this call started it (and should shut it down).

    Args:
        address: A Ray address (``host:port``, ``ray://host:port``, ``auto``), or None.
        cpus: CPUs of the local cluster started when ``address`` is None.
        timeout: Seconds to wait for the cluster at ``address``
            (:data:`RAY_CONNECT_TIMEOUT_S`).

    Raises:
        BenchmarkError: Ray is not installed, or the cluster at ``address`` refuses the
            connection, fails, or does not answer within ``timeout`` seconds.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address:
        _connect_ray(ray, address, timeout)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return True


def _ray_endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address; None for
    the other forms (``auto``)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _connect_ray(ray: Any, address: str, timeout: float) -> None:
    """``ray.init(address=...)``, given up after ``timeout`` seconds.

    Ray itself retries an address that does not answer for many minutes. A ``host:port``
    that refuses a TCP connection fails at once; otherwise ``ray.init`` runs in a
    daemon thread, left behind (it stops with the process) when it does not return in
    time.
    """
    deadline = time.monotonic() + timeout
    failed = f"Cannot connect to the Ray cluster at {address!r}"
    advice = (
        "Check the address (`ray status` on the cluster's head node prints it) and that "
        "the cluster runs, or leave out --ray-address to start a local cluster."
    )
    endpoint = _ray_endpoint(address)
    if endpoint is not None:
        try:
            socket.create_connection(endpoint, timeout=timeout).close()
        except OSError as e:
            reason = "no answer" if isinstance(e, TimeoutError) else e.strerror or str(e)
            raise BenchmarkError(f"{failed}: {reason} (waited up to {timeout:g} s). {advice}") from None
    errors: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, log_to_driver=False)
        except BaseException as e:  # handed to the caller below
            errors.append(e)

    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise BenchmarkError(f"{failed}: no answer within {timeout:g} s. {advice}")
    if errors:
        error = errors[0]
        raise BenchmarkError(f"{failed}: {type(error).__name__}: {error}. {advice}") from error


def ray_gpus(pending: list[RunSpec], resources: dict[str, float], threads: int, cpus: int) -> float:
    """The GPUs each Ray task asks for: a share of the cluster's GPUs when the runs may
    use CUDA (``cuda``/``auto``), so that the tasks running at once split them; else 0.

    Ray shows a task only the GPUs it asked for (``CUDA_VISIBLE_DEVICES``): a task that
    asks for none cannot use CUDA even where the machine has GPUs.

    Raises:
        BenchmarkError: The runs need CUDA (``cuda``) but the cluster has no GPU.
    """
    devices = {str(spec.env_kwargs.get("device", "cpu")) for spec in pending}
    if not any(uses_cuda(d) for d in devices):
        return 0.0
    gpus = float(resources.get("GPU", 0.0))
    if gpus <= 0:
        if any(d.startswith("cuda") for d in devices):
            raise BenchmarkError(
                f"The suite trains on {sorted(devices)} but the Ray cluster has no GPU "
                f"(resources: {dict(resources)}). Start Ray workers with GPUs, or use device='auto'."
            )
        return 0.0
    at_once = max(1, min(len(pending), cpus // max(1, threads)))  # tasks running together
    return min(1.0, gpus / at_once)


def run_ray(
    pending: list[RunSpec], out: Path, write: Emit, threads: int, address: str | None
) -> list[RunFailure]:
    """Execute ``pending`` as Ray tasks of ``threads`` CPUs each; return the failed runs.

    Raises:
        BenchmarkError: Ray is not installed.
    """
    ray = import_ray()
    from ray.util.queue import Queue

    if not pending:
        return []
    started_here = start_ray(address, threads_per_worker(1))
    try:
        messages = Queue()
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        if threads > cluster_cpus:  # a task asking for more CPUs than exist never starts
            logger.warning(
                "Ray cluster has %d CPUs; running %d threads per task.", cluster_cpus, cluster_cpus
            )
            threads = max(1, cluster_cpus)
        task = ray.remote(num_cpus=threads, num_gpus=ray_gpus(pending, ray.cluster_resources(), threads, cluster_cpus))(run_task)
        refs = {task.remote(spec, str(out.resolve()), messages, threads): spec for spec in pending}

        def error_of(ref: Any) -> BaseException | None:
            try:
                ray.get(ref)
            except Exception as e:  # the task itself crashed (worker died)
                return e
            return None

        collector = _Collector(messages, write, pending)
        return collector.watch(
            refs,
            finished=lambda handles: ray.wait(handles, timeout=0, num_returns=len(handles))[0],
            error_of=error_of,
            reason="Ray task ended without a result",
        )
    finally:
        if started_here:
            ray.shutdown()
