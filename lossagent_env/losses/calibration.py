"""Measuring loss scales: how strongly a loss pulls on a network, relative to ``l1``.

A loss's ``scale`` is the median over batches of shipped photographs of
``||grad l1|| / ||grad loss||`` on a tiny seeded restoration network; the method and
the measured ratios of the offline losses are in docs/env.md ("The loss repository").
Losses with downloaded weights are measured the same way when they are built.
"""

from __future__ import annotations

import functools
import logging
import statistics
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lossagent_env.losses._util import conv_without_init, init_convs_
from lossagent_env.losses.base import LOSSES, Loss

__all__ = ["TinyRestorer", "gradient_ratio", "measure_scale", "measure_scales", "photo_batches"]

logger = logging.getLogger(__name__)

_PHOTOS = ("astronaut", "chelsea", "coffee")


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[torch.Tensor, ...]:
    """The shipped RGB photographs as float32 ``(3, H, W)`` tensors in ``[0, 1]``."""
    import skimage.data

    images = []
    for name in _PHOTOS:
        array = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
        images.append(torch.from_numpy(array).permute(2, 0, 1).float().div(255.0))
    return tuple(images)


def photo_batches(
    num_batches: int, batch_size: int = 4, patch_size: int = 32, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num_batches`` pairs ``(degraded, target)``, both ``(batch_size, 3, patch_size,
    patch_size)`` in ``[0, 1]``: random crops of shipped photos (photos and positions drawn
    from ``seed``; ``patch_size`` even), and the crops downscaled 2x and upscaled back
    (bicubic), i.e. blurred."""
    if patch_size < 4 or patch_size % 2:
        raise ValueError(f"patch_size must be an even integer >= 4; got {patch_size!r}.")
    generator = torch.Generator().manual_seed(seed)
    photos = _photos()
    batches = []
    for _ in range(num_batches):
        patches = []
        for _ in range(batch_size):
            photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
            top = int(torch.randint(photo.shape[1] - patch_size + 1, (1,), generator=generator))
            left = int(torch.randint(photo.shape[2] - patch_size + 1, (1,), generator=generator))
            patches.append(photo[:, top : top + patch_size, left : left + patch_size])
        target = torch.stack(patches)
        small = F.interpolate(target, scale_factor=0.5, mode="bicubic", antialias=True)
        degraded = F.interpolate(small, size=target.shape[-2:], mode="bicubic").clamp(0, 1)
        batches.append((degraded, target))
    return batches


class TinyRestorer(nn.Module):
    """``x + f(x)`` with ``f`` three 3x3 convolutions (32 channels, ReLU); seeded init.

    ``(N, 3, H, W)`` -> ``(N, 3, H, W)``. Hidden layers get He initialisation, the last
    layer N(0, 0.01**2), so the output starts close to the input, as a restoration
    network at the start of training.
    """

    def __init__(self, generator: torch.Generator, channels: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            conv_without_init(3, channels, 3, padding=1),
            nn.ReLU(),
            conv_without_init(channels, channels, 3, padding=1),
            nn.ReLU(),
            conv_without_init(channels, 3, 3, padding=1),
        )
        init_convs_(self.body[:-1], generator, std=None)
        init_convs_(self.body[-1], generator, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _gradient_norm(loss: torch.Tensor, params: list[nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    squares = [g.float().square().sum() for g in grads if g is not None]
    if not squares:
        return 0.0
    return float(torch.stack(squares).sum().sqrt())


def gradient_ratio(
    loss: Loss, net: nn.Module, degraded: torch.Tensor, target: torch.Tensor, reference: Loss | None = None
) -> float:
    """``||grad reference|| / ||grad loss||`` w.r.t. ``net``'s parameters, for ``net(degraded)``
    against ``target`` (``inf`` if ``loss`` has no gradient at all); ``reference`` is the
    loss of scale 1 (``l1`` when None). Everything on one device."""
    reference = reference if reference is not None else LOSSES.get("l1")()
    params = [p for p in net.parameters() if p.requires_grad]
    pred = net(degraded)
    reference_norm = _gradient_norm(reference(pred, target), params)
    loss_norm = _gradient_norm(loss(pred, target), params)
    return reference_norm / loss_norm if loss_norm > 0 else float("inf")


def measure_scale(
    loss: Loss, *, num_batches: int = 25, batch_size: int = 4, patch_size: int = 32, seed: int = 0, warmup: int = 0
) -> float:
    """The median of ``gradient_ratio`` over ``num_batches`` photo batches (see module doc).

    Runs on the device of ``loss``'s parameters or buffers (CPU if it has none).
    Trainable losses are reset from ``seed``, updated ``warmup`` times on extra batches
    before measuring, and updated after each measured batch.

    Raises:
        ValueError: the loss has no finite, nonzero gradient on these batches.
    """
    tensors = [*loss.parameters(), *loss.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    net = TinyRestorer(generator).to(device)
    if loss.trainable:
        loss.reset(torch.Generator().manual_seed(seed))
    batches = photo_batches(num_batches + (warmup if loss.trainable else 0), batch_size, patch_size, seed)
    ratios = []
    for index, (degraded, target) in enumerate(batches):
        degraded, target = degraded.to(device), target.to(device)
        if index >= len(batches) - num_batches:
            ratios.append(gradient_ratio(loss, net, degraded, target))
        if loss.trainable:
            with torch.no_grad():
                pred = net(degraded)
            loss.update(pred, target)
    finite = [r for r in ratios if np.isfinite(r) and r > 0]
    if len(finite) < len(ratios):
        raise ValueError(
            f"Loss {loss.name!r} has no finite nonzero gradient on {len(ratios) - len(finite)} "
            f"of {len(ratios)} calibration batches (ratios {ratios}); it cannot be used "
            "as a training loss."
        )
    return statistics.median(finite)


def measure_scales(names: Iterable[str], **kwargs) -> dict[str, float]:
    """``measure_scale`` for each registered loss in ``names`` (built with defaults)."""
    results = {}
    for name in names:
        results[name] = measure_scale(LOSSES.get(name)(), **kwargs)
        logger.info("scale of %s: %.4g", name, results[name])
    return results
