"""The executor: one task mapped over many items, inline, in a process pool or on Ray.

``lossagent bench`` (a task per run, :func:`benchmarks.execution.runs.run_task`) and ``lossagent
tabulate`` (a task per unit of a table, :mod:`benchmarks.execution.tabulate`) both run their work
here, so the two commands share one way to start workers, give them GPUs, stream their
messages back and notice a worker that died.

A task is a module-level function ``task(item, context) -> result`` (picklable, so that
it can run in another process). While it runs it may send messages with
``context.send(payload)``; its return value is its result. In the calling process,
:meth:`Executor.map` hands every message to ``on_message(key, payload)`` and every
result to ``on_result(key, result)``, in the order the task produced them (one queue
carries both), and returns a :class:`TaskFailure` for each task that raised or whose
worker died. A failed task does not stop the others.

Backends: ``inline`` (``workers=1``, ``local``: in this process, messages handled as
they are sent), ``pool`` (``workers=N``, ``local``: N spawned processes that die with
their parent) and ``ray`` (Ray tasks; a local cluster is started and shut down here
unless ``ray_address`` names one). Each task runs ``threads`` torch threads; GPUs are
shared out as docs/benchmarks.md ("Workers, threads and devices", "Ray") says.

Start the executor before creating any output (``with Executor(...) as executor:``), so
that a Ray cluster that does not answer leaves nothing behind.
"""

from __future__ import annotations

import concurrent.futures as cf
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
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from benchmarks.errors import BenchmarkError
from lossagent_env.cpus import available_cpus

__all__ = [
    "BACKENDS",
    "RAY_CONNECT_TIMEOUT_S",
    "Context",
    "Executor",
    "TaskFailure",
    "check_backend",
    "ray_gpus",
    "threads_per_worker",
    "worker_device",
]

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
"""Values of ``backend``: ``local`` runs inline or in a process pool, ``ray`` on Ray."""

RAY_CONNECT_TIMEOUT_S = 60.0
"""Seconds :class:`Executor` waits for the Ray cluster at a given address before it gives up."""

Item = TypeVar("Item")
Result = TypeVar("Result")
K = TypeVar("K", bound=Hashable)
Key = Hashable
Message = tuple[str, Any, Any]
"""``(kind, key, payload)`` with kind ``message``, ``result`` or ``failure``."""


class _Queue(Protocol):
    def put(self, message: Message) -> None: ...


@dataclass(frozen=True)
class TaskFailure:
    """A task that raised, or whose worker died: its key, the one-line error and the traceback."""

    key: Any
    error: str
    traceback: str


