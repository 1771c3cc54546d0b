"""Structural losses: ``ssim``, ``ms_ssim``, ``gradient`` (edges) and ``fft`` (frequency).

All take ``pred`` and ``target`` of shape ``(N, C, H, W)`` with values in ``[0, 1]`` and
return an unweighted scalar; lower is better.

SSIM and MS-SSIM call pyiqa's functional ``ssim`` (``pyiqa.archs.ssim_arch.ssim``) with a
Gaussian window from ``pyiqa.matlab_utils.fspecial`` (11x11, sigma 1.5), on the RGB
channels (each channel separately, then averaged), in float32. The metric versions
measure the Y channel in float64; for training, RGB keeps colour errors visible to the
loss and float32 is several times faster. pyiqa is imported when a loss is built,
not when this module is imported, to keep ``import lossagent_env.losses`` light.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossagent_env.losses._util import check_min_size, float32_forward
from lossagent_env.losses.base import LOSSES, Loss

__all__ = ["FFTLoss", "GradientLoss", "MSSSIMLoss", "SSIMLoss"]

# Standard MS-SSIM scale weights (Wang et al., 2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# The per-scale contrast-structure and SSIM terms are clamped to this before the
# fractional powers of the MS-SSIM product, whose gradient is infinite at 0.
_MS_SSIM_FLOOR = 1e-6


def _gaussian_window(window_size: int, sigma: float) -> torch.Tensor:
    """pyiqa's MATLAB-style Gaussian window, shape ``(1, 1, k, k)``, summing to 1."""
    from pyiqa.matlab_utils import fspecial

    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be an odd integer >= 1; got {window_size!r}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma!r}.")
    return fspecial(window_size, sigma, 1)


class _SSIMBase(Loss):
    """Holds the Gaussian window as a non-persistent buffer (it moves with ``.to()``)."""

    window: torch.Tensor  # buffer (1, 1, k, k)

    def __init__(self, window_size: int = 11, sigma: float = 1.5):
        super().__init__()
        from pyiqa.archs.ssim_arch import ssim

        self._ssim = ssim
        self.window_size = int(window_size)
        self.sigma = float(sigma)
        self.register_buffer("window", _gaussian_window(self.window_size, self.sigma), persistent=False)

    def _window_for(self, x: torch.Tensor) -> torch.Tensor:
        """The window repeated for the channels of ``x``: ``(C, 1, k, k)``."""
        return self.window.expand(x.shape[1], 1, -1, -1)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, sigma={self.sigma}"


@LOSSES.register("ssim")
class SSIMLoss(_SSIMBase):
    """``1 - SSIM(pred, target)`` in ``[0, 1]`` (pyiqa clamps the contrast-structure term at 0).

    Args:
        window_size: side of the Gaussian window (odd); inputs must be at least this big.
        sigma: standard deviation of the window.
    """

    name = "ssim"
    role = "structure"
    description = (
        "1 - SSIM between restored image and target: compares local means, contrasts and "
        "correlations in 11x11 windows, i.e. local structure rather than exact pixel "
        "values. Raises the SSIM metric directly and preserves edges and contrast better "
        "than pixel losses, with fewer blurry low-contrast regions; usually mixed with "
        "L1. Weighted high alone it can shift brightness or colour slightly (it is "
        "insensitive to uniform offsets) and lower PSNR a little; it does not create "
        "texture."
    )
    scale = 1.0
    value_range = (0.0, 1.0)

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_min_size(pred, self.window_size, self.name)
        ssim_per_image = self._ssim(pred, target, win=self._window_for(pred), get_cs=False, data_range=1.0)
        return 1.0 - ssim_per_image.mean()


