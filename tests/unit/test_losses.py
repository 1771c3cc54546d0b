"""Unit tests of the loss repository (``lossagent_env.losses``)."""

from __future__ import annotations

import copy
import math
import socket
from pathlib import Path

import pytest
import torch

from lossagent_env.errors import MissingWeightsError
from lossagent_env.losses import (
    LOSSES,
    Loss,
    build_loss,
    loss_catalogue,
    offline_losses,
)
from lossagent_env.losses.calibration import measure_scale

OFFLINE = offline_losses()
# Losses that compare pred with target and are minimal (0) when they are equal.
REFERENCE_LOSSES = ("l1", "mse", "ssim", "ms_ssim", "gradient", "fft")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and one thread is immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(size: int, seed: int = 0, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 3, size, size, generator=generator)
    noise = 0.1 * torch.randn(batch, 3, size, size, generator=generator)
    pred = (target + noise).clamp(0, 1)
    return pred, target


def _value_and_grad(loss: Loss, pred: torch.Tensor, target: torch.Tensor):
    pred = pred.clone().requires_grad_(True)
    value = loss(pred, target)
    value.backward()
    return value.detach(), pred.grad


# -- the offline repository --------------------------------------------------------------


def test_offline_order_is_fixed_and_registered():
    assert OFFLINE == (
        "l1",
        "mse",
        "charbonnier",
        "ssim",
        "ms_ssim",
        "gradient",
        "fft",
        "tv",
        "gan",
    )
    for name in OFFLINE:
        assert name in LOSSES


@pytest.mark.parametrize("name", OFFLINE)
def test_class_attributes(name):
    cls = LOSSES.get(name)
    assert issubclass(cls, Loss)
    assert cls.name == name
    assert len(cls.description) > 150 and "." in cls.description
    assert cls.scale > 0 and math.isfinite(cls.scale)
    low, high = cls.value_range
    assert math.isfinite(low) and math.isfinite(high) and low < high
    assert cls.needs_weights is False
    assert cls.trainable is (name == "gan")


@pytest.mark.parametrize("size", [32, 192], ids=lambda s: f"{s}px")
@pytest.mark.parametrize("name", OFFLINE)
def test_finite_value_and_gradient_in_range(name, size):
    loss = build_loss(name)
    pred, target = _pair(size)
    value, grad = _value_and_grad(loss, pred, target)
    assert value.shape == () and value.dtype == torch.float32
    assert torch.isfinite(value)
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    low, high = loss.value_range
    assert low <= float(value) <= high


@pytest.mark.parametrize("name", OFFLINE)
def test_value_within_range_on_extreme_inputs(name):
    """Uniform noise against its complement and against black images stays in range."""
    loss = build_loss(name)
    generator = torch.Generator().manual_seed(1)
    noise = torch.rand(2, 3, 32, 32, generator=generator)
    low, high = loss.value_range
    for pred, target in [
        (noise, 1 - noise),
        (torch.ones_like(noise), torch.zeros_like(noise)),
        (noise, noise.round()),
    ]:
        value = float(loss(pred, target))
        assert low <= value <= high, (pred.mean(), value)


@pytest.mark.parametrize("name", REFERENCE_LOSSES)
def test_zero_when_equal(name):
    loss = build_loss(name)
    _, target = _pair(32)
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-6)


def test_charbonnier_minimum_is_eps():
    _, target = _pair(32)
    assert float(build_loss("charbonnier")(target, target)) == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.parametrize("name", OFFLINE)
def test_autocast_computes_in_float32(name):
    loss = build_loss(name)
    pred, target = _pair(32)
    reference = float(loss(pred, target))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(pred.bfloat16(), target.bfloat16())
    assert value.dtype == torch.float32
    # bfloat16 inputs carry ~3 significant digits
    assert float(value) == pytest.approx(reference, rel=0.05, abs=2e-3)


@pytest.mark.parametrize("name", OFFLINE)
def test_shape_mismatch_is_rejected(name):
    loss = build_loss(name)
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 16))


# -- known values ------------------------------------------------------------------------


def test_pixel_losses_known_values():
    pred = torch.full((1, 3, 4, 4), 0.75)
    target = torch.full((1, 3, 4, 4), 0.25)
    assert float(build_loss("l1")(pred, target)) == pytest.approx(0.5)
    assert float(build_loss("mse")(pred, target)) == pytest.approx(0.25)
    assert float(build_loss("charbonnier")(pred, target)) == pytest.approx(math.sqrt(0.25 + 1e-6))


def test_tv_of_stripes_and_constant():
    stripes = torch.zeros(1, 1, 6, 6)
    stripes[..., 1::2] = 1.0  # columns alternate 0, 1
    tv = build_loss("tv")
    assert float(tv(stripes, torch.zeros_like(stripes))) == pytest.approx(1.0)
    constant = torch.full((1, 3, 6, 6), 0.3)
    assert float(tv(constant, torch.rand_like(constant))) == pytest.approx(0.0, abs=1e-7)


