"""Test-wide set-up: nothing may reach the network, and model files live in the repo."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Before torch, pyiqa or huggingface_hub are imported anywhere: pyiqa reads the torch
# hub folder when it is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TORCH_HOME", str(REPO / ".torch_home"))
os.environ.setdefault("MPLBACKEND", "Agg")
# The tiny configurations used in tests run fastest on one thread; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture
def tiny_kwargs() -> dict:
    """The smallest useful configuration: runs a stage in well under a second on CPU."""
    return dict(
        objective="psnr", patch_size=32, batch_size=4, stage_iters=2, max_stages=3,
        eval_images=2, eval_size=64, device="cpu",
    )


def _have_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _module_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def pytest_collection_modifyitems(config, items):
    """Skip, with the reason shown in the summary, what this machine cannot run."""
    reasons = {
        "gpu": "no CUDA device on this machine" if not _have_cuda() else None,
        "llm": (
            "no remote model configured (set LOSSAGENT_LLM and its API key)"
            if not os.environ.get("LOSSAGENT_LLM")
            else None
        ),
        "rl": "stable-baselines3 is not installed (extra 'rl')"
        if _module_missing("stable_baselines3")
        else None,
        "ray": "ray is not installed (extra 'ray')" if _module_missing("ray") else None,
        "local_llm": "llama-cpp-python is not installed (extra 'local-llm')"
        if _module_missing("llama_cpp")
        else None,
    }
    if os.environ.get("CI"):
        # CI installs every extra: a missing one there is a broken install, not a skip.
        missing = [m for m in ("rl", "ray", "local_llm") if reasons[m]]
        if missing:
            raise pytest.UsageError(f"CI run without extras: {[reasons[m] for m in missing]}")
    for item in items:
        for marker, reason in reasons.items():
            if reason and item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=f"[{marker}] {reason}"))


SMALL_TABLE_TOML = """
[table]
description = "3 presets, 2 stages, 2 seeds of the tiny configuration (tests)"
stages = 2
seeds = [123, 456]  # the seeds gymnasium's check_env resets with
metrics = ["psnr", "ssim", "piqe"]

[table.env]
id = "LossAgent/SuperResolution-v0"
kwargs = { patch_size = 32, batch_size = 4, stage_iters = 2, eval_images = 2, eval_size = 64, losses = ["l1", "ssim", "gradient"], device = "cpu" }

[table.presets]
pixel = { l1 = 1.0 }
structure = { ssim = 1.0 }
edges = [1.0, 0.0, 0.5]
"""
"""The [table] section of the small test table (K=3 presets, T=2 stages, 2 seeds)."""


@pytest.fixture(scope="session")
def small_table(tmp_path_factory) -> dict:
    """The small table, built once per session in this process (one worker):
    ``{"path": table file, "suite": its suite file, "seconds": build time}``."""
    import time

    from benchmarks.execution.tabulate import tabulate

    folder = tmp_path_factory.mktemp("small_table")
    suite = folder / "small.toml"
    suite.write_text(SMALL_TABLE_TOML, encoding="utf-8")
    t0 = time.perf_counter()
    tabulate(suite, folder / "small.sqlite", progress=False)
    return {"path": folder / "small.sqlite", "suite": suite, "seconds": time.perf_counter() - t0}


INSTANCE_TABLE_TOML = """
[table]
description = "2 presets, 2 stages, 4 instances (2 train, 2 test) x 2 replicates of the tiny configuration (tests)"
stages = 2
replicates = 2
metrics = ["psnr", "ssim"]

[table.env]
id = "LossAgent/SuperResolution-v0"
kwargs = { patch_size = 32, batch_size = 4, stage_iters = 2, eval_images = 2, eval_size = 64, losses = ["l1", "gradient"], device = "cpu" }

[table.presets]
pixel = { l1 = 1.0 }
edges = { l1 = 1.0, gradient = 1.0 }

[[table.instances]]
name = "photos"
split = "train"
kwargs = { dataset = "skimage:photos" }

[[table.instances]]
name = "scenes"
split = "train"
kwargs = { dataset = "skimage:scenes" }

[[table.instances]]
name = "science"
split = "test"
kwargs = { dataset = "skimage:science" }

[[table.instances]]
name = "noisy"
split = "test"
id = "LossAgent/Denoising-v0"
kwargs = { dataset = "skimage:textures", sigma = 15.0 }
"""
"""A table of problem instances (format 2): K=2 presets, T=2 stages, 4 instances, one
of them another task, 2 replicates each."""


@pytest.fixture(scope="session")
def instance_table(tmp_path_factory) -> dict:
    """The table of instances, built once per session in this process (one worker):
    ``{"path": table file, "suite": its suite file}``."""
    from benchmarks.execution.tabulate import tabulate

    folder = tmp_path_factory.mktemp("instance_table")
    suite = folder / "instances.toml"
    suite.write_text(INSTANCE_TABLE_TOML, encoding="utf-8")
    tabulate(suite, folder / "instances.sqlite", progress=False)
    return {"path": folder / "instances.sqlite", "suite": suite}