@LOSSES.register("ms_ssim")
class MSSSIMLoss(_SSIMBase):
    """``1 - MS-SSIM(pred, target)`` in ``[0, 1]`` over as many scales as fit (at most 5).

    Each scale halves the image (2x2 average pooling, padded to ``ceil(size / 2)``, as
    in pyiqa). Standard MS-SSIM uses 5 scales, which needs the coarsest (1/16 size) to
    still hold the window: at least 161 px for the 11 px window. On smaller inputs (e.g.
    32 px training patches) the loss uses the largest number of scales ``L`` whose
    coarsest image is at least ``window_size`` pixels and renormalises the first ``L``
    standard weights to sum to 1: 2 scales at 21-40 px, 3 at 41-80, 4 at 81-160, all 5
    from 161 px (e.g. 192 px evaluation images); below 21 px it equals SSIM.

    Args:
        window_size: side of the Gaussian window (odd); inputs must be at least this big.
        sigma: standard deviation of the window.
    """

    name = "ms_ssim"
    role = "structure"
    description = (
        "1 - multi-scale SSIM: SSIM's structure comparison repeated on the image "
        "downscaled 2x, 4x, ... (as many scales as the image size allows), so it cares "
        "about both fine detail and larger structures, and correlates better with human "
        "judgement than single-scale SSIM. Gives sharp, structurally faithful results "
        "with natural contrast; like SSIM it tolerates small brightness/colour shifts, "
        "so pair it with L1 when colour fidelity and PSNR matter."
    )
    scale = 1.0
    value_range = (0.0, 1.0)

    scale_weights: torch.Tensor  # buffer, one weight per scale

    def __init__(self, window_size: int = 11, sigma: float = 1.5):
        super().__init__(window_size, sigma)
        self.register_buffer("scale_weights", torch.tensor(MS_SSIM_WEIGHTS), persistent=False)

    def num_scales(self, height: int, width: int) -> int:
        """How many scales fit an image of ``height x width`` pixels (0 if none)."""
        size = min(height, width)
        levels = 0
        while levels < len(MS_SSIM_WEIGHTS) and size >= self.window_size:
            levels += 1
            size = (size + 1) // 2  # pooling with padding keeps ceil(size / 2)
        return levels

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_min_size(pred, self.window_size, self.name)
        levels = self.num_scales(*pred.shape[-2:])
        weights = self.scale_weights[:levels] / self.scale_weights[:levels].sum()
        window = self._window_for(pred)
        terms = []
        x, y = pred, target
        for level in range(levels):
            ssim_val, cs = self._ssim(x, y, win=window, get_cs=True, data_range=1.0)
            if level == levels - 1:
                terms.append(ssim_val)
            else:
                terms.append(cs)
                padding = (x.shape[2] % 2, x.shape[3] % 2)
                x = F.avg_pool2d(x, kernel_size=2, padding=padding)
                y = F.avg_pool2d(y, kernel_size=2, padding=padding)
        per_scale = torch.stack(terms).clamp(min=_MS_SSIM_FLOOR)  # (levels, N)
        ms_ssim = torch.prod(per_scale ** weights[:, None], dim=0)
        return 1.0 - ms_ssim.mean()


@LOSSES.register("gradient")
class GradientLoss(Loss):
    """L1 distance between the Sobel gradients of ``pred`` and ``target``.

    The Sobel kernels are divided by 4 so that a unit step edge gives a response of 1;
    the responses are computed without padding ("valid", so ``H, W >= 3``), on every
    channel, in x and y. Since the filter is linear this is ``mean|sobel(pred - target)|``,
    in ``[0, 2]`` (the largest possible response to a difference in ``[-1, 1]``).
    """

    name = "gradient"
    role = "edges"
    description = (
        "Edge loss: L1 distance between the image gradients (Sobel filters, horizontal "
        "and vertical) of the restored image and of the target. Rewards edges at the "
        "right place with the right strength and ignores smooth offsets, so it sharpens "
        "edges and counters the blur of pixel losses while staying faithful (PSNR "
        "mostly kept). Weighted high it amplifies high-frequency noise and can create "
        "ringing or jagged edges; it does not invent texture."
    )
    scale = 18.0
    value_range = (0.0, 2.0)

    kernels: torch.Tensor  # buffer (2, 1, 3, 3)

    def __init__(self):
        super().__init__()
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
        kernels = torch.stack([sobel_x, sobel_x.T])[:, None]  # (2, 1, 3, 3)
        self.register_buffer("kernels", kernels, persistent=False)

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_min_size(pred, 3, self.name)
        channels = pred.shape[1]
        weight = self.kernels.repeat(channels, 1, 1, 1)  # (2C, 1, 3, 3)
        return F.conv2d(pred - target, weight, groups=channels).abs().mean()


@LOSSES.register("fft")
class FFTLoss(Loss):
    """L1 distance between the 2-D Fourier spectra of ``pred`` and ``target``.

    ``D = rfft2(pred - target, norm="ortho")`` (per channel); the value is the mean of
    ``|Re D|`` and ``|Im D|`` over all frequencies. With the orthonormal transform the
    spectrum has the energy of the image (Parseval), so the value is of the order of the
    pixel error and independent of the image size; by Cauchy-Schwarz it is at most
    ``sqrt(N / M) / sqrt(2) * rms(pred - target) <= 1`` (``M >= N / 2`` coefficients of
    the half spectrum of ``N`` pixels).
    """

    name = "fft"
    role = "frequency"
    description = (
        "Frequency loss: L1 distance between the Fourier spectra (real and imaginary "
        "parts) of restored image and target. Every frequency counts about equally, so, "
        "unlike pixel losses, it keeps pushing on the weak high frequencies (fine detail, "
        "texture, sharpness) that pixel losses neglect; faithful to the target (no "
        "invented detail), good for deblurring and super-resolution sharpness. Weighted "
        "high it can cause ringing/grid artefacts and noise in flat areas."
    )
    scale = 12.0
    value_range = (0.0, 1.0)

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft2(pred - target, norm="ortho")
        return torch.view_as_real(spectrum).abs().mean()
