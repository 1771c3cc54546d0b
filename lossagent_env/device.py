"""Device names: the one place that checks and resolves ``"cpu"``, ``"cuda[:N]"``, ``"auto"``.

:func:`check_device` checks the spelling only and never touches CUDA, so a config can be
validated in a process that must not initialise CUDA (the parent of forked workers).
:func:`resolve_device` turns a name into a ``torch.device`` and checks that it exists.
"""

from __future__ import annotations

import re

import torch

__all__ = ["DEVICES", "check_device", "resolve_device"]

DEVICES = ("cpu", "cuda", "auto")
"""Device names besides ``"cuda:N"``."""

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def check_device(device: object, what: str = "device") -> str:
    """``device`` as a string if it is spelled right, without touching CUDA.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N a non-negative integer),
            ``"auto"``, or a ``torch.device`` of type cpu or cuda.
        what: How error messages name the value (e.g. ``"EnvConfig.device"``).

    Raises:
        ValueError: Any other value; the message names it and what is allowed.
    """
    text = str(device) if isinstance(device, (str, torch.device)) else None
    if text is not None and (text in DEVICES or _CUDA_INDEX.fullmatch(text)):
        return text
    raise ValueError(
        f"{what}={device!r} is not supported. Allowed: 'cpu', 'cuda', 'cuda:N' "
        "(N = 0, 1, ... a GPU index) or 'auto' (CUDA when available, else CPU)."
    )


def resolve_device(device: object, what: str = "device") -> torch.device:
    """The ``torch.device`` named by ``device``; ``"auto"`` is CUDA when available.

    Raises:
        ValueError: A misspelled name, CUDA asked for where there is none, or a GPU
            index that does not exist here (the message says how many there are).
    """
    text = check_device(device, what)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"{what}={text!r} was asked for, but CUDA is not available here. Allowed on this machine: 'cpu' or 'auto'."
        )
    match = _CUDA_INDEX.fullmatch(text)
    count = torch.cuda.device_count()
    if match and int(match.group(1)) >= count:
        raise ValueError(
            f"{what}={text!r} names GPU {match.group(1)}, but this machine has {count} (indices 0 to {count - 1})."
        )
    return torch.device(text)