def test_gradient_of_unit_step_edge():
    pred = torch.zeros(1, 1, 8, 8)
    pred[..., 4:] = 1.0  # a vertical unit step between columns 3 and 4
    # Valid 6x6 responses: x-gradient 1 at the 2 columns next to the edge, y-gradient 0.
    expected = (2 * 6 * 1.0) / (2 * 6 * 6)
    assert float(build_loss("gradient")(pred, torch.zeros_like(pred))) == pytest.approx(expected)


def test_fft_of_constant_difference_and_bound():
    pred, target = torch.full((1, 1, 8, 8), 0.5), torch.zeros(1, 1, 8, 8)
    # Only the DC coefficient is nonzero: 0.5 * sqrt(64) = 4 (orthonormal), real part only;
    # the half spectrum has 8 * 5 = 40 complex = 80 real entries.
    assert float(build_loss("fft")(pred, target)) == pytest.approx(4.0 / 80)
    noisy, clean = _pair(32, seed=3)
    rms = float((noisy - clean).square().mean().sqrt())
    assert float(build_loss("fft")(noisy, clean)) <= rms


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    pred, target = _pair(48, seed=2, batch=1)
    ours = 1.0 - float(build_loss("ssim")(pred, target))
    theirs = structural_similarity(
        pred[0].permute(1, 2, 0).double().numpy(),
        target[0].permute(1, 2, 0).double().numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=2,
    )
    assert ours == pytest.approx(theirs, abs=2e-3)


def test_ms_ssim_scales_and_agreement_with_pyiqa():
    from pyiqa.archs.ssim_arch import ms_ssim
    from pyiqa.matlab_utils import fspecial

    loss = build_loss("ms_ssim")
    assert [loss.num_scales(s, s) for s in (10, 11, 20, 21, 40, 41, 160, 161, 192)] == [
        0,
        1,
        1,
        2,
        2,
        3,
        4,
        5,
        5,
    ]
    pred, target = _pair(192, seed=4, batch=2)
    reference = ms_ssim(pred, target, win=fspecial(11, 1.5, 3), data_range=1.0).mean()
    assert float(loss(pred, target)) == pytest.approx(1.0 - float(reference), abs=1e-5)
    # Below two windows it is SSIM.
    small_pred, small_target = _pair(16, seed=5)
    assert float(loss(small_pred, small_target)) == pytest.approx(
        float(build_loss("ssim")(small_pred, small_target)), abs=1e-6
    )


@pytest.mark.parametrize("name", ["ssim", "ms_ssim"])
def test_too_small_for_the_window(name):
    with pytest.raises(ValueError, match="at least 11x11"):
        build_loss(name)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


# -- scales --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OFFLINE)
def test_declared_scale_matches_measurement(name):
    """The declared scale is within a factor of 2 of ||grad l1|| / ||grad loss|| (seed 0)."""
    loss = build_loss(name)
    measured = measure_scale(loss, seed=0, warmup=50)
    assert 0.5 <= measured / loss.scale <= 2.0, measured


# -- the GAN ---------------------------------------------------------------------------------


def _d_params(loss) -> list[torch.Tensor]:
    return [p.detach().clone() for p in loss.discriminator.parameters()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_gan_update_changes_discriminator_only_through_update():
    gan = build_loss("gan")
    pred, target = _pair(32)
    before = _d_params(gan)
    # The generator's backward pass leaves the discriminator untouched.
    value, grad = _value_and_grad(gan, pred, target)
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert _same(before, _d_params(gan))
    gan.update(pred, target)
    assert not _same(before, _d_params(gan))
    assert gan.num_updates == 1


def test_gan_update_lowers_discriminator_loss():
    gan = build_loss("gan")
    pred, target = _pair(32)
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1)
    first = float(gan.discriminator_loss(blurred, target))
    for _ in range(30):
        gan.update(blurred, target)
    assert float(gan.discriminator_loss(blurred, target)) < first


def test_gan_reset_is_deterministic():
    a, b = build_loss("gan"), build_loss("gan")
    a.update(*_pair(32))
    a.reset(torch.Generator().manual_seed(7))
    b.reset(torch.Generator().manual_seed(7))
    assert _same(_d_params(a), _d_params(b))
    assert a.num_updates == 0
    b.reset(torch.Generator().manual_seed(8))
    assert not _same(_d_params(a), _d_params(b))


def test_building_and_resetting_the_gan_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    gan = build_loss("gan")
    gan.reset(torch.Generator().manual_seed(3))
    gan.update(*_pair(32))
    assert torch.equal(state, torch.random.get_rng_state())


