"""Bandit cores on synthetic problems with known arm means (no env), and the bandit agents."""

from __future__ import annotations

import numpy as np
import pytest

from agents import EpsilonGreedyAgent, ThompsonAgent, UCBAgent, run_episode
from agents.bandits import UCB1, EpsilonGreedy, GaussianThompson
from agents.base import AgentSpec
from agents.presets import weight_presets
from tests.toy_env import ToyLossEnv

MEANS = np.array([0.20, 0.45, 0.70, 0.55, 0.30])
BEST = int(np.argmax(MEANS))
CORES = {
    "ucb1": lambda rng, **kw: UCB1(len(MEANS), rng=rng, **kw),
    "thompson": lambda rng, **kw: GaussianThompson(len(MEANS), rng=rng, **kw),
    "egreedy": lambda rng, **kw: EpsilonGreedy(len(MEANS), rng=rng, **kw),
}


def _play(core, means_at, pulls, noise_rng, noise=0.15):
    arms = []
    for t in range(pulls):
        arm = core.select_arm()
        core.update(arm, float(means_at(t)[arm] + noise * noise_rng.normal()))
        arms.append(arm)
    return np.array(arms)


@pytest.mark.parametrize("kind", sorted(CORES))
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_core_pulls_the_best_arm_most_often(kind, seed):
    core = CORES[kind](np.random.default_rng(seed))
    arms = _play(core, lambda t: MEANS, 400, np.random.default_rng(100 + seed))
    counts = np.bincount(arms, minlength=len(MEANS))
    assert counts.argmax() == BEST, counts
    assert counts[BEST] > 0.5 * len(arms), counts
    late = np.bincount(arms[-100:], minlength=len(MEANS))
    assert late[BEST] >= 70, late
    np.testing.assert_allclose(core.means[BEST], MEANS[BEST], atol=0.05)


@pytest.mark.parametrize("kind", ["ucb1", "thompson"])
@pytest.mark.parametrize("forget", [{"window": 100}, {"discount": 0.98}], ids=["window", "discount"])
def test_forgetting_tracks_a_change_of_the_best_arm(kind, forget):
    switched = MEANS.copy()
    switched[0] = 0.95  # the worst arm becomes the best after pull 300
    means_at = lambda t: MEANS if t < 300 else switched
    late_best = {}
    for options in ({}, forget):
        hits = 0
        for seed in range(3):
            core = CORES[kind](np.random.default_rng(seed), **options)
            arms = _play(core, means_at, 500, np.random.default_rng(200 + seed))
            hits += int(np.sum(arms[-100:] == 0))
        late_best[bool(options)] = hits
    assert late_best[True] > 200, late_best  # > 2/3 of the last 300 pulls
    assert late_best[True] > late_best[False], late_best


@pytest.mark.parametrize("kind", sorted(CORES))
def test_untried_arms_come_first(kind):
    core = CORES[kind](np.random.default_rng(0))
    first = []
    for _ in range(len(MEANS)):
        arm = core.select_arm()
        core.update(arm, 0.0)
        first.append(arm)
    if kind == "thompson":  # Thompson has no untried-first rule; it only has to pick valid arms
        assert all(0 <= a < len(MEANS) for a in first)
    else:
        assert sorted(first) == list(range(len(MEANS)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"discount": 0.9, "window": 5}, "not both"),
        ({"discount": 1.5}, r"discount=1\.5"),
        ({"window": 0}, "window=0"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UCB1(3, **kwargs)
    with pytest.raises(ValueError, match=message):
        UCBAgent(**kwargs)


def test_update_rejects_bad_input():
    core = GaussianThompson(2)
    with pytest.raises(ValueError, match="arm=2"):
        core.update(2, 1.0)
    with pytest.raises(ValueError, match="reward=nan"):
        core.update(0, float("nan"))


@pytest.mark.parametrize("cls", [EpsilonGreedyAgent, UCBAgent, ThompsonAgent])
def test_bandit_agent_plays_presets_and_learns_the_best_one(cls):
    env = ToyLossEnv(max_stages=60, noise=0.0, best=(1.0, 1.0, 0.0, 0.0))
    agent = cls(presets=["l1", "gradient", "pixel+structure", "uniform"])
    traj = run_episode(env, agent, seed=0)
    arms = [s.notes["arm"] for s in traj.stages]
    spec = AgentSpec.from_env(env)
    presets = weight_presets(spec)
    for stage in traj.stages:
        np.testing.assert_array_equal(stage.action, presets[stage.notes["arm"]])
    assert max(set(arms), key=arms.count) == "pixel+structure", arms


def test_bandit_agent_unknown_preset_hints():
    with pytest.raises(KeyError, match="Did you mean 'pixel\\+structure'"):
        run_episode(ToyLossEnv(), UCBAgent(presets=["pixel+structur"]), seed=0)
