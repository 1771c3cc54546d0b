"""The transfer baseline: the training seeds' best sequence, played on held-out seeds."""

from __future__ import annotations

import gymnasium as gym
import pytest

import lossagent_env  # noqa: F401  (registers the ids)
from agents import TransferAgent, make_agent, run_episode
from lossagent_env.tabular import TableAnalysis


def _table(objective="psnr"):
    return gym.make("LossAgent/Tabular-v0", table="smoke", objective=objective)


@pytest.mark.parametrize("objective", ["psnr", "piqe"])
def test_plays_the_best_sequence_on_the_mean_of_its_training_seeds(objective):
    env = _table(objective)
    agent = make_agent("transfer", train_seeds=[0, 1, 2])
    trajectory = run_episode(env, agent, seed=7)  # a held-out seed
    expected = TableAnalysis("smoke", objective).oracle(seeds=[0, 1, 2])["presets"]
    played = [stage.notes["preset"] for stage in trajectory.stages]
    assert played == expected and len(played) == env.unwrapped.max_stages
    k, t = len(env.unwrapped.preset_names), env.unwrapped.max_stages
    assert trajectory.stages[0].notes["train_episodes"] == k**t * 3  # its budget, recorded
    assert trajectory.stages[0].notes["train_seeds"] == [0, 1, 2]
    # the same sequence on every seed, whatever it observes
    again = run_episode(env, agent, seed=11)
    assert [s.notes["preset"] for s in again.stages] == played


def test_one_training_seed_plays_that_seeds_oracle():
    env = _table()
    agent = TransferAgent(train_seeds=[4])
    trajectory = run_episode(env, agent, seed=9)
    assert [s.notes["preset"] for s in trajectory.stages] == TableAnalysis("smoke", "psnr").oracle(seeds=[4])["presets"]


@pytest.mark.parametrize("seeds", [[], [-1], [1.5], "0", [True]])
def test_bad_train_seeds_name_the_value(seeds):
    with pytest.raises(ValueError, match="train_seeds="):
        TransferAgent(train_seeds=seeds)


def test_needs_a_table():
    with pytest.raises(ValueError, match="CartPoleEnv is not one. Allowed: LossAgent/Tabular-v0"):
        TransferAgent().prepare(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="Allowed: its seeds"):
        TransferAgent(train_seeds=[0, 99]).prepare(_table())
