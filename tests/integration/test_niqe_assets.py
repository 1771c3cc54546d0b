"""NIQE offline: fetch the basicsr sdist once, install its parameters, check the scores.

The sdist is cached in ``<repo>/.cache/assets/`` and fetched with pip only when absent
(the package registry is reachable here and in CI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.hub
import torch.nn.functional as F
from skimage import data

from lossagent_env.assets import ASSETS, BASICSR_SDIST, fetch_basicsr_sdist, install
from lossagent_env.errors import MissingWeightsError
from lossagent_env.metrics import create_metric, usable_metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSET_CACHE = REPO_ROOT / ".cache" / "assets"


@pytest.fixture(scope="session")
def basicsr_sdist() -> Path:
    """``basicsr-1.4.2.tar.gz``, from the project cache or fetched once with pip."""
    return fetch_basicsr_sdist(ASSET_CACHE)


def photo(name: str, size: int = 256) -> torch.Tensor:
    """A scikit-image photograph, center-cropped to ``size``, as ``(1, 3, size, size)`` in [0, 1]."""
    image = getattr(data, name)()
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    crop = image[top : top + size, left : left + size]
    return (
        torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
        / 255
    )


def test_sdist_is_cached_in_the_project(basicsr_sdist):
    assert basicsr_sdist == ASSET_CACHE / BASICSR_SDIST
    assert fetch_basicsr_sdist(ASSET_CACHE) == basicsr_sdist  # second call reuses it


def test_niqe_without_parameters_says_how_to_install(torch_home):
    with pytest.raises(
        MissingWeightsError,
        match=r"lossagent assets install niqe --from basicsr-1\.4\.2\.tar\.gz",
    ):
        create_metric("niqe")


def test_niqe_scores_order_clean_noisy_blurred(torch_home, basicsr_sdist):
    (path,) = install("niqe", basicsr_sdist)
    assert path == torch_home / "hub" / "pyiqa" / "niqe_modelparameters.mat"
    params = scipy.io.loadmat(path)
    assert params["mu_prisparam"].shape == (1, 36) and params[
        "cov_prisparam"
    ].shape == (36, 36)
    assert "niqe" in usable_metrics()

    niqe = create_metric("niqe")
    gen = torch.Generator().manual_seed(0)
    for name in ["astronaut", "chelsea", "coffee"]:
        clean = photo(name)
        noisy = (clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
        small = F.interpolate(
            clean, scale_factor=0.25, mode="bicubic", align_corners=False
        )
        blurred = F.interpolate(
            small, size=clean.shape[-2:], mode="bicubic", align_corners=False
        ).clamp(0, 1)
        scores = niqe(torch.cat([clean, noisy, blurred]))
        assert torch.isfinite(scores).all()
        clean_score, noisy_score, blurred_score = scores.tolist()
        assert clean_score < noisy_score, (name, scores)
        assert clean_score < blurred_score, (name, scores)
    with pytest.raises(ValueError, match=r"at least 96x96 px; got 64x64"):
        niqe(photo("astronaut", size=64))


def test_niqe_installs_from_the_npz_and_from_pyiqa_mat(
    torch_home, basicsr_sdist, tmp_path
):
    import io
    import tarfile

    with tarfile.open(basicsr_sdist) as archive:
        member = next(
            m for m in archive.getmembers() if m.name.endswith("niqe_pris_params.npz")
        )
        npz = tmp_path / "niqe_pris_params.npz"
        npz.write_bytes(archive.extractfile(member).read())
    (from_npz,) = install("niqe", npz)
    first = scipy.io.loadmat(from_npz)
    # pyiqa's own file format, as installed, is accepted as a source too
    mat_copy = tmp_path / "copy" / "niqe_modelparameters.mat"
    mat_copy.parent.mkdir()
    mat_copy.write_bytes(from_npz.read_bytes())
    (from_mat,) = install("niqe", mat_copy.parent)
    second = scipy.io.loadmat(from_mat)
    np.testing.assert_array_equal(first["mu_prisparam"], second["mu_prisparam"])
    np.testing.assert_array_equal(first["cov_prisparam"], second["cov_prisparam"])
    reference = np.load(io.BytesIO(npz.read_bytes()))
    np.testing.assert_array_equal(
        first["mu_prisparam"].ravel(), reference["mu_pris_param"].ravel()
    )
    assert ASSETS.get("niqe").installed()
