"""The distribution as others receive it: its licence, what the wheel ships, and a build
that leaves the source tree as it found it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "build_tools", "lossagent_env", "agents", "benchmarks")
"""What a build reads: the project files and the packages."""


def test_the_licence_is_the_mit_licence_that_pyproject_declares():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c)" in text and "LossAgent Gym developers" in text
    assert "Permission is hereby granted, free of charge" in text
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]
    assert declared == {"text": "MIT"}


@pytest.mark.parametrize("folder", [".torch-home", ".torch_home"])
def test_git_ignores_a_project_local_torch_home(folder):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(
        ["git", "check-ignore", "-q", f"{folder}/hub/checkpoints/vgg19.pth"], cwd=ROOT, capture_output=True, check=False
    )
    assert proc.returncode == 0, f"{folder}/ is not in .gitignore"


@pytest.mark.timeout(300)
def test_pip_wheel_ships_the_licence_and_the_tables_readme_and_leaves_no_build_folder(tmp_path):
    tree, wheels = tmp_path / "tree", tmp_path / "wheels"
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=ignore)
        else:
            shutil.copy2(source, tree / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "-w", str(wheels), "--no-deps", "--no-build-isolation", "-q"],
        cwd=tree, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tree / "build").exists(), "pip wheel left a build/ folder in the source tree"
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lossagent_env/tabular/tables/README.md" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
    assert not any(n.startswith("build_tools/") or "lossagent_build_backend" in n for n in names)
