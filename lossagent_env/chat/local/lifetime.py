"""The server process never outlives the process that started it.

Three paths, from the gentlest:

* ``LocalLLMServer.stop()``, called by the caller, by a ``with`` block, or at the
  interpreter's exit (``atexit``, which also runs after Ctrl-C).
* :func:`stop_servers_on_signals`: a process entry point (the ``lossagent`` command
  line) makes SIGTERM, SIGINT and SIGHUP stop every server of the process and remove
  its folder, then lets the signal do what it did before (by default, end the process).
* :func:`watch_parent`, in the server process itself: when its parent is gone (killed
  with SIGKILL, for instance), it removes its folder and exits within
  :data:`WATCH_INTERVAL_S`. Linux's parent-death signal (``PR_SET_PDEATHSIG``) is not
  used: it fires when the *thread* that started the server ends, and the server may be
  started from a short-lived thread (``lossagent bench`` starts it in the background
  while its pool trains).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

__all__ = ["WATCH_INTERVAL_S", "register", "stop_all_servers", "stop_servers_on_signals", "watch_parent"]

WATCH_INTERVAL_S = 0.25
"""How often the server process checks that its parent is alive."""

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)
"""The signals :func:`stop_servers_on_signals` handles."""


class _Stoppable(Protocol):
    def kill_now(self) -> None: ...


_servers: weakref.WeakSet[Any] = weakref.WeakSet()


def register(server: _Stoppable) -> None:
    """Let :func:`stop_all_servers` stop ``server`` (held weakly)."""
    _servers.add(server)


def stop_all_servers() -> None:
    """Stop every running server started by this process and remove its folder, at once
    and without waiting for locks (safe in a signal handler)."""
    for server in list(_servers):
        server.kill_now()


@contextlib.contextmanager
def stop_servers_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` first stop this process's servers, then act as before.

    A signal whose previous handler is Python code (SIGINT's ``KeyboardInterrupt``) runs
    it; one that had the default action gets it again (SIGTERM ends the process, with
    the status of that signal); an ignored one stays ignored. The previous handlers are
    restored when the block ends. Outside the main thread, nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all_servers()
        before = previous.get(signum, signal.SIG_DFL)
        if callable(before):
            before(signum, frame)
        elif before != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for signum in signals:
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before if before is not None else signal.SIG_DFL)


def watch_parent(parent: int, folder: str | os.PathLike[str], interval: float = WATCH_INTERVAL_S) -> threading.Thread:
    """In the server process: exit, removing ``folder``, as soon as ``parent`` is not its parent.

    The check starts from the pid the parent gave, not from the parent seen now, so a
    parent that died while this process was starting is noticed too.

    Returns:
        The watching (daemon) thread, started.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        shutil.rmtree(Path(folder), ignore_errors=True)
        os._exit(0)

    thread = threading.Thread(target=watch, name="lossagent-parent-watch", daemon=True)
    thread.start()
    return thread
