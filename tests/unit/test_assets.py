"""Weight-file assets: the catalogue, offline installs that refuse wrong files, the guard."""

from __future__ import annotations

import ast
import graphlib
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.hub

import lossagent_env.assets
from lossagent_env.assets import (
    ASSETS,
    basicsr_download_command,
    basicsr_download_shell,
    install,
    install_command,
    no_downloads,
    status,
)
from lossagent_env.errors import MissingWeightsError
from tests.conftest import REPO
from tests.unit.conftest import anything_under, files_under


# -------------------------------------------------------------------- errors
def test_missing_weights_error_message_and_attributes():
    error = MissingWeightsError(
        "metric 'niqe'",
        "a.mat",
        Path("/x/a.mat"),
        "lossagent assets install niqe --from PATH",
    )
    assert str(error) == (
        "metric 'niqe' needs the weight file a.mat, expected at /x/a.mat. It is not there and this project "
        "never downloads at run time. Install it from a local copy with: lossagent assets install niqe --from PATH"
    )
    assert (error.what, error.filename, error.expected_path) == (
        "metric 'niqe'",
        "a.mat",
        Path("/x/a.mat"),
    )
    assert isinstance(error, RuntimeError)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.install_hint == error.install_hint


# ----------------------------------------------------------------- catalogue
def test_catalogue_names_the_files_each_library_loads(homes):
    hub = homes / "torch" / "hub"
    perceptual = ASSETS.get("perceptual")
    assert perceptual.kind == "loss"
    (vgg,) = perceptual.files
    assert vgg.filename == "vgg19-dcbb9e9d.pth" and vgg.hash_prefix == "dcbb9e9d"
    assert vgg.path() == hub / "checkpoints" / "vgg19-dcbb9e9d.pth"
    (niqe,) = ASSETS.get("niqe").files
    assert niqe.path() == hub / "pyiqa" / "niqe_modelparameters.mat"
    assert [f.filename for f in ASSETS.get("lpips").files] == [
        "alexnet-owt-7be5be79.pth",
        "LPIPS_v0.1_alex-df73285e.pth",
    ]
    (clip,) = ASSETS.get("clipiqa").files
    assert clip.filename == "RN50.pt" and len(clip.sha256) == 64
    backbone, head = ASSETS.get("topiq_nr").files
    assert (
        backbone.hf_repo == "timm/resnet50.a1_in1k"
        and backbone.filename == "model.safetensors"
    )
    assert str(backbone.path()).startswith(
        str(homes / "hf" / "models--timm--resnet50.a1_in1k")
    )
    assert head.location == "pyiqa"
    for name in [
        "niqe",
        "brisque",
        "lpips",
        "dists",
        "musiq",
        "clipiqa",
        "topiq_nr",
        "nima",
    ]:
        assert ASSETS.get(name).kind == "metric"


def test_status_rows(homes):
    rows = {row["name"]: row for row in status()}
    assert {"niqe", "lpips", "perceptual", "topiq_nr"} <= set(rows)
    for row in rows.values():
        assert set(row) >= {"name", "kind", "files", "installed", "usable_offline"}
        assert row["installed"] is False and row["usable_offline"] is False
        assert row["files"] and all(
            f["path"].startswith(str(homes)) for f in row["files"]
        )


# ------------------------------------------------------------------ installs
def test_install_refuses_a_file_with_the_wrong_checksum_and_leaves_nothing(homes):
    fake = homes / "src" / "vgg19-dcbb9e9d.pth"
    torch.save({"weight": torch.zeros(2)}, fake)
    with pytest.raises(ValueError, match="sha256 starting with dcbb9e9d"):
        install("perceptual", fake)
    assert anything_under(homes / "torch") == []
    assert ASSETS.get("perceptual").installed() is False