def test_gan_state_dict_restores_discriminator_and_optimizer():
    pred, target = _pair(32)
    pred2, target2 = _pair(32, seed=1)
    gan = build_loss("gan")
    gan.reset(torch.Generator().manual_seed(1))
    for _ in range(3):
        gan.update(pred, target)
    snapshot = copy.deepcopy(gan.state_dict())

    gan.update(pred2, target2)  # the step without save/load
    expected = _d_params(gan)

    restored = build_loss("gan")
    restored.reset(torch.Generator().manual_seed(99))  # different weights, fresh optimizer
    restored.load_state_dict(snapshot)
    assert restored.num_updates == 3
    restored.update(pred2, target2)
    assert _same(expected, _d_params(restored))

    # Without the optimizer state (fresh Adam moments) the same step differs.
    plain = build_loss("gan")
    plain.discriminator.load_state_dict(
        {
            k.removeprefix("discriminator."): v
            for k, v in snapshot.items()
            if k.startswith("discriminator.")
        }
    )
    plain.update(pred2, target2)
    assert not _same(expected, _d_params(plain))


def test_gan_snapshot_is_not_changed_by_later_updates():
    gan = build_loss("gan")
    gan.update(*_pair(32))
    snapshot = gan.state_dict()
    moments = copy.deepcopy(snapshot["_extra_state"]["optimizer"]["state"])
    gan.update(*_pair(32, seed=1))
    after = snapshot["_extra_state"]["optimizer"]["state"]
    assert all(torch.equal(moments[k]["exp_avg"], after[k]["exp_avg"]) for k in moments)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gan_optimizer_follows_the_module_to_cuda():
    gan = build_loss("gan")
    gan.update(*_pair(32))
    gan.to("cuda")
    pred, target = (t.cuda() for t in _pair(32, seed=1))
    gan.update(pred, target)
    state = next(iter(gan._optimizer.state.values()))
    assert state["exp_avg"].is_cuda
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(gan(pred, target))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", OFFLINE)
def test_cuda_matches_cpu(name):
    pred, target = _pair(64)
    cpu = build_loss(name)
    gpu = build_loss(name).to("cuda")
    assert float(gpu(pred.cuda(), target.cuda())) == pytest.approx(
        float(cpu(pred, target)), rel=1e-3, abs=1e-5
    )


# -- build_loss ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OFFLINE)
def test_build_by_name(name):
    loss = build_loss(name)
    assert type(loss) is LOSSES.get(name)
    assert build_loss({"type": name}).name == name


def test_build_dict_spec_with_options():
    loss = build_loss({"type": "charbonnier", "eps": 0.1})
    _, target = _pair(32)
    assert float(loss(target, target)) == pytest.approx(0.1, rel=1e-5)
    assert loss.value_range[1] == pytest.approx(math.sqrt(1.01))
    gan = build_loss({"type": "gan", "lr": 1e-3, "width": 8})
    assert gan.discriminator.layers[0].out_channels == 8


def test_unknown_name_suggests_the_closest():
    with pytest.raises(KeyError, match="Did you mean 'l1'"):
        build_loss("l2")
    with pytest.raises(KeyError, match="Did you mean 'charbonnier'"):
        build_loss({"type": "charbonier"})


def test_bad_specs():
    with pytest.raises(ValueError, match="Allowed: \\['eps'\\]"):
        build_loss({"type": "charbonnier", "epsilon": 0.1})
    with pytest.raises(ValueError, match="'type'"):
        build_loss({"eps": 0.1})
    with pytest.raises(ValueError, match="eps must be"):
        build_loss({"type": "charbonnier", "eps": -1.0})
    with pytest.raises(TypeError, match="name or a dict"):
        build_loss(3)
    with pytest.raises(ValueError, match="iqa:<metric>"):
        build_loss("iqa:")
    with pytest.raises(ValueError, match="iqa:<metric>"):
        build_loss("iqa")
    with pytest.raises(KeyError, match="Did you mean 'psnr'"):
        build_loss("iqa:psnrr")


def test_iqa_metric_as_loss_is_minimised():
    import pyiqa

    loss = build_loss({"type": "iqa:psnr", "scale": 0.05})
    assert loss.name == "iqa:psnr" and loss.scale == 0.05 and not loss.needs_weights
    pred, target = _pair(32)
    psnr = pyiqa.create_metric("psnr", device="cpu")(pred, target).mean()
    value, grad = _value_and_grad(loss, pred, target)
    assert float(value) == pytest.approx(-float(psnr), rel=1e-5)  # higher-better: negated
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    low, high = loss.value_range
    assert low <= float(value) <= high
    assert "'psnr'" in loss.description and "Higher is better" in loss.description


