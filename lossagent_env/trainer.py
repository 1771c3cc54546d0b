"""The inner training loop of one stage, and nothing else."""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Sequence

import torch
from torch import nn

from lossagent_env.losses.base import Loss


class Trainer:
    """Adam on ``L = sum_i w_i * L_i`` for a fixed number of iterations.

    The weighted sum is formed here and nowhere else. A loss whose weight is 0 is not
    computed at all; an all-zero weight vector makes no parameter update.

    Args:
        model: the restoration network.
        losses: the loss repository, in action order.
        lr: Adam learning rate.
        amp: bfloat16 autocast for the forward pass (CUDA only; ignored on CPU). The
            losses that are networks themselves (``Loss.autocast_safe``: perceptual,
            lpips, ``iqa:``) run under it too, their most expensive part; the others
            (SSIM, FFT, pixel losses) run in float32, where their sums and ratios are
            accurate.
    """

    def __init__(self, model: nn.Module, losses: Sequence[Loss], lr: float, amp: bool = False):
        self.model = model
        self.losses = list(losses)
        self.lr = lr
        self.amp = amp
        self.optimizer = self._new_optimizer()

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=(0.9, 0.99))

    def reset_optimizer(self) -> None:
        """A fresh optimizer: no moments, step count 0."""
        self.optimizer = self._new_optimizer()

    def _autocast(self, device: torch.device):
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_stage(self, inputs: torch.Tensor, targets: torch.Tensor, weights: Sequence[float]) -> bool:
        """Train on ``inputs[t] -> targets[t]`` for every ``t``; return True if it diverged.

        Args:
            inputs: ``(T, B, 3, h, w)``, one batch per iteration, on the model's device.
            targets: ``(T, B, 3, H, W)``, in ``[0, 1]``.
            weights: effective weight of each loss (``action * scale``), in loss order.

        Returns:
            True when a loss or a parameter became non-finite during the stage.
        """
        active = [(loss, float(w)) for loss, w in zip(self.losses, weights) if w > 0]
        if not active:
            return False
        trainable = [loss for loss, _ in active if loss.trainable]
        model, optimizer = self.model, self.optimizer
        model.train()
        total = torch.zeros((), device=inputs.device)
        for t in range(inputs.shape[0]):
            target = targets[t]
            with self._autocast(inputs.device):
                output = model(inputs[t])
            output = output.float()
            # sum of the weighted terms (``active`` is not empty, so no start value of 0)
            loss = functools.reduce(operator.add, (w * self._value(term, output, target) for term, w in active))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for term in trainable:
                term.update(output.detach(), target)
            total += loss.detach()
        return not bool(torch.isfinite(total)) or not parameters_finite(model)

    def _value(self, term: Loss, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if term.autocast_safe:
            with self._autocast(output.device):
                return term(output, target).float()
        return term(output, target)


def parameters_finite(model: nn.Module) -> bool:
    """True if every parameter of ``model`` is finite."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
