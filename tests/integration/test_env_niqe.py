"""objective="niqe" works offline once its parameters are installed by the documented command."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import lossagent_env  # noqa: F401
from lossagent_env.errors import MissingWeightsError
from tests.conftest import REPO


def test_niqe_objective_after_assets_install(torch_home):
    from lossagent_env.assets import fetch_basicsr_sdist

    kwargs = dict(objective="niqe", patch_size=32, batch_size=4, stage_iters=2, max_stages=2,
                  eval_images=2, eval_size=96)
    with pytest.raises(MissingWeightsError, match="lossagent assets install niqe"):
        gym.make("LossAgent/SuperResolution-v0", **kwargs)

    sdist = fetch_basicsr_sdist(REPO / ".cache" / "assets")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "assets", "install", "niqe", "--from", str(sdist)],
        capture_output=True, text=True, env={**os.environ, "TORCH_HOME": str(torch_home)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr

    env = gym.make("LossAgent/SuperResolution-v0", **kwargs)
    u = env.unwrapped
    assert u.objective.lower_better == {"niqe": True}
    obs, info = env.reset(seed=0)
    start = info["metrics"]["niqe"]
    assert np.isfinite(start) and info["objective"] == pytest.approx(-start)
    obs, reward, terminated, truncated, info = env.step(np.full(len(u.loss_names), 0.5, np.float32))
    assert np.isfinite(info["metrics"]["niqe"])
    assert reward == pytest.approx(start - info["metrics"]["niqe"], abs=1e-5)  # lower is better
