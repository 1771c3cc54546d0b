"""Pixel-wise losses (``l1``, ``mse``, ``charbonnier``) and the total-variation prior (``tv``).

All take ``pred`` and ``target`` of shape ``(N, C, H, W)`` with values in ``[0, 1]`` and
return an unweighted scalar; lower is better. Scales: docs/env.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lossagent_env.losses._util import float32_forward
from lossagent_env.losses.base import LOSSES, Loss

__all__ = ["CharbonnierLoss", "L1Loss", "MSELoss", "TVLoss"]


@LOSSES.register("l1")
class L1Loss(Loss):
    """Mean absolute error ``mean(|pred - target|)`` in ``[0, 1]``; the reference of every ``scale``."""

    name = "l1"
    role = "pixel"
    description = (
        "Mean absolute pixel error (L1) between the restored image and the target. "
        "Rewards pixel-accurate, faithful reconstructions and raises PSNR/SSIM steadily; "
        "it is the most stable loss and a good default. Weighted high on its own it "
        "gives clean but somewhat blurry, over-smoothed results (less blurry than MSE), "
        "with little fine texture, i.e. blurry but high PSNR and poor perceptual "
        "(no-reference) quality scores."
    )
    scale = 1.0  # the reference of every other scale
    value_range = (0.0, 1.0)

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target)


@LOSSES.register("mse")
class MSELoss(Loss):
    """Mean squared error ``mean((pred - target)**2)`` in ``[0, 1]``."""

    name = "mse"
    role = "pixel"
    description = (
        "Mean squared pixel error (L2), the loss that PSNR measures directly. Weighted "
        "high it maximises PSNR but averages over plausible solutions, so results are "
        "the blurriest of the pixel losses: blurry but high PSNR, poor perceptual "
        "quality. Penalises large errors strongly and small ones weakly, so it fixes "
        "gross errors fast and fine detail slowly; sensitive to outliers."
    )
    scale = 4.0
    value_range = (0.0, 1.0)

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target)


@LOSSES.register("charbonnier")
class CharbonnierLoss(Loss):
    """Charbonnier loss ``mean(sqrt((pred - target)**2 + eps**2))``, a smooth L1, in ``[eps, sqrt(1 + eps**2)]``.

    Args:
        eps: smoothing constant; the value at ``pred == target`` is exactly ``eps``.
    """

    name = "charbonnier"
    role = "pixel"
    description = (
        "Charbonnier loss, a smooth L1 (sqrt(error^2 + 1e-6)) between restored image "
        "and target, as used by many state-of-the-art restoration networks. Behaves "
        "like L1 (robust to outliers, faithful, high PSNR) but has a smooth gradient "
        "near zero error, which helps the last fine-tuning steps. Weighted high alone "
        "it gives the same slightly blurry, texture-poor look as L1."
    )
    scale = 1.0
    value_range = (0.0, math.sqrt(1.0 + 1e-3**2))  # for the default eps

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"charbonnier eps must be a finite number > 0; got {eps!r}.")
        self.eps = float(eps)
        # The largest value, at |pred - target| = 1 everywhere.
        self.value_range = (0.0, math.sqrt(1.0 + self.eps**2))

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((pred - target).square() + self.eps**2).mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


@LOSSES.register("tv")
class TVLoss(Loss):
    """Anisotropic total variation of ``pred``, ``mean|dx| + mean|dy|`` over neighbouring pixels, in ``[0, 2]``.

    ``target`` is unused: the value is 0 for a constant image, not for ``pred == target``.
    """

    name = "tv"
    role = "smoothness"
    description = (
        "Total variation of the restored image only (it ignores the target): the mean "
        "absolute difference between neighbouring pixels. A smoothness prior that "
        "suppresses noise, ringing and JPEG blocking; a small weight helps denoising and "
        "artefact removal. Weighted high it flattens real detail and edges into a "
        "cartoon-like, blurry image and lowers PSNR and perceptual quality; it never "
        "pushes towards the target, so keep it small."
    )
    scale = 14.0
    value_range = (0.0, 2.0)

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dx = pred[..., :, 1:] - pred[..., :, :-1]
        dy = pred[..., 1:, :] - pred[..., :-1, :]
        return dx.abs().mean() + dy.abs().mean()