def test_iqa_scale_is_measured_when_built():
    loss = build_loss("iqa:ssim")
    assert math.isfinite(loss.scale) and loss.scale > 0
    ssim = build_loss("ssim")
    # pyiqa's SSIM metric (Y channel) pulls about as hard as the ssim loss.
    assert 0.1 < loss.scale / ssim.scale < 10


# -- losses with weight files --------------------------------------------------------------


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME (also for pyiqa), with the network cut off."""
    from pyiqa.utils import download_util

    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(home / "hub" / "pyiqa"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return home


def _everything_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*"))


@pytest.mark.parametrize(
    ("spec", "filename", "asset"),
    [
        ("perceptual", "vgg19-dcbb9e9d.pth", "perceptual"),
        ("lpips", "alexnet-owt-7be5be79.pth", "lpips"),
        ("iqa:dists", "vgg16-397923af.pth", "dists"),
        ("iqa:niqe", "niqe_modelparameters.mat", "niqe"),
    ],
)
def test_missing_weights_raise_one_clear_error(empty_torch_home, spec, filename, asset):
    with pytest.raises(MissingWeightsError) as info:
        build_loss(spec)
    error = info.value
    assert error.filename == filename
    assert Path(error.expected_path).parent.is_relative_to(empty_torch_home)
    message = str(error)
    assert filename in message and str(Path(error.expected_path).parent) in message
    assert f"lossagent assets install {asset} --from" in message
    assert _everything_under(empty_torch_home) == []  # no file, not even an empty folder


def test_unlisted_metric_download_is_intercepted(empty_torch_home):
    """A metric outside the asset catalogue is stopped at its download, before any network."""
    import torch.hub
    import torchvision.models._api as tv_api

    originals = (torch.hub.download_url_to_file, tv_api.load_state_dict_from_url)
    with pytest.raises(MissingWeightsError) as info:
        build_loss("iqa:ckdn")
    assert info.value.filename == "resnet50-19c8e357.pth"
    assert info.value.filename in str(info.value)
    assert [p for p in _everything_under(empty_torch_home) if p.is_file()] == []
    assert (torch.hub.download_url_to_file, tv_api.load_state_dict_from_url) == originals


def test_perceptual_loads_torchvision_weights_from_torch_home(empty_torch_home):
    from torchvision.models import vgg19

    # A stand-in weight file with the first two convolutions of VGG19 (seeded values).
    with torch.device("meta"):
        layers = vgg19().features[:3]
    generator = torch.Generator().manual_seed(0)
    state = {
        f"features.{k}": torch.randn(v.shape, generator=generator) * 0.1
        for k, v in layers.state_dict().items()
    }
    checkpoints = empty_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / "vgg19-dcbb9e9d.pth")

    rng_state = torch.random.get_rng_state()
    loss = build_loss({"type": "perceptual", "layers": {"relu1_2": 1.0}})
    assert torch.equal(rng_state, torch.random.get_rng_state())
    assert torch.equal(loss.features[0].weight, state["features.0.weight"])
    assert not any(p.requires_grad for p in loss.parameters())
    assert math.isfinite(loss.scale) and loss.scale > 0  # measured when built
    pred, target = _pair(32)
    value, grad = _value_and_grad(loss, pred, target)
    assert torch.isfinite(value) and float(value) > 0
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert float(loss(target, target)) == 0.0
    with pytest.raises(ValueError, match="not VGG19 layers"):
        build_loss({"type": "perceptual", "layers": {"conv9_9": 1.0}})


# -- the catalogue ---------------------------------------------------------------------------


def test_catalogue(empty_torch_home):
    rows = loss_catalogue()
    names = [row["name"] for row in rows]
    assert names[: len(OFFLINE)] == list(OFFLINE)
    assert {"perceptual", "lpips"} <= set(names) and "iqa" not in names
    for row in rows:
        assert set(row) >= {"name", "description", "scale", "needs_weights", "usable_now"}
        assert row["description"]
        if row["name"] in OFFLINE:
            assert row["usable_now"] is True and row["needs_weights"] is False
            assert row["scale"] == LOSSES.get(row["name"]).scale
        else:
            assert row["needs_weights"] is True and row["usable_now"] is False
            assert row["scale"] is None
    extra = loss_catalogue(iqa_metrics=["psnr", "niqe", "ckdn"])[-3:]
    assert [(r["name"], r["needs_weights"], r["usable_now"]) for r in extra] == [
        ("iqa:psnr", False, True),
        ("iqa:niqe", True, False),
        ("iqa:ckdn", True, False),
    ]
    assert extra[0]["value_range"] == (-80.0, 40.0)  # psnr negated
    with pytest.raises(KeyError, match="Did you mean"):
        loss_catalogue(iqa_metrics=["nique"])
