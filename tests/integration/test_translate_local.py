"""TextObjective in translate mode with the embedded local model (offline).

SmolLM2-135M behind the loopback llama.cpp server answers the ``MetricMix`` tool call;
its grammar is built from the schema, whose ``metric`` field lists the usable metric
names, so the mix can only name metrics that exist. Whatever the small model chooses,
the objective must end with a valid mix (or the documented fallback, said openly) and
measure it in an env.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import lossagent_env  # noqa: F401  (registers the env ids)
from lossagent_env.metrics import usable_metrics
from lossagent_env.objectives import TextObjective
from lossagent_env.objectives.text import DEFAULT_MIX

pytestmark = pytest.mark.local_llm


def test_local_model_translates_into_existing_metrics(tiny_kwargs):
    offered = ["psnr", "ssim", "gmsd", "piqe", "entropy"]
    objective = TextObjective(
        "faithful colours and sharp edges, no noise",
        mode="translate",
        llm="local",
        max_retries=1,
        candidates=offered,
    )
    env = gym.make("LossAgent/Denoising-v0", **{**tiny_kwargs, "objective": objective})
    _, info = env.reset(seed=0)

    assert objective.mix and set(objective.mix) <= set(offered) <= set(usable_metrics())
    assert sum(objective.mix.values()) == pytest.approx(1.0)
    assert all(w > 0 for w in objective.mix.values())
    assert objective.dropped == []  # the grammar only lets it name listed metrics
    if objective.fallback_reason is not None:
        assert objective.mix == DEFAULT_MIX and "default mix" in objective.describe()
    assert list(info["metrics"]) == list(objective.mix)
    assert math.isfinite(info["objective"])
    _, reward, *_ = env.step(np.full(env.action_space.shape, 0.5, np.float32))
    assert math.isfinite(reward)
    description = objective.describe()
    assert "faithful colours and sharp edges" in description
    assert all(name in description for name in objective.mix)


def test_no_usable_candidate_falls_back_without_asking_and_says_so():
    objective = TextObjective(
        "anything", mode="translate", llm="local", candidates=["not_a_metric"]
    )
    objective.setup("cpu")
    assert objective.mix == DEFAULT_MIX
    assert (
        objective.fallback_reason == "no metric of the candidates is usable offline now"
    )
    assert "default mix" in objective.describe()
