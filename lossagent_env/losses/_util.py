"""Helpers shared by the loss modules: input checks, float32 computation, seeded init."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

_M = TypeVar("_M", bound=nn.Module)


def check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``pred`` and ``target`` are ``(N, C, H, W)`` of one shape."""
    if pred.dim() != 4:
        raise ValueError(f"pred must be a 4-D tensor (N, C, H, W); got shape {tuple(pred.shape)!r}.")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {tuple(pred.shape)!r} and {tuple(target.shape)!r}."
        )


def float32_forward(
    forward: Callable[[_M, torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[_M, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Decorate a loss ``forward``: check the inputs and compute in float32.

    Autocast is switched off inside (for the input's device type) and both inputs are
    cast to float32, so window sums, FFTs and square roots keep their precision when
    the network itself runs in float16/bfloat16. The result is a float32 scalar.
    """

    @functools.wraps(forward)
    def wrapper(self: _M, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return forward(self, pred.float(), target.float())

    return wrapper


def check_min_size(pred: torch.Tensor, minimum: int, loss_name: str) -> None:
    """Raise ``ValueError`` if the spatial size of ``pred`` is below ``minimum`` pixels."""
    height, width = pred.shape[-2:]
    if min(height, width) < minimum:
        raise ValueError(
            f"Loss {loss_name!r} needs images of at least {minimum}x{minimum} pixels; got "
            f"{height}x{width}. Allowed: height and width >= {minimum}."
        )


def conv_without_init(*args, **kwargs) -> nn.Conv2d:
    """An ``nn.Conv2d`` whose parameters are allocated but not initialised.

    Construction draws nothing from the global torch RNG (``nn.utils.skip_init``);
    the caller initialises the weights from its own ``torch.Generator``.
    """
    return nn.utils.skip_init(nn.Conv2d, *args, **kwargs)


@torch.no_grad()
def init_convs_(module: nn.Module, generator: torch.Generator, std: float | None = 0.02) -> None:
    """Initialise every ``Conv2d`` in ``module`` from ``generator``, zero biases.

    Args:
        module: the module whose convolutions are initialised in place.
        generator: the only source of randomness.
        std: weights are drawn from N(0, std**2); ``None`` means He initialisation,
            ``std = sqrt(2 / fan_in)``.

    The values are drawn on the generator's device and copied, so the result is the
    same whatever device the module lives on.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.weight[0].numel()
            layer_std = (2.0 / fan_in) ** 0.5 if std is None else std
            weight = torch.randn(layer.weight.shape, generator=generator, device=generator.device)
            layer.weight.copy_(weight * layer_std)
            if layer.bias is not None:
                layer.bias.zero_()
