"""The inner loop: which losses run under mixed precision."""

from __future__ import annotations

import contextlib

import torch

from lossagent_env.losses.base import Loss
from lossagent_env.trainer import Trainer


class _Recording(Loss):
    name = "recording"

    def __init__(self, autocast_safe: bool):
        super().__init__()
        self.autocast_safe = autocast_safe
        self.under_autocast: list[bool] = []

    def forward(self, pred, target):
        self.under_autocast.append(_STATE["inside"])
        return (pred - target).abs().mean()


_STATE = {"inside": False}


@contextlib.contextmanager
def _fake_autocast(device):
    _STATE["inside"] = True
    try:
        yield
    finally:
        _STATE["inside"] = False


def test_only_network_losses_run_under_autocast(monkeypatch):
    network, plain = _Recording(autocast_safe=True), _Recording(autocast_safe=False)
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    trainer = Trainer(model, [network, plain], lr=1e-3, amp=True)
    monkeypatch.setattr(trainer, "_autocast", _fake_autocast)
    inputs = torch.rand(2, 1, 3, 8, 8)
    trainer.run_stage(inputs, inputs.clone(), [1.0, 1.0])
    assert network.under_autocast == [True, True]
    assert plain.under_autocast == [False, False]


def test_learned_losses_declare_it():
    from lossagent_env.losses import LOSSES, offline_losses

    assert all(LOSSES.get(name).autocast_safe for name in ("perceptual", "lpips", "iqa"))
    assert not any(LOSSES.get(name).autocast_safe for name in offline_losses())
