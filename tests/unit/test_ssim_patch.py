"""The SSIM metrics' patch of pyiqa applies only on the release it was tested with.

On any other release, or where pyiqa's ``ssim_arch`` changed, the metric runs pyiqa's
own filter with the same scores, and one warning line names the patch, the release and
why. CI installs with ``constraints.txt``: there the patch must apply.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from lossagent_env import once
from lossagent_env.metrics import clear_cache, create_metric, ssim_patch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stock_filter(monkeypatch: pytest.MonkeyPatch):
    """pyiqa's own filter in place (put back afterwards), and no cached metric."""
    import pyiqa
    from pyiqa.archs import ssim_arch

    monkeypatch.setattr(ssim_arch, "filter2", pyiqa.matlab_utils.filter2)
    monkeypatch.setattr(once, "_said", set())  # its warning not said yet in this process
    clear_cache()
    yield ssim_arch
    clear_cache()


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 48, 48, generator=generator)
    return (target + 0.1 * torch.randn(target.shape, generator=generator)).clamp(0, 1), target


def test_constraints_pin_the_release_the_patch_was_tested_with():
    pin = re.search(r"^pyiqa==(\S+)", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert pin is not None and pin.group(1) == ssim_patch.TESTED_VERSION
    assert ssim_patch.installed_version() == ssim_patch.TESTED_VERSION, "not installed with constraints.txt"


def test_the_patch_applies_on_the_pinned_release(stock_filter, caplog):
    assert ssim_patch.why_not() is None
    with caplog.at_level(logging.WARNING):
        create_metric("ssim", "cpu")
    assert getattr(stock_filter.filter2, "separable", False)
    assert "separable_ssim" not in caplog.text


def test_another_release_keeps_pyiqas_filter_and_says_so_once(stock_filter, monkeypatch, caplog):
    import pyiqa

    monkeypatch.setattr(ssim_patch, "installed_version", lambda: "0.1.99")
    restored, target = _images()
    with caplog.at_level(logging.WARNING):
        scores = create_metric("ssim", "cpu")(restored, target)
        clear_cache()
        create_metric("ms_ssim", "cpu")
    assert stock_filter.filter2 is pyiqa.matlab_utils.filter2
    lines = [r.getMessage() for r in caplog.records if "separable_ssim" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "pyiqa 0.1.99 is not 0.1.16" in lines[0] and "pyiqa==0.1.16" in lines[0]
    own = pyiqa.create_metric("ssim", as_loss=False, device="cpu")(restored, target)
    assert torch.equal(scores, own.float().cpu().reshape(-1))


def test_a_changed_filter_is_named_and_left_alone(stock_filter, monkeypatch):
    def filter2(image, window):  # a release whose filter takes other arguments
        raise AssertionError("not called")

    monkeypatch.setattr(stock_filter, "filter2", filter2)
    reason = ssim_patch.apply()
    assert reason is not None and "ssim_arch.filter2(input, weight, shape)" in reason
    assert stock_filter.filter2 is filter2
