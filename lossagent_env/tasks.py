"""Tasks: what the restoration network learns to undo, declared once.

:data:`TASKS` is the one registry of tasks: each :class:`Task` gives its key (the
``EnvConfig.task`` value), its Gymnasium id, the ``EnvConfig`` field that sets its
strength, the degradation it undoes, and its description (which reaches the LLM agent's
prompt). The config, the env ids and the agents' task text all read it (the table of
tasks is in docs/env.md, "Ids and settings").

Each degradation maps a batch of clean targets ``(N, C, H, W)`` in ``[0, 1]`` to the
network input, drawing any randomness from a local ``torch.Generator``. All of them work
on a whole batch at once, so a stage's training data is prepared in one call.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lossagent_env.cpus import available_cpus
from lossagent_env.registry import Registry


class Degradation:
    """Base class. ``scale`` is the ratio of target size to input size.

    ``runs_on_device``: True if it works on tensors on any device (then training
    patches are cut and degraded on the GPU); False if it needs the CPU (Pillow).
    """

    scale: int = 1
    name: str = ""
    runs_on_device: bool = True

    def __call__(self, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as a stored image would be."""
    return x.clamp(0, 1).mul(255).round().div(255)


class BicubicDownsample(Degradation):
    """Bicubic down-sampling with anti-aliasing (MATLAB ``imresize``-like), 8-bit output."""

    def __init__(self, scale: int):
        self.scale = scale
        self.name = f"bicubic x{scale} down-sampling"

    def __call__(self, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        lr = F.interpolate(hr, scale_factor=1 / self.scale, mode="bicubic", antialias=True, align_corners=False)
        return quantize(lr)


class GaussianNoise(Degradation):
    """Additive white Gaussian noise of standard deviation ``sigma`` on the 0-255 scale.

    The noisy image is not clipped, as in the usual denoising benchmarks.
    """

    def __init__(self, sigma: float):
        self.sigma = float(sigma)
        self.name = f"Gaussian noise, sigma {self.sigma:g}/255"

    def __call__(self, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if hr.device.type == "cpu":
            noise = torch.randn(hr.shape, generator=generator, dtype=hr.dtype)
        else:  # drawn on the device, from a seed drawn on the CPU: still reproducible
            seed = int(torch.randint(2**62, (1,), generator=generator))
            device_generator = torch.Generator(device=hr.device).manual_seed(seed)
            noise = torch.randn(hr.shape, generator=device_generator, dtype=hr.dtype, device=hr.device)
        return hr + noise * (self.sigma / 255.0)


class JPEGCompression(Degradation):
    """Real JPEG encoding and decoding through Pillow at a fixed ``quality`` (4:2:0).

    Pillow runs on the CPU; a batch is encoded by a pool of threads (Pillow releases the
    GIL while it encodes and decodes), one chunk of images per core.
    """

    runs_on_device = False

    def __init__(self, quality: int):
        self.quality = int(quality)
        self.name = f"JPEG compression, quality {self.quality}"

    def _encode(self, array: np.ndarray, out: np.ndarray) -> None:
        for i, image in enumerate(array):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=self.quality)
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                out[i] = np.asarray(decoded.convert("RGB"))

    def __call__(self, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        array = hr.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(array)
        workers = min(len(array) // 64 + 1, available_cpus())
        if workers <= 1:
            self._encode(array, out)
        else:
            bounds = np.linspace(0, len(array), workers + 1).astype(int)
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda k: self._encode(array[bounds[k]:bounds[k + 1]], out[bounds[k]:bounds[k + 1]]), range(workers)))
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(hr.dtype).div(255).to(hr.device)


@dataclass(frozen=True)
class Task:
    """One restoration task.

    Attributes:
        key: The ``EnvConfig.task`` value (``"sr"``).
        env_id: Its Gymnasium id.
        parameter: The ``EnvConfig`` field that sets the degradation's strength.
        degradation: Builds the degradation from that field's value.
        text: Its description, a format string over the parameter (``{value}``).
    """

    key: str
    env_id: str
    parameter: str
    degradation: Callable[[Any], Degradation]
    text: str

    def describe(self, config: Any) -> str:
        """The task in words, with its parameter's value from ``config``."""
        return self.text.format(value=getattr(config, self.parameter))


TASKS: Registry[Task] = Registry("task")
"""Task key -> :class:`Task`; the only list of tasks."""

for _task in (
    Task("sr", "LossAgent/SuperResolution-v0", "scale", BicubicDownsample,
         "super-resolution x{value} (undo bicubic down-sampling)"),
    Task("denoise", "LossAgent/Denoising-v0", "sigma", GaussianNoise,
         "denoising (remove Gaussian noise of standard deviation {value:g}/255)"),
    Task("jpeg", "LossAgent/JPEG-v0", "quality", JPEGCompression,
         "JPEG artifact removal (undo JPEG compression at quality {value})"),
):  # fmt: skip
    TASKS.register(_task.key, _task)


def make_degradation(config: Any) -> Degradation:
    """The degradation of ``config.task`` with its parameter (``config.scale``, ...).

    Raises:
        KeyError: Unknown task (with a "Did you mean" hint).
    """
    task = TASKS.get(config.task)
    return task.degradation(getattr(config, task.parameter))
