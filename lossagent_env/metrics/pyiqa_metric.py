"""Metric objects built from pyiqa, created once per (name, device) and reused."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading

import torch

from lossagent_env.device import resolve_device
from lossagent_env.metrics import ssim_patch
from lossagent_env.metrics.catalogue import MetricInfo, catalogue, metric_info

__all__ = ["Metric", "clear_cache", "create_metric", "usable_metrics"]

logger = logging.getLogger(__name__)

_CACHE: dict[tuple[str, str], Metric] = {}
_CACHE_LOCK = threading.Lock()


class Metric:
    """One image-quality metric, callable on batches of images.

    ``metric(restored, target)`` returns one score per image, a float32 tensor of
    shape ``(N,)`` on the CPU. Inputs are ``(N, C, H, W)`` with ``C`` 1 or 3 and values
    in ``[0, 1]``; the restored batch is clamped into ``[0, 1]`` first (as saving the
    image would), the target is checked. No-reference metrics ignore ``target``.
    Which way is better is ``metric.info.lower_better``. Gradients are not tracked.

    Attributes:
        info: The catalogue entry (direction, bounds, description).
        device: Where the metric computes.
        model: The pyiqa ``InferenceModel``.
    """

    def __init__(self, info: MetricInfo, model: torch.nn.Module, device: torch.device):
        self.info = info
        self.model = model
        self.device = device

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, device={str(self.device)!r})"

    def __call__(self, restored: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Score ``restored`` (against ``target``, required for full-reference metrics).

        Raises:
            ValueError: Wrong shape, non-finite values, target missing or out of
                ``[0, 1]``, or images smaller than ``info.min_size``.
        """
        _check_images("restored", restored)
        n, _, height, width = restored.shape
        if min(height, width) < self.info.min_size:
            raise ValueError(
                f"Metric {self.name!r} needs images of at least {self.info.min_size}x{self.info.min_size} px; "
                f"got {height}x{width}. Use larger evaluation images or another metric."
            )
        restored = restored.detach().to(self.device, torch.float32).clamp(0.0, 1.0)
        with torch.no_grad():
            if self.info.full_reference:
                if target is None:
                    raise ValueError(f"Metric {self.name!r} compares with a target; got target=None.")
                _check_images("target", target)
                if target.shape != restored.shape:
                    raise ValueError(
                        f"target has shape {tuple(target.shape)} but restored has {tuple(restored.shape)}; "
                        "they must be equal."
                    )
                if target.min() < 0 or target.max() > 1:
                    raise ValueError(
                        f"target values must be in [0, 1]; got [{target.min().item():.4g}, {target.max().item():.4g}]."
                    )
                scores = self.model(restored, target.detach().to(self.device, torch.float32))
            else:
                scores = self.model(restored)
        scores = torch.as_tensor(scores).detach().reshape(-1).to("cpu", torch.float32)
        if scores.numel() != n:
            raise RuntimeError(f"Metric {self.name!r} returned {scores.numel()} scores for {n} images.")
        return scores


def _check_images(label: str, images: object) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{label} must be a torch.Tensor (N, C, H, W); got {type(images).__name__}.")
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            f"{label} must have shape (N, C, H, W) with N >= 1 and C in (1, 3); got {tuple(images.shape)}."
        )
    if not torch.isfinite(images).all():
        raise ValueError(f"{label} contains non-finite values (NaN or inf); metrics need finite images in [0, 1].")


def create_metric(name: str, device: str | torch.device = "cpu") -> Metric:
    """The metric ``name`` (a pyiqa name) on ``device`` (``"cpu"``, ``"cuda[:N]"``, ``"auto"``),
    built once per ``(name, device)``: a second call returns the same object.

    pyiqa's real constructor runs inside :func:`lossagent_env.assets.no_downloads`, so
    a missing weight file raises before any download is attempted. pyiqa's SSIM metrics
    run with the patch of :mod:`~lossagent_env.metrics.ssim_patch` where it applies.

    Raises:
        KeyError: Unknown name (with a "Did you mean" hint).
        ValueError: A set-level metric (FID, Inception Score), or a bad device.
        MissingWeightsError: A weight file the metric needs is not installed.
    """
    from lossagent_env.assets import no_downloads

    info = metric_info(name)
    if info.set_level:
        raise ValueError(
            f"Metric {name!r} compares sets of images, not single images, so it cannot score a stage. "
            "Allowed: per-image metrics (see lossagent_env.metrics.usable_metrics())."
        )
    dev = resolve_device(device)
    key = (name, str(dev))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    import pyiqa

    ssim_patch.apply()
    # Built outside the cache lock (no_downloads holds its own); a metric two threads
    # build at once is built twice and the first one stored wins.
    # pyiqa prints what it loads, and torch.hub announces "Downloading: ..." on stderr
    # just before the refused download: both go to the debug log, other stderr stays.
    printed, errors = io.StringIO(), io.StringIO()
    try:
        with (
            no_downloads(f"metric {name!r}", asset=name),
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(errors),
        ):
            model = pyiqa.create_metric(name, as_loss=False, device=dev)
    finally:
        _relay(printed.getvalue(), errors.getvalue())
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, Metric(info, model, dev))


def _relay(printed: str, errors: str) -> None:
    for line in printed.splitlines():
        if line.strip():
            logger.debug("pyiqa: %s", line.strip())
    for line in errors.splitlines(keepends=True):
        if line.startswith("Downloading: "):
            logger.debug("refused: %s", line.strip())
        else:
            sys.stderr.write(line)


def clear_cache() -> None:
    """Forget every created metric (tests; after installing weights in a running process)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def usable_metrics() -> list[str]:
    """Metric names that work offline now, sorted.

    A metric is usable if it needs no weight file, or if it has an entry in
    :data:`lossagent_env.assets.ASSETS` whose files are all installed. Set-level
    metrics (FID) are left out.
    """
    from lossagent_env.assets import ASSETS

    usable = []
    for name, info in catalogue().items():
        if info.set_level:
            continue
        if not info.needs_weights or (name in ASSETS and ASSETS.get(name).usable_offline()):
            usable.append(name)
    return sorted(usable)
