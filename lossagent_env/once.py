"""A warning a process says once, however often its cause is met again."""

from __future__ import annotations

import logging
import threading

__all__ = ["warn_once"]

_said: set[str] = set()
_lock = threading.Lock()


def warn_once(logger: logging.Logger, line: str) -> None:
    """Log ``line`` on ``logger`` as a warning, the first time this process meets it."""
    with _lock:
        if line in _said:
            return
        _said.add(line)
    logger.warning("%s", line)
