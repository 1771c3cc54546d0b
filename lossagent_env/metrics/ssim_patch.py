"""Patch ``separable_ssim``: pyiqa's SSIM filters float64 images as two 1-D passes.

pyiqa computes the SSIM metric (and MS-SSIM) in float64, where torch's 2-D convolution
has no fast kernel: its five window filters were two thirds of a table node's evaluation
(15 ms each for 3 crops of 128 px, 0.75 ms as two 1-D passes). The patch replaces
pyiqa's private ``pyiqa.archs.ssim_arch.filter2``, for the whole process, by one that
applies a rank-one window (pyiqa's Gaussian ``fspecial`` is one) as a column then a row
filter, to float32 precision, the precision pyiqa builds the window in: the scores agree
to 1e-8 (tested). Only float64 inputs with ``shape="valid"`` take this path, so the SSIM
losses, which call the same pyiqa function in float32, train exactly as before.

It applies only on the pyiqa release it was tested with (:data:`TESTED_VERSION`,
pinned in ``constraints.txt``) whose ``ssim_arch`` is as it expects (:func:`why_not`).
Where it cannot apply, the metrics run pyiqa's own filter (the same scores, slower) and
:func:`apply` logs one warning line naming the patch, the release and why.
"""

from __future__ import annotations

import inspect
import logging
from importlib import metadata

import torch

from lossagent_env.once import warn_once

__all__ = ["NAME", "TESTED_VERSION", "apply", "installed_version", "why_not"]

logger = logging.getLogger(__name__)

NAME = "separable_ssim"
TESTED_VERSION = "0.1.16"
"""The pyiqa release the patch was tested with (``constraints.txt`` pins it)."""

def installed_version() -> str | None:
    """The installed pyiqa release (None where pyiqa has no package metadata)."""
    try:
        return metadata.version("pyiqa")
    except metadata.PackageNotFoundError:
        return None


def why_not() -> str | None:
    """Why the patch cannot apply here, or None when it can: the release must be
    :data:`TESTED_VERSION`, ``ssim_arch.filter2`` must take ``(input, weight, shape)``,
    and ``ssim_arch.ssim`` must call it by that name."""
    version = installed_version()
    if version is None:
        return "pyiqa's release cannot be read (no package metadata)"
    if version != TESTED_VERSION:
        return f"pyiqa {version} is not {TESTED_VERSION}, the release it was tested with"
    from pyiqa.archs import ssim_arch

    stock = getattr(ssim_arch, "filter2", None)
    parameters = list(inspect.signature(stock).parameters) if callable(stock) else None
    if parameters != ["input", "weight", "shape"]:
        return f"pyiqa {version} lacks or has changed ssim_arch.filter2(input, weight, shape)"
    if "filter2(" not in inspect.getsource(ssim_arch.ssim):
        return f"pyiqa {version}'s ssim_arch.ssim no longer calls filter2"
    return None


def apply() -> str | None:
    """Install the patch in this process where it can apply (again, if pyiqa's filter was
    put back); None where it is installed, else why not, said in one warning line the
    first time (pyiqa's own filter then runs)."""
    from pyiqa.archs import ssim_arch

    if getattr(ssim_arch.filter2, "separable", False):  # installed, and not put back since
        return None
    reason = why_not()
    if reason is None:
        _install()
    else:
        warn_once(logger, f"pyiqa patch {NAME} not applied ({reason}): the SSIM metrics run pyiqa's own, slower "
                          f"filter. Install pyiqa=={TESTED_VERSION} (constraints.txt) to apply it.")
    return reason


def rank_one(window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(column, row)`` filters whose product is ``window`` (``(C, 1, k, k)``, every
    channel's window rank one), or None."""
    if window.dim() != 4 or window.shape[1] != 1 or window.shape[-1] != window.shape[-2]:
        return None
    middle = window.shape[-1] // 2
    pivot = window[:, :, middle : middle + 1, middle : middle + 1]
    if not bool((pivot != 0).all()):
        return None
    column = window[:, :, :, middle : middle + 1]  # (C, 1, k, 1)
    row = window[:, :, middle : middle + 1, :] / pivot  # (C, 1, 1, k)
    # pyiqa builds the window in float32: rank one to float32 precision is rank one
    if not torch.allclose(column * row, window, rtol=0.0, atol=1e-6 * float(window.abs().max())):
        return None
    return column, row


def _install() -> None:
    from pyiqa.archs import ssim_arch

    stock = ssim_arch.filter2
    if getattr(stock, "separable", False):
        return

    def filter2(input: torch.Tensor, weight: torch.Tensor, shape: str = "same") -> torch.Tensor:
        factors = rank_one(weight) if shape == "valid" and input.dtype == torch.float64 else None
        if factors is None:
            return stock(input, weight, shape)
        column, row = factors
        groups = input.shape[1]
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(input, column, groups=groups), row, groups=groups)

    filter2.separable = True  # type: ignore[attr-defined]
    ssim_arch.filter2 = filter2