def test_install_refuses_a_non_torch_file_and_leaves_nothing(homes):
    fake = homes / "src" / "brisque_svm_weights.pth"
    fake.write_text("<html>404 Not Found</html>")
    with pytest.raises(
        ValueError, match=r"not a valid torch file for brisque_svm_weights\.pth"
    ):
        install("brisque", fake)
    assert anything_under(homes / "torch") == []


def test_install_refuses_a_truncated_torch_file(homes):
    whole = homes / "src" / "whole.pth"
    torch.save({"weight": torch.arange(10000.0)}, whole)
    cut = homes / "src" / "brisque_svm_weights.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match="brisque_svm_weights.pth"):
        install("brisque", cut)
    assert files_under(homes / "torch") == []


def test_install_refuses_niqe_parameters_that_are_not_the_standard_ones(homes):
    rng = np.random.default_rng(0)
    npz = homes / "src" / "niqe_pris_params.npz"
    np.savez(npz, mu_pris_param=rng.random((1, 36)), cov_pris_param=np.eye(36))
    with pytest.raises(ValueError, match="not the standard NIQE pristine parameters"):
        install("niqe", npz)
    wrong_shape = homes / "src" / "small.npz"
    np.savez(wrong_shape, mu_pris_param=np.zeros(10), cov_pris_param=np.eye(10))
    with pytest.raises(ValueError, match="shapes 36 and 36x36"):
        install("niqe", wrong_shape)
    text = homes / "src" / "niqe_modelparameters.mat"
    text.write_text("not a MATLAB file")
    with pytest.raises(ValueError, match="NIQE"):
        install("niqe", text)
    other = homes / "src" / "notes.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match="'notes.txt' is not a NIQE source"):
        install("niqe", other)
    empty_tar = homes / "src" / "basicsr-0.0.tar.gz"
    empty_tar.write_bytes(b"")
    with pytest.raises(ValueError, match="does not hold NIQE parameters"):
        install("niqe", empty_tar)
    assert anything_under(homes / "torch") == []


def test_install_puts_a_right_file_where_pyiqa_looks(homes):
    source = homes / "src" / "brisque_svm_weights.pth"
    torch.save((torch.randn(5), torch.randn(5, 36)), source)
    (path,) = install("brisque", source)
    assert path == homes / "torch" / "hub" / "pyiqa" / "brisque_svm_weights.pth"
    assert path.read_bytes() == source.read_bytes()
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert files_under(homes / "torch") == [path]  # no temporary file left
    rows = {row["name"]: row for row in status()}
    assert (
        rows["brisque"]["installed"] is True
        and rows["brisque"]["usable_offline"] is True
    )


