"""The metric catalogue, metric objects, and the refusal to download weights."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.hub

from lossagent_env.assets import ASSETS
from lossagent_env.errors import MissingWeightsError
from lossagent_env.metrics import (
    OPEN_BOUND,
    clear_cache,
    create_metric,
    metric_info,
    metric_names,
    usable_metrics,
)
from lossagent_env.metrics.catalogue import WEIGHT_FREE_TYPES, parse_score_range


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """Two smooth 3x48x48 targets and noisy versions of them, from a local generator."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 6, 6, generator=gen)
    target = torch.nn.functional.interpolate(
        coarse, size=(48, 48), mode="bilinear", align_corners=False
    )
    restored = (target + 0.05 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    return restored, target


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub dir and Hugging Face cache; socket connections fail the test."""
    from huggingface_hub import constants as hf_constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    attempts: list[object] = []

    def tripwire(self, address, *args):
        attempts.append(address)
        raise AssertionError(f"network connection attempted to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", tripwire)
    monkeypatch.setattr(socket.socket, "connect_ex", tripwire)
    clear_cache()
    yield tmp_path, attempts
    clear_cache()


# ------------------------------------------------------------------ catalogue
@pytest.mark.parametrize(
    ("name", "lower_better", "full_reference"),
    [
        ("psnr", False, True),
        ("ssim", False, True),
        ("ms_ssim", False, True),
        ("gmsd", True, True),
        ("lpips", True, True),
        ("niqe", True, False),
        ("piqe", True, False),
        ("brisque", True, False),
        ("musiq", False, False),
    ],
)
def test_catalogue_directions(name, lower_better, full_reference):
    info = metric_info(name)
    assert info.lower_better is lower_better
    assert info.full_reference is full_reference
    assert ("Lower is better" in info.description) is lower_better


def test_catalogue_is_every_pyiqa_metric():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    assert metric_names() == sorted(DEFAULT_CONFIGS)
    assert len(metric_names()) > 50


@pytest.mark.parametrize("name", metric_names())
def test_every_catalogue_entry_has_finite_bounds_and_a_description(name):
    info = metric_info(name)
    assert math.isfinite(info.low) and math.isfinite(info.high) and info.low < info.high
    assert abs(info.low) <= OPEN_BOUND and abs(info.high) <= OPEN_BOUND
    assert info.description and "\n" not in info.description


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("0, 1", (0.0, 1.0)),
        ("~0, ~40", (-40.0, 80.0)),  # approximate ends widen by the span
        ("~0, ~100", (-100.0, 200.0)),
        ("0, ~1", (0.0, 2.0)),
        ("~-1, ~2", (-4.0, 5.0)),
        ("0, ~", (0.0, OPEN_BOUND)),
        ("~, 2", (-OPEN_BOUND, 2.0)),
        ("~0, ~", (-1.0, OPEN_BOUND)),
        ("quality: 0, 1; rank: 0, 2; rank_prob: 0, 1", (0.0, 2.0)),
        (None, (-OPEN_BOUND, OPEN_BOUND)),
    ],
)
def test_parse_score_range(text, bounds):
    assert parse_score_range(text) == bounds


@pytest.mark.parametrize("text", ["0", "a, b", "0, 1, 2", "1, 0", ", 1"])
def test_parse_score_range_refuses_unreadable(text):
    with pytest.raises(ValueError, match="range"):
        parse_score_range(text)


def test_psnr_bounds_hold_the_identical_image_score():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    info = metric_info("psnr")
    value = create_metric("psnr")(x, x).item()
    assert info.low <= value <= info.high
    assert value == pytest.approx(80.0)


def test_unknown_metric_name_suggests_the_closest():
    with pytest.raises(KeyError, match="Did you mean 'psnr'"):
        metric_info("psnrr")
    with pytest.raises(KeyError, match="Did you mean 'niqe'"):
        create_metric("niqee")


def test_weight_free_types_match_needs_weights():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    for name in metric_names():
        free = DEFAULT_CONFIGS[name]["metric_opts"]["type"] in WEIGHT_FREE_TYPES
        assert metric_info(name).needs_weights is not free


def test_usable_metrics_are_offline_ones(empty_hub):
    usable = usable_metrics()
    for name in [
        "psnr",
        "ssim",
        "ms_ssim",
        "gmsd",
        "fsim",
        "vif",
        "nlpd",
        "vsi",
        "mad",
        "cw_ssim",
        "piqe",
    ]:
        assert name in usable
    for name in ["niqe", "lpips", "fid"]:
        assert name not in usable


# ------------------------------------------------------------------- metrics
FAST_OFFLINE = [
    "psnr",
    "psnry",
    "ssim",
    "ssimc",
    "gmsd",
    "fsim",
    "vif",
    "nlpd",
    "vsi",
    "piqe",
    "entropy",
]


@pytest.mark.parametrize("name", FAST_OFFLINE)
def test_offline_metric_scores_small_images(name, images):
    restored, target = images
    metric = create_metric(name)
    scores = metric(restored, target)
    assert (
        scores.shape == (2,)
        and scores.dtype == torch.float32
        and scores.device.type == "cpu"
    )
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", ["mad", "cw_ssim"])
def test_slower_offline_metric_scores_one_small_image(name, images):
    restored, target = images
    metric = create_metric(name)
    size = metric.info.min_size
    x = torch.nn.functional.interpolate(
        restored[:1], size=(size, size), mode="bilinear", align_corners=False
    )
    y = torch.nn.functional.interpolate(
        target[:1], size=(size, size), mode="bilinear", align_corners=False
    )
    assert torch.isfinite(metric(x, y)).all()


def test_ms_ssim_refuses_small_images_with_a_clear_error(images):
    restored, target = images
    with pytest.raises(ValueError, match=r"at least 161x161 px; got 48x48"):
        create_metric("ms_ssim")(restored, target)


@pytest.mark.parametrize("name", ["psnr", "ssim", "gmsd", "vif"])
def test_full_reference_metrics_prefer_the_cleaner_image(name, images):
    restored, target = images
    info = metric_info(name)
    metric = create_metric(name)
    noisier = (restored + 0.15 * (restored - target).sign()).clamp(0, 1)
    good, bad = metric(restored, target).mean(), metric(noisier, target).mean()
    assert (good < bad) if info.lower_better else (good > bad)


def test_metrics_are_cached_per_name_and_device():
    assert create_metric("psnr") is create_metric("psnr", device="cpu")
    assert create_metric("psnr") is not create_metric("ssim")


def test_metric_is_deterministic(images):
    restored, target = images
    metric = create_metric("fsim")
    assert torch.equal(
        metric(restored, target), metric(restored.clone(), target.clone())
    )


def test_metric_input_checks(images):
    restored, target = images
    psnr = create_metric("psnr")
    with pytest.raises(ValueError, match="target=None"):
        psnr(restored)
    with pytest.raises(ValueError, match="shape"):
        psnr(restored[0], target[0])
    with pytest.raises(ValueError, match="non-finite"):
        psnr(torch.full_like(restored, float("nan")), target)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr(restored, target * 2)
    # restored values outside [0, 1] are clamped, as saving the image would
    assert torch.equal(
        psnr(restored * 3 - 1, target), psnr((restored * 3 - 1).clamp(0, 1), target)
    )
    # no-reference metrics ignore the target
    piqe = create_metric("piqe")
    assert torch.equal(piqe(restored), piqe(restored, target))


def test_set_level_metric_is_refused():
    with pytest.raises(ValueError, match="sets of images"):
        create_metric("fid")


def test_bad_device_is_refused():
    with pytest.raises(ValueError, match="device='gpu0' is not supported"):
        create_metric("psnr", device="gpu0")


# ------------------------------------------------------------ missing weights
@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("niqe", "pyiqa file"),
        ("lpips", "torchvision weights"),
        ("clipiqa", "CLIP model"),
        ("topiq_nr", "timm weights from the Hugging Face Hub"),
    ],
)
def test_missing_weights_raise_before_any_download(name, route, empty_hub):
    tmp_path, attempts = empty_hub
    expected = ASSETS.get(name).files[0]
    with pytest.raises(MissingWeightsError) as caught:
        create_metric(name)
    error = caught.value
    assert error.filename == expected.filename
    assert str(error.expected_path).startswith(str(tmp_path))
    assert str(error.expected_path).endswith(expected.filename)
    assert f"lossagent assets install {name} --from" in error.install_hint
    message = str(error)
    assert (
        expected.filename in message
        and "never downloads" in message
        and error.install_hint in message
    )
    assert attempts == []
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


def test_missing_weights_leave_downloaders_as_they_were(empty_hub):
    before = torch.hub.download_url_to_file
    with pytest.raises(MissingWeightsError):
        create_metric("brisque")
    from pyiqa.utils import download_util

    assert torch.hub.download_url_to_file is before
    assert download_util.download_url_to_file is before


# ------------------------------------------------------------ SSIM's separable window
@pytest.mark.parametrize("name", ["ssim", "ms_ssim"])
def test_ssim_scores_with_the_separable_window_equal_pyiqas_own(name, monkeypatch):
    """The metric's float64 filters run as two 1-D passes; the scores are pyiqa's."""
    import pyiqa
    from pyiqa.archs import ssim_arch

    generator = torch.Generator().manual_seed(0)
    size = 256 if name == "ms_ssim" else 96  # MS-SSIM needs 256 px (see the catalogue)
    target = torch.rand(2, 3, size, size, generator=generator)
    restored = (target + 0.1 * torch.randn(2, 3, size, size, generator=generator)).clamp(0, 1)
    # pyiqa's own filter (put back afterwards), whatever an earlier test installed
    monkeypatch.setattr(ssim_arch, "filter2", pyiqa.matlab_utils.filter2)
    clear_cache()
    plain = pyiqa.create_metric(name, as_loss=False, device="cpu")(restored, target)
    fast = create_metric(name, "cpu")(restored, target)
    assert getattr(ssim_arch.filter2, "separable", False)
    assert torch.allclose(fast.double(), plain.double().cpu(), rtol=0, atol=1e-7), (fast, plain)


def test_the_separable_window_leaves_float32_and_other_windows_to_pyiqa():
    """The SSIM losses call pyiqa's function in float32: they train exactly as before."""
    from pyiqa.archs import ssim_arch
    from pyiqa.matlab_utils import filter2, fspecial

    create_metric("ssim", "cpu")  # installs the separable path
    window = fspecial(11, 1.5, 3)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ssim_arch.filter2(image, window, "valid"), filter2(image, window, "valid"))
    uneven = torch.rand(1, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    as_double = image[:, :1].double()
    assert torch.equal(ssim_arch.filter2(as_double, uneven, "valid"), filter2(as_double, uneven, "valid"))
    gaussian = fspecial(11, 1.5, 1).double()
    separable = ssim_arch.filter2(as_double, gaussian, "valid")
    assert not torch.equal(separable, filter2(as_double, gaussian, "valid"))  # the fast path ran
    assert torch.allclose(separable, filter2(as_double, gaussian, "valid"), rtol=0, atol=1e-8)