def threads_per_worker(workers: int) -> int:
    """``max(1, cores // workers)``: torch threads for each of ``workers`` processes."""
    return max(1, available_cpus() // workers)


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


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed. Allowed: an integer >= 1")


def uses_cuda(device: object) -> bool:
    """Whether an env ``device`` setting may train on a GPU (``cuda``, ``cuda:N``, ``auto``)."""
    return str(device).startswith("cuda") or device == "auto"


def worker_device(device: object, worker: int, gpus: int) -> str | None:
    """The device worker number ``worker`` uses when ``gpus`` GPUs are visible.

    Workers take the GPUs in turn (``cuda:worker % gpus``), so N workers spread over
    the GPUs instead of all using GPU 0. Tasks that name a GPU (``cuda:1``), ask for
    the CPU, or run where fewer than two GPUs are visible keep their setting (None).
    """
    if gpus < 2 or device not in ("cuda", "auto"):
        return None
    return f"cuda:{worker % gpus}"


def ray_gpus(device: str, tasks: int, resources: dict[str, float], threads: int, cpus: int) -> float:
    """The GPUs each Ray task asks for: a share of the cluster's GPUs when the tasks may
    use CUDA (``cuda``/``auto``), so that the tasks running at once split them; else 0.

    Raises:
        BenchmarkError: The tasks need CUDA (``cuda``) but the cluster has no GPU.
    """
    if not uses_cuda(device):
        return 0.0
    gpus = float(resources.get("GPU", 0.0))
    if gpus <= 0:
        if str(device).startswith("cuda"):
            raise BenchmarkError(
                f"The tasks train on {device!r} but the Ray cluster has no GPU (resources: "
                f"{dict(resources)}). Start Ray workers with GPUs, or use device='auto'."
            )
        return 0.0
    at_once = max(1, min(tasks, cpus // max(1, threads)))  # tasks running together
    return min(1.0, gpus / at_once)


# --------------------------------------------------------------------------- in the worker


class Context:
    """What a task gets besides its item.

    Attributes:
        key: The task's key.
        device: The device this worker should train on instead of the configured one
            (a GPU of its own), or None to keep the configured device.
    """

    def __init__(self, key: Key, messages: _Queue, *, device: str | None = None, parent_pid: int | None = None):
        self.key = key
        self.device = device
        self._messages = messages
        self._parent_pid = parent_pid

    def send(self, payload: Any) -> None:
        """Send ``payload`` to the caller's ``on_message`` now.

        Raises:
            SystemExit: In a pool worker whose parent is gone (the benchmark was killed).
        """
        if self._parent_pid is not None and os.getppid() != self._parent_pid:
            raise SystemExit("the process that started this task is gone; stopping")
        self._messages.put(("message", self.key, payload))


def _call(task: Callable[[Any, Context], Any], key: Key, item: Any, context: Context) -> None:
    """Run one task; its result or its failure goes on the same queue as its messages."""
    try:
        result = task(item, context)
    except Exception as e:  # recorded by the caller; the other tasks go on
        context._messages.put(("failure", key, _failure(key, e)))
        return
    context._messages.put(("result", key, result))


def _failure(key: Key, error: BaseException) -> TaskFailure:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return TaskFailure(key, f"{type(error).__name__}: {error}", text)


# Pool-worker state, set by the pool's initializer.
_WORKER: dict[str, Any] = {}


def _init_worker(messages: Any, threads: int, parent_pid: int, counter: Any, device: str) -> None:
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    die_with_parent()
    import torch

    torch.set_num_threads(threads)
    gpus = torch.cuda.device_count() if uses_cuda(device) else 0  # the parent never looks at CUDA
    _WORKER.update(messages=messages, parent_pid=parent_pid, device=worker_device(device, index, gpus))


def _pool_call(task: Callable[[Any, Context], Any], key: Key, item: Any) -> None:
    # a multiprocessing queue reaches a worker when it starts (initializer), not per task
    context = Context(key, _WORKER["messages"], device=_WORKER["device"], parent_pid=_WORKER["parent_pid"])
    _call(task, key, item, context)


def _ray_call(task: Callable[[Any, Context], Any], key: Key, item: Any, messages: Any, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _call(task, key, item, Context(key, messages))


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the parent dies (no orphan keeps running)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())


# --------------------------------------------------------------------------- in the caller


class _Collector:
    """The caller's end of the queue: hands on messages and results, records failures.

    Attributes:
        open: Keys without a result or failure yet.
        failures: The failed tasks, in the order their failure was seen.
    """

    def __init__(
        self,
        messages: Any,
        keys: Iterable[Key],
        on_message: Callable[[Key, Any], None],
        on_result: Callable[[Key, Any], None],
    ):
        self.messages = messages
        self.open = set(keys)
        self.failures: list[TaskFailure] = []
        self._on_message = on_message
        self._on_result = on_result

    def handle(self, message: Message) -> None:
        kind, key, payload = message
        if kind == "message":
            self._on_message(key, payload)
            return
        self.open.discard(key)
        if kind == "failure":
            self.failures.append(payload)
        else:
            self._on_result(key, payload)

    put = handle
    """Inline (no queue), the collector is the tasks' queue: each message is handled as it is put."""

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
        running: dict[Any, Key],
        finished: Callable[[list[Any]], Iterable[Any]],
        error_of: Callable[[Any], BaseException | None],
        reason: str,
    ) -> list[TaskFailure]:
        """Handle messages until every task is closed; return the failures.

        Args:
            running: A handle of each running task (future, object ref) -> its key.
            finished: Which of the given handles have finished (without waiting).
            error_of: The error a finished task's worker died of (not one the task
                raised, which comes as a message), or None.
            reason: The failure recorded for tasks still open when all handles returned.
        """
        while self.open:
            self.drain(timeout=0.2)
            for handle in finished(list(running)) if running else ():
                key = running.pop(handle)
                error = error_of(handle)
                if error is not None:
                    self._crashed(key, error)
            if not running and self.open:
                self.drain(timeout=1.0)  # their last messages may still be queued
                for key in sorted(self.open, key=repr):
                    self.failures.append(TaskFailure(key, reason, ""))
                self.open.clear()
        return self.failures

    def _crashed(self, key: Key, error: BaseException) -> None:
        """A worker died: keep the messages it sent, then fail its task if still open."""
        self.drain(timeout=0.5)
        if key in self.open:
            self.failures.append(_failure(key, error))
            self.open.discard(key)


class Executor:
    """Runs tasks on a backend; a context manager that starts and stops Ray.

    Args:
        backend: ``"local"`` or ``"ray"``.
        workers: Tasks at once (processes for ``local``; the local cluster's size, in
            units of ``threads`` CPUs, for ``ray``).
        threads: torch threads (and Ray CPUs) of each task; default
            :func:`threads_per_worker`.
        device: The tasks' env device setting (for the GPU assignment).
        ray_address: A Ray cluster (``host:port``, ``ray://host:port``, ``auto``);
            None starts a local one. ``backend="ray"`` only.
        ray_timeout: Seconds to wait for the cluster at ``ray_address``.

    Raises:
        ValueError: A setting is not allowed (the message names it).
    """

    def __init__(
        self,
        backend: str = "local",
        *,
        workers: int = 1,
        threads: int | None = None,
        device: str = "cpu",
        ray_address: str | None = None,
        ray_timeout: float = RAY_CONNECT_TIMEOUT_S,
    ):
        _check_count("workers", workers)
        check_backend(backend, ray_address)
        if threads is not None:
            _check_count("threads", threads)
        self.backend = backend
        self.workers = workers
        self.threads = threads if threads is not None else threads_per_worker(workers)
        self.device = str(device)
        self.ray_address = ray_address
        self.ray_timeout = ray_timeout
        self._ray_started_here = False

    def __enter__(self) -> Executor:
        if self.backend == "ray":
            self._ray_started_here = start_ray(
                self.ray_address, self.workers * self.threads, timeout=self.ray_timeout
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ray_started_here:
            import_ray().shutdown()
            self._ray_started_here = False

    def map(
        self,
        task: Callable[[Item, Context], Result],
        items: Sequence[tuple[K, Item]],
        *,
        on_message: Callable[[K, Any], None] = lambda key, payload: None,
        on_result: Callable[[K, Result], None] = lambda key, result: None,
    ) -> list[TaskFailure]:
        """Run ``task`` on every ``(key, item)``; return the failures (keys are unique).

        ``on_message`` and ``on_result`` run in this process. An exception they raise
        stops the map: tasks not started are cancelled, and it propagates.
        """
        if not items:
            return []
        if self.backend == "ray":
            return self._map_ray(task, items, on_message, on_result)
        if self.workers == 1:
            return self._map_inline(task, items, on_message, on_result)
        return self._map_pool(task, items, on_message, on_result)

    def _map_inline(self, task: Callable, items: Sequence[tuple[Key, Any]], on_message: Callable, on_result: Callable) -> list[TaskFailure]:
        import torch

        collector = _Collector(None, (k for k, _ in items), on_message, on_result)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for key, item in items:
                _call(task, key, item, Context(key, collector))
        finally:
            torch.set_num_threads(previous)
        return collector.failures

    def _map_pool(self, task: Callable, items: Sequence[tuple[Key, Any]], on_message: Callable, on_result: Callable) -> list[TaskFailure]:
        ctx = mp.get_context("spawn")
        messages = ctx.Queue()
        collector = _Collector(messages, (k for k, _ in items), on_message, on_result)
        pool = cf.ProcessPoolExecutor(
            max_workers=min(self.workers, len(items)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(messages, self.threads, os.getpid(), ctx.Value("i", 0), self.device),
        )
        try:
            futures = {pool.submit(_pool_call, task, key, item): key for key, item in items}
            failures = collector.watch(
                futures,
                finished=lambda handles: [f for f in handles if f.done()],
                error_of=lambda future: future.exception(),  # the worker process died
                reason="worker ended without a result",
            )
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        # Every task has its result or failure: the idle workers exit while the caller goes
        # on (joining them took 1.3 s with 2 workers; the interpreter joins them at exit).
        pool.shutdown(wait=False)
        return failures

    def _map_ray(self, task: Callable, items: Sequence[tuple[Key, Any]], on_message: Callable, on_result: Callable) -> list[TaskFailure]:
        ray = import_ray()
        from ray.util.queue import Queue

        started_here = start_ray(self.ray_address, self.workers * self.threads, timeout=self.ray_timeout)
        try:
            resources = ray.cluster_resources()
            cpus = int(resources.get("CPU", 1))
            threads = self.threads
            if threads > cpus:  # a task asking for more CPUs than exist never starts
                logger.warning("Ray cluster has %d CPUs; running %d threads per task.", cpus, cpus)
                threads = max(1, cpus)
            gpus = ray_gpus(self.device, len(items), resources, threads, cpus)
            messages = Queue()
            remote = ray.remote(num_cpus=threads, num_gpus=gpus)(_ray_call)
            refs = {remote.remote(task, key, item, messages, threads): key for key, item in items}

            def error_of(ref: Any) -> BaseException | None:
                try:
                    ray.get(ref)
                except Exception as e:  # the task's worker died
                    return e
                return None

            collector = _Collector(messages, (k for k, _ in items), on_message, on_result)
            try:
                return collector.watch(
                    refs,
                    finished=lambda handles: ray.wait(handles, timeout=0, num_returns=len(handles))[0],
                    error_of=error_of,
                    reason="Ray task ended without a result",
                )
            except BaseException:
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started_here:
                ray.shutdown()


# --------------------------------------------------------------------------- Ray


def import_ray() -> Any:
    """``import ray``, or a :class:`BenchmarkError` that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise BenchmarkError(
            "--backend ray needs Ray, which is not installed. Install the `ray` extra: "
            "pip install 'lossagent-env[ray]'"
        ) from e
    return ray


def start_ray(address: str | None, cpus: int, timeout: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Connect to Ray unless it already runs: to ``address``, or a local cluster of
    ``cpus`` CPUs. Returns True if this call started it (and should shut it down).

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
