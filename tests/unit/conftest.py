"""Fixtures and helpers of the asset tests (the table, the installer, the command line)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty torch hub dir and Hugging Face cache; a socket connection fails the test."""
    # Imported here, not at module level, so collecting other tests does not load torch.
    import torch.hub
    from huggingface_hub import constants as hf_constants

    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(torch_home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    def tripwire(self, address, *args):
        raise AssertionError(f"network connection attempted to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", tripwire)
    (tmp_path / "src").mkdir()
    return tmp_path


def files_under(folder: Path) -> list[Path]:
    return (
        sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
    )


def anything_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []
