"""PPOAgent on the synthetic ToyLossEnv: observation flattening, training, acting."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from agents import PPOAgent, run_episode
from agents.ppo import ScaledFlatObservation, flatten_observation
from tests.toy_env import ToyLossEnv


def test_flatten_observation_rescales_to_minus_one_one():
    env = ToyLossEnv()
    obs, _ = env.reset(seed=0)
    flat = flatten_observation(env.observation_space, obs)
    wrapped = ScaledFlatObservation(ToyLossEnv())
    assert flat.shape == wrapped.observation_space.shape == (11,)
    # Gymnasium orders Dict keys: loss_values (in [0, 10]), metrics (lpips in [0, 1],
    # psnr in [0, 60]), progress, weights (both in [0, 1]).
    expected = [2 * v / 10 - 1 for v in (0.2, 0.4, 0.3, 0.7)] + [0.0, 2 * 20 / 60 - 1, -1.0] + [-1.0] * 4
    np.testing.assert_allclose(flat, expected, atol=1e-6)
    assert flat.dtype == np.float32
    wrapped_obs, _ = wrapped.reset(seed=0)
    np.testing.assert_array_equal(wrapped_obs, flat)


@pytest.mark.rl
def test_ppo_trains_acts_in_space_and_leaves_global_rngs_alone():
    pytest.importorskip("stable_baselines3")
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    # Seeding done before CUDA starts is queued and applied when it starts: the CUDA
    # generators of the caller must not be reseeded later by what PPO seeded.
    queued = dict(vars(torch.cuda._lazy_seed_tracker))
    agent = PPOAgent(train_steps=128, n_steps=32, n_epochs=2).train(lambda: ToyLossEnv(max_stages=4))
    assert agent.is_trained and agent.trained_steps == 128
    assert random.getstate() == python_state
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert dict(vars(torch.cuda._lazy_seed_tracker)) == queued
    env = ToyLossEnv(max_stages=4)
    first = run_episode(env, agent, seed=0)
    second = run_episode(env, agent, seed=0)
    assert first.actions.min() >= 0 and first.actions.max() <= 1
    np.testing.assert_array_equal(first.actions, second.actions)


@pytest.mark.rl
def test_ppo_without_training_says_what_to_do():
    pytest.importorskip("stable_baselines3")
    agent = PPOAgent()
    with pytest.raises(RuntimeError, match="train"):
        agent.reset(None, 0)


@pytest.mark.rl
def test_ppo_save_and_load(tmp_path):
    pytest.importorskip("stable_baselines3")
    agent = PPOAgent(train_steps=32, n_steps=16, n_epochs=1).train(ToyLossEnv(max_stages=4))
    agent.save(tmp_path / "policy.zip")
    loaded = PPOAgent().load(tmp_path / "policy.zip")
    a = run_episode(ToyLossEnv(max_stages=4), agent, seed=0).actions
    b = run_episode(ToyLossEnv(max_stages=4), loaded, seed=0).actions
    np.testing.assert_allclose(a, b, rtol=1e-6)