def test_install_from_a_folder_installs_what_it_holds(homes):
    nested = homes / "src" / "weights" / "pyiqa"
    nested.mkdir(parents=True)
    torch.save(
        {"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)},
        nested / "LPIPS_v0.1_alex-df73285e.pth",
    )
    (path,) = install("lpips", homes / "src")
    assert path.name == "LPIPS_v0.1_alex-df73285e.pth"
    assert [f.filename for f in ASSETS.get("lpips").missing()] == [
        "alexnet-owt-7be5be79.pth"
    ]


def test_install_into_the_hugging_face_cache(homes):
    from huggingface_hub import try_to_load_from_cache
    from safetensors.torch import save_file

    source = homes / "src" / "model.safetensors"
    save_file({"conv1.weight": torch.zeros(2, 3, 1, 1)}, str(source))
    (path,) = install("topiq_nr", source)
    found = try_to_load_from_cache("timm/resnet50.a1_in1k", "model.safetensors")
    assert found == str(path)
    from huggingface_hub import hf_hub_download

    with no_downloads("test"):  # offline: resolved from the cache's refs/main
        assert hf_hub_download("timm/resnet50.a1_in1k", "model.safetensors") == str(
            path
        )
    assert (
        homes / "hf" / "models--timm--resnet50.a1_in1k" / "refs" / "main"
    ).read_text() == path.parent.name


def test_install_refuses_a_file_of_another_asset(homes):
    source = homes / "src" / "something_else.pth"
    torch.save({}, source)
    with pytest.raises(
        ValueError, match=r"'something_else.pth' is not a file of asset 'lpips'"
    ):
        install("lpips", source)


def test_install_of_an_unknown_asset_suggests_a_name(homes):
    with pytest.raises(KeyError, match="Did you mean 'niqe'"):
        install("niqee", homes / "src")


def test_install_from_a_missing_source_says_what_to_give(homes):
    with pytest.raises(
        FileNotFoundError,
        match=r"does not exist\. For 'niqe' give the basicsr source distribution",
    ):
        install("niqe", homes / "nowhere.tar.gz")


# -------------------------------------------------------------- no downloads
def test_no_downloads_refuses_every_route_and_restores(homes):
    from huggingface_hub import hf_hub_download

    real = torch.hub.download_url_to_file
    with no_downloads("loss 'perceptual'", asset="perceptual"):
        with pytest.raises(MissingWeightsError) as caught:
            torch.hub.load_state_dict_from_url(
                "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
            )
        assert (
            Path(caught.value.expected_path)
            == homes / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
        )
        assert (
            caught.value.install_hint
            == "lossagent assets install perceptual --from PATH"
        )
        with pytest.raises(MissingWeightsError) as caught:
            urllib.request.urlopen(
                "https://openaipublic.azureedge.net/clip/models/abc/RN50.pt"
            )
        assert (
            caught.value.expected_path == homes / "torch" / "hub" / "clip" / "RN50.pt"
        )
        assert "install clipiqa" in caught.value.install_hint  # found by file name
        with pytest.raises(MissingWeightsError) as caught:
            torch.hub.load_state_dict_from_url(
                "https://example.org/unknown-0123abcd.pth"
            )
        assert caught.value.install_hint.startswith("cp /path/to/unknown-0123abcd.pth ")
    with pytest.raises(MissingWeightsError) as caught, no_downloads("metric 'x'"):
        hf_hub_download("timm/resnet50.a1_in1k", "model.safetensors")
    assert caught.value.filename == "model.safetensors"
    assert "install topiq_nr" in caught.value.install_hint
    assert torch.hub.download_url_to_file is real
    assert urllib.request.urlopen.__module__ == "urllib.request"
    assert files_under(homes) == []


# ----------------------------------------------------------- basicsr command
def test_basicsr_download_command_is_written_once_and_used_everywhere():
    shell = basicsr_download_shell()
    assert shell == (
        "pip download basicsr==1.4.2 --no-deps --no-binary basicsr --no-build-isolation -d DIR"
    )
    command = basicsr_download_command(Path("/d"), "-q")
    assert command == [*shell.split()[:-2], "-q", "-d", "/d"]
    assert install_command("niqe") == (
        f"lossagent assets install niqe --from basicsr-1.4.2.tar.gz (get that file with: {shell})"
    )
    assert f"get it with: {shell})" in ASSETS.get("niqe").sources_hint
    assert basicsr_download_shell("~/assets") in (REPO / "README.md").read_text()


# -------------------------------------------------------------------- layout
def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names.add(node.module)
    return names


def test_asset_modules_import_only_siblings_below_them():
    folder = Path(lossagent_env.assets.__file__).parent
    graph = {}
    for path in sorted(folder.glob("*.py")):
        imported = _imports(path)
        upper = {n for n in imported if n.split(".")[0] in ("agents", "benchmarks")}
        assert not upper, f"{path.name} imports {upper}"
        if path.name == "__init__.py":
            continue
        assert "lossagent_env.assets" not in imported, path.name  # the package itself
        prefix = "lossagent_env.assets."
        graph[path.stem] = {n[len(prefix) :] for n in imported if n.startswith(prefix)}
    assert set(graph) == {"catalog", "guard", "installer", "niqe", "verify"}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError on a cycle
