"""The adversarial loss ``gan``: a small PatchGAN discriminator trained alongside the network.

Least-squares GAN (LSGAN): the network minimises ``mean((D(pred) - 1)**2)``, the
discriminator ``0.5 * (mean((D(target) - 1)**2) + mean(D(pred)**2))``. Why LSGAN, and
how its scale and bound were chosen: docs/env.md ("The loss repository").
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from lossagent_env.losses._util import conv_without_init, float32_forward, init_convs_
from lossagent_env.losses.base import LOSSES, Loss

__all__ = ["GANLoss", "PatchDiscriminator"]

# Seed of the discriminator's initialisation until ``reset`` is called.
_DEFAULT_SEED = 0


class PatchDiscriminator(nn.Module):
    """A 4-layer PatchGAN: one real/fake score per ~22x22 patch.

    ``(N, 3, H, W)`` in ``[0, 1]`` -> ``(N, 1, H/4, W/4)`` unbounded scores (trained
    towards 1 for targets and 0 for restored images). Inputs are mapped to ``[-1, 1]``
    first. Built without drawing from the global RNG; call ``init_convs_`` to initialise.

    Args:
        in_channels: channels of the images.
        width: channels of the first layer (doubled once).
    """

    def __init__(self, in_channels: int = 3, width: int = 32):
        super().__init__()
        self.layers = nn.Sequential(
            conv_without_init(in_channels, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            conv_without_init(width, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            conv_without_init(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            conv_without_init(2 * width, 1, 3, padding=1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images * 2.0 - 1.0)


@LOSSES.register("gan")
class GANLoss(Loss):
    """LSGAN generator loss ``mean((D(pred) - 1)**2)`` with its own discriminator ``D``.

    ``target`` is not used by ``forward`` (the discriminator is unconditional); it is
    used by ``update`` as the real examples. The discriminator's parameters never
    require gradients outside ``update``, so the generator's backward pass does not
    touch them.

    State: the discriminator's parameters and (as extra state) its Adam optimizer's
    state and the number of updates are all in ``state_dict()``, so a snapshot restores
    the adversarial game exactly. The optimizer is created on ``reset``; after
    ``.to(device)`` its state is moved along.

    Args:
        lr: Adam learning rate of the discriminator.
        betas: Adam betas (0.5, 0.999 as usual for GANs).
        width: channels of the discriminator's first layer.

    ``H, W >= 4``. The value is ``>= 0``, unbounded in principle (``value_range`` is a
    bound for the observation); lower means ``D`` takes the restored images for real.
    """

    name = "gan"
    role = "adversarial"
    description = (
        "Adversarial (GAN) loss: a small patch discriminator, trained during the same "
        "stage to tell restored patches from real ones, scores the restored image; this "
        "loss rewards outputs it takes for real. It pushes towards sharp, natural-looking "
        "texture and better no-reference perceptual scores (NIQE, PIQE), but the detail "
        "is hallucinated, not faithful: PSNR and SSIM drop, and weighted high it causes "
        "artefacts, colour shifts and unstable training. Use a small weight together "
        "with pixel or perceptual losses."
    )
    scale = 0.3
    value_range = (0.0, 25.0)  # |D - 1| <= 5; about 2 in practice
    trainable = True
    _optimizer: torch.optim.Adam  # set by reset, which __init__ calls

    def __init__(self, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999), width: int = 32):
        super().__init__()
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"gan lr must be a finite number > 0; got {lr!r}.")
        if width < 1:
            raise ValueError(f"gan width must be an integer >= 1; got {width!r}.")
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.discriminator = PatchDiscriminator(width=int(width))
        self.reset(torch.Generator().manual_seed(_DEFAULT_SEED))

    # -- the adversarial game ---------------------------------------------------------

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.discriminator(pred) - 1.0).square().mean()

    @float32_forward
    def discriminator_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LSGAN discriminator loss on real ``target`` and restored ``pred`` (scalar)."""
        # One pass over both batches (the discriminator has no batch statistics).
        real, fake = self.discriminator(torch.cat([target, pred])).chunk(2)
        return 0.5 * ((real - 1.0).square().mean() + fake.square().mean())

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """One Adam step of the discriminator on ``target`` (real) vs ``pred`` (restored).

        Args:
            pred: restored batch ``(N, C, H, W)``; detached here if it is not already.
            target: ground-truth batch of the same shape.
        """
        optimizer = self._optimizer
        params = list(self.discriminator.parameters())
        with torch.enable_grad():
            for param in params:
                param.requires_grad_(True)
            try:
                optimizer.zero_grad(set_to_none=True)
                loss = self.discriminator_loss(pred.detach(), target.detach())
                loss.backward()
                optimizer.step()
            finally:
                for param in params:
                    param.requires_grad_(False)
                    param.grad = None
        self.num_updates += 1

    def reset(self, generator: torch.Generator) -> None:
        """Re-initialise the discriminator from ``generator`` and start a fresh optimizer.

        Weights are drawn from N(0, 0.02**2) (DCGAN/pix2pix initialisation), biases are
        zero. The same generator state gives identical parameters on any device.
        """
        init_convs_(self.discriminator, generator, std=0.02)
        for param in self.discriminator.parameters():
            param.requires_grad_(False)
            param.grad = None
        self._optimizer = self._new_optimizer()
        self.num_updates = 0

    # -- optimizer bookkeeping -----------------------------------------------------------

    def _new_optimizer(self) -> torch.optim.Adam:
        return torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)

    def _apply(self, fn, recurse: bool = True):
        """Move the optimizer's state along with the parameters (``.to()``, ``.cuda()``)."""
        result = super()._apply(fn, recurse)
        # Optimizer.load_state_dict casts every state tensor to its parameter's device and
        # dtype (keeping Adam's step counter where Adam expects it).
        self._optimizer.load_state_dict(self._optimizer.state_dict())
        return result

    def get_extra_state(self) -> dict[str, Any]:
        """Optimizer state (a deep copy, so later steps do not alter a snapshot) and count."""
        return {"optimizer": copy.deepcopy(self._optimizer.state_dict()), "num_updates": self.num_updates}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not {"optimizer", "num_updates"} <= state.keys():
            raise ValueError(
                "gan extra state must be a dict with keys 'optimizer' and 'num_updates'; "
                f"got {type(state).__name__} "
                f"{sorted(state) if isinstance(state, dict) else ''}."
            )
        self._optimizer = self._new_optimizer()
        self._optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.num_updates = int(state["num_updates"])

    def extra_repr(self) -> str:
        return f"lr={self.lr}, betas={self.betas}, num_updates={self.num_updates}"
