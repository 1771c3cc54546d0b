"""``lossagent assets``: the command line lists and installs assets, and exits 2 on bad input."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch

from benchmarks.cli.assets import register as register_cli
from lossagent_env.assets import basicsr_download_shell
from tests.conftest import REPO
from tests.unit.conftest import files_under


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lossagent")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_list(homes, capsys):
    assert run_cli("assets", "list") == 0
    out = capsys.readouterr().out
    assert "niqe" in out and "perceptual" in out and "missing" in out
    assert str(homes / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in out


def test_cli_install_errors_exit_2_with_a_message(homes, capsys):
    wrong = homes / "src" / "brisque_svm_weights.pth"
    wrong.write_text("nope")
    assert run_cli("assets", "install", "brisqe", "--from", str(wrong)) == 2
    assert "Did you mean 'brisque'" in capsys.readouterr().err
    assert (
        run_cli("assets", "install", "brisque", "--from", str(homes / "missing.pth"))
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert run_cli("assets", "install", "brisque", "--from", str(wrong)) == 2
    assert "not a valid torch file" in capsys.readouterr().err
    assert files_under(homes / "torch") == []


def test_cli_install_success(homes, capsys):
    source = homes / "src" / "brisque_svm_weights.pth"
    torch.save((torch.ones(3), torch.ones(3, 36)), source)
    assert run_cli("assets", "install", "brisque", "--from", str(source)) == 0
    assert (
        "installed "
        + str(homes / "torch" / "hub" / "pyiqa" / "brisque_svm_weights.pth")
        in capsys.readouterr().out
    )


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit) as caught:
        run_cli("assets", "install", "--help")
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert (
        "examples:" in out
        and "lossagent assets install niqe --from" in out
        and basicsr_download_shell("~/assets") in out
    )


def test_cli_as_a_subprocess(tmp_path):
    env = dict(
        os.environ,
        TORCH_HOME=str(tmp_path / "torch"),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO),
    )
    listed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "assets", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "niqe" in listed.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "assets",
            "install",
            "niqe",
            "--from",
            str(tmp_path / "none"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr
