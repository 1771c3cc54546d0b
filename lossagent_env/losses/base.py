"""The base class of every loss in the loss repository, and its registry."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from lossagent_env.registry import Registry

LOSSES: Registry[type[Loss]] = Registry("loss")

ROLES = ("pixel", "structure", "edges", "frequency", "perceptual", "adversarial", "smoothness")
"""What a loss is for: pixel fidelity, local structure, edges, frequencies, perceptual
(feature) similarity, realism against a discriminator, or a smoothness prior."""


class Loss(nn.Module):
    """One entry of the loss repository.

    A loss returns its *unweighted* value, a scalar tensor, for a batch of restored
    images ``pred`` and targets ``target``, both ``(N, C, H, W)`` in ``[0, 1]``. The
    weighted sum ``sum_i w_i * scale_i * L_i`` is formed in one place only, the trainer.

    Class attributes (plain data, read by the env, the agents and the CLI; a loss
    built from options, such as ``iqa:<metric>``, sets the first five per instance):
        name: registry key, short and lowercase.
        description: one paragraph for a reader (person or LLM) deciding its weight.
        scale: the effective weight of loss ``i`` is ``action[i] * scale``; chosen so
            that an action of 1.0 gives a gradient of the same order as ``l1`` at 1.0.
        value_range: finite ``(low, high)`` bounds of the value reported in the
            observation; evaluation values are clipped into it.
        needs_weights: True if building it needs downloaded weight files.
        trainable: True if the loss owns parameters trained during a stage (GAN).
        role: what the loss is for, one of :data:`ROLES`; weight presets (fixed agents,
            bandit arms) find losses by role, never by name.
        autocast_safe: True for losses that are networks (VGG, LPIPS, pyiqa models):
            with ``amp`` they run under bfloat16 autocast like the restoration network.
    """

    name: str = ""
    description: str = ""
    scale: float = 1.0
    value_range: tuple[float, float] = (0.0, 1.0)
    needs_weights: bool = False
    trainable: ClassVar[bool] = False
    role: ClassVar[str] = ""
    autocast_safe: ClassVar[bool] = False

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def weights_installed(cls) -> bool | None:
        """True/False if the weight files are (not) installed, None if unknown.

        Losses with ``needs_weights`` override it; the others need no files.
        """
        return True

    def reset(self, generator: torch.Generator) -> None:
        """Re-initialise any trainable state (e.g. a discriminator) from ``generator``."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Train the loss's own parameters for one iteration (only if ``trainable``).

        Called by the trainer once per iteration, after the generator step, with the
        restored batch detached.
        """
