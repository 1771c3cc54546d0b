"""Learned metrics and losses with managed weights, end to end, offline.

For MUSIQ (one pyiqa file, ``musiq_koniq_ckpt-e95806b9.pth``) the test builds a weight
file of the right format with random values (the state dict of pyiqa's own ``MUSIQ``
architecture), installs it with the real CLI (``python -m benchmarks assets
install musiq --from FILE``, ``TORCH_HOME`` a temporary folder), then loads the metric
through the project's loading code (``create_metric``) and scores small images; the
scores equal those of pyiqa's architecture loaded with the same tensors. A truncated
copy is refused with a clear message and leaves nothing behind.

For the ``perceptual`` loss the file name carries a sha256 prefix (``vgg19-dcbb9e9d``)
that the installer checks, so a random file of the right format is refused by the CLI
(tested: clear message, nothing left behind); with ``--no-checksum`` (for weights of
one's own) the CLI installs it, and the loss loads it through torchvision's code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.hub

from lossagent_env.errors import MissingWeightsError
from lossagent_env.metrics import create_metric, usable_metrics

REPO = Path(__file__).resolve().parents[2]
MUSIQ_FILE = "musiq_koniq_ckpt-e95806b9.pth"
VGG19_FILE = "vgg19-dcbb9e9d.pth"


def cli(*args: str, torch_home: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "TORCH_HOME": str(torch_home),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The module's state dict with every float tensor replaced by small random values."""
    gen = torch.Generator().manual_seed(seed)
    return {
        key: (0.02 * torch.randn(value.shape, generator=gen)).to(value.dtype)
        if value.is_floating_point()
        else value.clone()
        for key, value in module.state_dict().items()
    }


def leftovers(folder: Path) -> list[str]:
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        if folder.exists()
        else []
    )


@pytest.fixture(scope="module")
def musiq_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    from pyiqa.archs.musiq_arch import MUSIQ

    state = random_state(MUSIQ(pretrained=False), seed=0)
    path = tmp_path_factory.mktemp("weights") / MUSIQ_FILE
    torch.save(state, path)
    return path, state


def test_musiq_installed_with_the_cli_loads_and_scores(torch_home, musiq_weights):
    source, state = musiq_weights
    with pytest.raises(
        MissingWeightsError, match=r"lossagent assets install musiq --from"
    ):
        create_metric("musiq")

    done = cli(
        "assets", "install", "musiq", "--from", str(source), torch_home=torch_home
    )
    assert done.returncode == 0, done.stderr
    installed = torch_home / "hub" / "pyiqa" / MUSIQ_FILE
    assert installed.is_file() and str(installed) in done.stdout
    assert "musiq" in usable_metrics()

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    scores = create_metric("musiq")(images, images)
    assert scores.shape == (2,) and torch.isfinite(scores).all()

    from pyiqa.archs.musiq_arch import MUSIQ

    reference = MUSIQ(pretrained=False)
    reference.load_state_dict(state)
    with torch.no_grad():
        expected = reference.eval()(images).flatten()
    torch.testing.assert_close(scores.float(), expected.float(), rtol=1e-4, atol=1e-5)


def test_a_truncated_musiq_file_is_refused_and_nothing_is_left(
    torch_home, musiq_weights, tmp_path
):
    source, _ = musiq_weights
    broken = tmp_path / "broken" / MUSIQ_FILE
    broken.parent.mkdir()
    data = source.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    done = cli(
        "assets", "install", "musiq", "--from", str(broken), torch_home=torch_home
    )
    assert done.returncode != 0
    message = done.stderr + done.stdout
    assert str(broken) in message and "torch" in message
    assert "Traceback" not in message
    assert leftovers(torch_home) == []
    assert "musiq" not in usable_metrics()


def test_perceptual_random_file_is_refused_by_checksum_then_installs_on_request(
    torch_home, tmp_path
):
    from torchvision.models import vgg19

    from lossagent_env.losses import build_loss

    with torch.device("meta"):
        features = vgg19().features
    features.to_empty(device="cpu")
    state = {f"features.{k}": v for k, v in random_state(features, seed=2).items()}
    source = tmp_path / VGG19_FILE
    torch.save(state, source)

    done = cli(
        "assets", "install", "perceptual", "--from", str(source), torch_home=torch_home
    )
    assert done.returncode != 0
    message = done.stderr + done.stdout
    assert "sha256" in message and "dcbb9e9d" in message and "Traceback" not in message
    assert leftovers(torch_home) == []
    with pytest.raises(
        MissingWeightsError, match="lossagent assets install perceptual"
    ):
        build_loss("perceptual")

    # Weights of the right format but not the official ones install only on request.
    done = cli(
        "assets", "install", "perceptual", "--from", str(source), "--no-checksum",
        torch_home=torch_home,
    )
    assert done.returncode == 0, done.stderr
    assert (torch_home / "hub" / "checkpoints" / VGG19_FILE).is_file()
    loss = build_loss({"type": "perceptual", "layers": {"relu2_2": 1.0}, "scale": 1.0})
    conv = loss.features[0]
    torch.testing.assert_close(conv.weight, state["features.0.weight"])
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 32, 32, generator=gen)
    assert float(loss(target, target)) == 0.0
    assert (
        float(
            loss(
                (target + 0.2 * torch.randn(target.shape, generator=gen)).clamp(0, 1),
                target,
            )
        )
        > 0
    )
