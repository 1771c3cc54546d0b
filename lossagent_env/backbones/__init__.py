"""Restoration networks, registered by name.

Every backbone maps an input ``(N, 3, H, W)`` to an output ``(N, 3, H * scale, W * scale)``
and learns a residual over the up-sampled input (bicubic for super-resolution, the input
itself otherwise), so a fresh network starts from the plain interpolation.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lossagent_env.registry import Registry

BACKBONES: Registry = Registry("backbone")


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with a scaled skip connection (EDSR style, no batch norm)."""

    def __init__(self, channels: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x))) * self.res_scale


class Upsampler(nn.Sequential):
    """Sub-pixel convolution up-sampling by 1, 2, 3 or 4 (x4 as two x2 steps)."""

    def __init__(self, channels: int, scale: int, out_channels: int = 3):
        if scale not in (1, 2, 3, 4):
            raise ValueError(f"scale={scale!r} is not supported. Allowed: 1, 2, 3, 4")
        layers: list[nn.Module] = []
        steps = [2, 2] if scale == 4 else ([scale] if scale > 1 else [])
        for step in steps:
            layers += [nn.Conv2d(channels, channels * step * step, 3, padding=1), nn.PixelShuffle(step)]
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
        super().__init__(*layers)


class ResidualRestorer(nn.Module):
    """head conv -> residual blocks -> body conv (+ skip) -> up-sampler, plus a global
    skip from the interpolated input. The last convolution starts at zero, so the
    untrained network outputs the interpolated input exactly.
    """

    def __init__(self, scale: int, channels: int, blocks: int, res_scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(channels, res_scale) for _ in range(blocks)])
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = Upsampler(channels, scale)
        last = self.tail[-1]
        assert isinstance(last, nn.Conv2d)  # an Upsampler ends in a convolution
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x if self.scale == 1 else F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        features = self.head(x)
        features = features + self.body_tail(self.body(features))
        return base + self.tail(features)


@BACKBONES.register("tiny")
def tiny(scale: int, channels: int = 32, blocks: int = 2) -> nn.Module:
    """A CPU-friendly network: 32 channels, 2 residual blocks (~85k parameters at x2,
    ~48k for denoising and JPEG)."""
    return ResidualRestorer(scale, channels, blocks)


@BACKBONES.register("edsr")
def edsr(scale: int, channels: int = 64, blocks: int = 16, res_scale: float = 1.0) -> nn.Module:
    """EDSR-baseline (Lim et al., 2017): 64 channels, 16 residual blocks (~1.4M parameters
    at x2); ``channels=256, blocks=32, res_scale=0.1`` gives the full EDSR. For GPUs."""
    return ResidualRestorer(scale, channels, blocks, res_scale)


def build_backbone(spec: Any, scale: int, **kwargs: Any) -> nn.Module:
    """A registered backbone by name, or ``spec`` itself if it is an ``nn.Module``.

    Raises:
        KeyError: Unknown name (with a "Did you mean" hint).
        ValueError: ``spec`` is neither a name nor a module, or ``kwargs`` holds an
            option the backbone does not take or a value it refuses.
    """
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"backbone={spec!r} must be a name {BACKBONES.names()} or an nn.Module.")
    factory = BACKBONES.get(spec)
    allowed = [p for p in inspect.signature(factory).parameters if p != "scale"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"backbone_kwargs={kwargs!r}: backbone {spec!r} takes no option {unknown}. Allowed: {allowed}."
        )
    for key in ("channels", "blocks"):
        value = kwargs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"backbone_kwargs[{key!r}]={value!r} is not allowed. Allowed: an integer >= 1.")
    res_scale = kwargs.get("res_scale")
    if res_scale is not None and (isinstance(res_scale, bool) or not isinstance(res_scale, (int, float)) or not res_scale > 0):
        raise ValueError(f"backbone_kwargs['res_scale']={res_scale!r} is not allowed. Allowed: a number > 0.")
    return factory(scale, **kwargs)
