"""PPOAgent on the synthetic ToyLossEnv: observation flattening, training, acting."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import lossagent_env  # noqa: F401  (registers the env ids)
from agents import PPOAgent, run_episode
from agents.ppo import scaled_flat_observations
from agents.spec import AgentSpec
from tests.toy_env import ToyLossEnv

REPO = Path(__file__).resolve().parents[2]


def _spelled_out(space: spaces.Space, observation: Any) -> np.ndarray:
    """What PPO has always seen: Gymnasium's flat vector, each entry mapped from its
    bounds ``[low, high]`` to ``[-1, 1]`` in float64 as ``2 * (x - low) / (high - low) - 1``,
    clipped to ``[-1, 1]``, then cast to float32; an entry with ``low == high`` maps to 0."""
    flat_space = spaces.flatten_space(space)
    scaled = []
    for x, low, high in zip(
        spaces.flatten(space, observation).tolist(), flat_space.low.tolist(), flat_space.high.tolist()
    ):
        y = 2.0 * (x - low) / (high - low) - 1.0 if high > low else 0.0
        scaled.append(min(max(y, -1.0), 1.0))
    return np.array(scaled, dtype=np.float32)


class _WithSpace(gym.Wrapper):
    """``env`` declaring another observation space (for spaces no env here has)."""

    def __init__(self, env: gym.Env, space: spaces.Space) -> None:
        super().__init__(env)
        self.observation_space = space


def test_flat_observation_rescales_to_minus_one_one():
    env = scaled_flat_observations(ToyLossEnv())
    assert env.observation_space == spaces.Box(-1.0, 1.0, (11,), np.float32)
    flat, _ = env.reset(seed=0)
    # Gymnasium orders Dict keys: loss_values (in [0, 10]), metrics (lpips in [0, 1],
    # psnr in [0, 60]), progress, weights (both in [0, 1]).
    expected = [2 * v / 10 - 1 for v in (0.2, 0.4, 0.3, 0.7)] + [0.0, 2 * 20 / 60 - 1, -1.0] + [-1.0] * 4
    np.testing.assert_allclose(flat, expected, atol=1e-6)
    assert flat.dtype == np.float32


@pytest.mark.parametrize("objective", ["psnr", {"psnr": 1.0, "niqe": 0.5}], ids=["psnr", "psnr+niqe"])
def test_flat_observation_is_bit_for_bit_the_spelled_out_formula(objective):
    table_env = gym.make("LossAgent/Tabular-v0", table="smoke", objective=objective)
    space = table_env.observation_space
    env = scaled_flat_observations(table_env)
    space.seed(0)
    samples = [space.sample() for _ in range(2000)]
    beyond = [spaces.unflatten(space, 3.0 * spaces.flatten(space, s) - 1.0) for s in samples[:50]]
    for observation in samples + beyond:
        np.testing.assert_array_equal(env.observation(observation), _spelled_out(space, observation))
    seed = table_env.unwrapped.table.seeds[0]
    flat, _ = env.reset(seed=seed)
    raw, _ = table_env.reset(seed=seed)
    np.testing.assert_array_equal(flat, _spelled_out(space, raw))


def test_flat_observation_maps_a_zero_width_bound_to_zero():
    space = spaces.Dict({"a": spaces.Box(np.float32([0.0, 2.0]), np.float32([1.0, 2.0]), (2,), np.float32)})
    env = scaled_flat_observations(_WithSpace(ToyLossEnv(), space))
    np.testing.assert_array_equal(env.observation({"a": np.float32([0.25, 2.0])}), np.float32([-0.5, 0.0]))


def test_flat_observation_needs_finite_bounds():
    space = spaces.Dict({"a": spaces.Box(0.0, np.inf, (1,), np.float32)})
    with pytest.raises(ValueError, match="finite observation bounds"):
        scaled_flat_observations(_WithSpace(ToyLossEnv(), space))


def test_agents_touch_no_private_torch_attribute():
    # torch.x._name, or getattr(torch.x, "_name")
    private = re.compile(r"\btorch(?:\.[A-Za-z]\w*)*(?:\._\w+|,\s*[\"']_\w+)")
    found = [
        f"{path.relative_to(REPO)}: {match.group()}"
        for path in sorted((REPO / "agents").rglob("*.py"))
        for match in private.finditer(path.read_text())
    ]
    assert found == []


@pytest.mark.rl
def test_ppo_trains_acts_in_space_and_leaves_global_rngs_alone():
    pytest.importorskip("stable_baselines3")
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    cuda_started = torch.cuda.is_initialized()
    agent = PPOAgent(train_steps=128, n_steps=32, n_epochs=2).train(lambda: ToyLossEnv(max_stages=4))
    assert agent.is_trained and agent.trained_steps == 128
    assert random.getstate() == python_state
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.cuda.is_initialized() == cuda_started  # a CPU policy does not start CUDA
    env = ToyLossEnv(max_stages=4)
    first = run_episode(env, agent, seed=0)
    second = run_episode(env, agent, seed=0)
    assert first.actions.min() >= 0 and first.actions.max() <= 1
    np.testing.assert_array_equal(first.actions, second.actions)
    # Acting sees the observation that training saw.
    observation, info = env.reset(seed=1)
    agent.reset(AgentSpec.from_env(env), 1)
    expected, _ = agent.model.predict(_spelled_out(env.observation_space, observation), deterministic=True)
    np.testing.assert_array_equal(agent.act(observation, info), np.clip(expected, 0.0, 1.0))


_CUDA_CALLER = """
import torch
from agents import PPOAgent
from tests.toy_env import ToyLossEnv

torch.cuda.manual_seed_all(7)  # the caller's seed: queued until CUDA starts
PPOAgent(train_steps=32, n_steps=16, n_epochs=1, device={device!r}).train(lambda: ToyLossEnv(max_stages=4))
if {device!r} == "cpu":
    assert not torch.cuda.is_initialized(), "a CPU policy started CUDA"
after = torch.cuda.get_rng_state()  # starts CUDA if it has not started
torch.cuda.manual_seed_all(7)
assert torch.equal(after, torch.cuda.get_rng_state()), "PPO changed the caller's CUDA generator"
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.rl
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_ppo_leaves_the_callers_cuda_generators_alone(device):
    # A fresh process, so that CUDA has not started when PPO trains.
    script = textwrap.dedent(_CUDA_CALLER).format(device=device)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


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
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    loaded = PPOAgent().load(tmp_path / "policy.zip")
    # stable-baselines3 seeds the global RNGs when it loads a policy saved with a seed
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    a = run_episode(ToyLossEnv(max_stages=4), agent, seed=0).actions
    b = run_episode(ToyLossEnv(max_stages=4), loaded, seed=0).actions
    np.testing.assert_allclose(a, b, rtol=1e-6)
