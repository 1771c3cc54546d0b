"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty ``TORCH_HOME`` (and torch hub folder) under ``tmp_path``; metric cache cleared."""
    # Imported here, not at module level, so collecting other tests does not load torch.
    import torch.hub

    from lossagent_env.metrics import clear_cache

    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(home / "hub"))
    clear_cache()
    yield home
    clear_cache()
