"""Configuration of a LossAgent environment: one dataclass, validated on creation."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from lossagent_env.device import check_device
from lossagent_env.tasks import TASKS


@dataclass
class EnvConfig:
    """Everything that defines one environment. Every field can be passed to ``gym.make``.

    The env ids fix ``task``; the other fields keep their defaults unless given.
    """

    task: str = "sr"
    """Degradation to undo: ``"sr"`` (bicubic down-sampling), ``"denoise"`` (Gaussian
    noise) or ``"jpeg"`` (JPEG compression)."""

    objective: Any = "psnr"
    """What the agent optimises: a metric name, a ``{metric: weight}`` dict, an
    ``Objective``, or a callable ``(restored, target) -> float`` (higher is better)."""

    losses: tuple[Any, ...] | None = None
    """The loss repository: names or ``{"type": name, **kwargs}`` specs, in action order.
    ``None`` means every loss that needs no downloaded weights."""

    backbone: Any = "tiny"
    """Restoration network: a registered name (``"tiny"``, ``"edsr"``) or an ``nn.Module``."""

    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for a named backbone (e.g. ``{"channels": 64}``)."""

    dataset: str = "skimage"
    """``"skimage"`` (colour photographs shipped with scikit-image, offline), a folder of
    images (DIV2K-style), or ``"paired:<lr_dir>:<hr_dir>"`` for paired LR/HR folders."""

    scale: int = 2
    """Super-resolution factor, 2 or 4 (``task="sr"`` only)."""

    sigma: float = 25.0
    """Noise standard deviation on the 0-255 scale (``task="denoise"`` only)."""

    quality: int = 20
    """JPEG quality, 1-95 (``task="jpeg"`` only)."""

    patch_size: int = 32
    """Side of a training target patch in pixels (the network input is ``patch_size /
    scale`` for super-resolution)."""

    batch_size: int = 4
    """Patches per training iteration."""

    stage_iters: int = 20
    """Optimiser iterations per stage (per ``env.step``)."""

    max_stages: int = 5
    """Stages per episode; the episode is truncated after this many steps."""

    lr: float = 1e-3
    """Adam learning rate of the restoration network."""

    device: str = "cpu"
    """``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"auto"`` (CUDA when available)."""

    amp: bool = False
    """Mixed precision (bfloat16 autocast) for training on CUDA; ignored on CPU."""

    eval_images: int = 4
    """Number of evaluation crops the objective is measured on."""

    eval_size: int = 96
    """Side of an evaluation target crop in pixels."""

    init_checkpoint: str | None = None
    """Path of a network ``state_dict`` to start every episode from, instead of a
    seeded initialisation."""

    divergence_penalty: float = -1.0
    """Reward of a stage whose training diverged (non-finite loss or parameters)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"EnvConfig.task={self.task!r} is not supported. Allowed: {TASKS.names()}"
            )
        if self.task == "sr" and self.scale not in (2, 4):
            raise ValueError(f"EnvConfig.scale={self.scale!r} is not supported. Allowed: 2 or 4")
        if self.task != "sr":
            self.scale = 1
        _positive_int(self, "batch_size", "stage_iters", "max_stages", "eval_images")
        _positive_int(self, "patch_size", "eval_size")
        for name in ("patch_size", "eval_size"):
            value = getattr(self, name)
            if value % self.scale or value // self.scale < 4:
                raise ValueError(
                    f"EnvConfig.{name}={value!r} must be a multiple of scale={self.scale} "
                    f"and at least {4 * self.scale}."
                )
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"EnvConfig.lr={self.lr!r} must be a finite number > 0.")
        if not (isinstance(self.sigma, (int, float)) and 0 <= self.sigma <= 255):
            raise ValueError(f"EnvConfig.sigma={self.sigma!r} must be in [0, 255].")
        if not (isinstance(self.quality, int) and not isinstance(self.quality, bool) and 1 <= self.quality <= 95):
            raise ValueError(f"EnvConfig.quality={self.quality!r} must be an integer in [1, 95].")
        if (
            isinstance(self.divergence_penalty, bool)
            or not isinstance(self.divergence_penalty, (int, float))
            or not math.isfinite(self.divergence_penalty)
        ):
            raise ValueError(
                f"EnvConfig.divergence_penalty={self.divergence_penalty!r} is not allowed. "
                "Allowed: a finite number (the reward of a diverged stage), e.g. -1.0."
            )
        if not isinstance(self.amp, bool):
            raise ValueError(f"EnvConfig.amp={self.amp!r} is not allowed. Allowed: True or False.")
        if not isinstance(self.backbone_kwargs, dict):
            raise ValueError(
                f"EnvConfig.backbone_kwargs={self.backbone_kwargs!r} is not a dict. "
                "Allowed: options of the backbone, e.g. {'channels': 64}."
            )
        if self.init_checkpoint is not None and not isinstance(self.init_checkpoint, (str, os.PathLike)):
            raise ValueError(
                f"EnvConfig.init_checkpoint={self.init_checkpoint!r} is not a path. "
                "Allowed: None or the path of a state_dict file."
            )
        if not isinstance(self.dataset, str):
            raise ValueError(
                f"EnvConfig.dataset={self.dataset!r} is not a string. Allowed: 'skimage', "
                "an image folder, or 'paired:<lr_dir>:<hr_dir>'."
            )
        self.device = check_device(self.device, "EnvConfig.device")
        if isinstance(self.losses, (str, dict)):
            raise ValueError(
                f"EnvConfig.losses={self.losses!r} is one loss, not a list of them. "
                f"Allowed: a list of names or specs, e.g. [{self.losses!r}], or None."
            )
        if self.losses is not None:
            try:
                self.losses = tuple(self.losses)
            except TypeError:
                raise ValueError(
                    f"EnvConfig.losses={self.losses!r} is not a list. "
                    "Allowed: a list of names or specs, e.g. ['l1', 'ssim'], or None."
                ) from None
            if not self.losses:
                raise ValueError("EnvConfig.losses=() is empty; give at least one loss or None.")

    def to_dict(self) -> dict[str, Any]:
        """Plain, printable values (objects are shown by their ``repr``)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (str, int, float, bool, type(None), dict, list, tuple)):
                value = repr(value)
            out[f.name] = value
        return out


def _positive_int(config: EnvConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"EnvConfig.{name}={value!r} must be a positive integer.")
