"""Twenty decisions of the embedded local model on the real tiny env.

Prints the format success rate (answers valid at the first try) and the median decision
latency; the note of the agents issue quotes them.
"""

from __future__ import annotations

import statistics

import gymnasium as gym
import numpy as np
import pytest

import lossagent_env  # noqa: F401
from agents import run_episode

TINY = dict(objective="psnr", patch_size=32, batch_size=4, stage_iters=2, max_stages=10,
            eval_images=2, eval_size=64, losses=("l1", "ssim", "gradient", "gan"))


@pytest.mark.slow
@pytest.mark.local_llm
def test_twenty_local_decisions_are_well_formed(capsys):
    from agents.llm import LLMAgent

    env = gym.make("LossAgent/SuperResolution-v0", **TINY)
    notes = []
    for seed in (0, 1):
        agent = LLMAgent("local", max_retries=2, transport_retries=1)
        traj = run_episode(env, agent, seed=seed)  # checks every action against the space
        notes += [stage.notes for stage in traj.stages]
    assert len(notes) == 20
    first_try = [n for n in notes if not n["fallback"] and n["retries"] == 0]
    parsed = [n for n in notes if not n["fallback"]]
    rate = len(first_try) / len(notes)
    latency = statistics.median(n["latency_s"] for n in notes)
    with capsys.disabled():
        print(f"\nlocal model: format_success_rate={rate:.2f} parsed={len(parsed)}/20 "
              f"median_latency_s={latency:.2f} "
              f"corrections={sum(len(n['corrections']) for n in notes)}")
    assert rate >= 0.9
    assert all(n["rationale"] for n in parsed)
    assert all(np.isfinite(n["latency_s"]) and n["prompt_tokens"] > 0 for n in parsed)
