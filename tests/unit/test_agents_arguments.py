"""Agent arguments are checked when the agent is built: a value of the wrong type or
range is refused in one line naming it, never later inside numpy or stable-baselines3."""

from __future__ import annotations

import math
import re

import pytest

from agents import (
    DWAAgent,
    FixedAgent,
    PBTAgent,
    PPOAgent,
    RandomAgent,
    make_agent,
    run_episode,
    run_pbt,
)
from agents.bandits import (
    UCB1,
    EpsilonGreedyAgent,
    GaussianThompson,
    ThompsonAgent,
    UCBAgent,
)
from lossagent_env.wrappers import PresetActions
from tests.toy_env import ToyLossEnv

PRESETS = {"sharp": {"gradient": 1.0}, "smooth": {"l1": 1.0, "ssim": 1.0}}
"""Presets of a user's preset env, none of them named 'pixel'."""


def _one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


# ------------------------------------------------------------------ fixed
def test_fixed_plays_the_first_preset_of_a_preset_env_by_default():
    env = PresetActions(ToyLossEnv(max_stages=2), PRESETS)
    traj = run_episode(env, FixedAgent(), seed=0)
    assert [s.preset for s in traj.stages] == ["sharp", "sharp"]
    assert traj.stages[0].notes == {"preset": "sharp"}


def test_fixed_still_plays_pixel_by_default_on_a_continuous_env():
    traj = run_episode(ToyLossEnv(max_stages=2), FixedAgent(), seed=0)
    assert traj.stages[0].action == [1.0, 0.0, 0.0, 0.0]
    assert traj.stages[0].notes == {"preset": "pixel"}


def test_fixed_takes_a_preset_by_name():
    env = PresetActions(ToyLossEnv(max_stages=2), PRESETS)
    traj = run_episode(env, make_agent("fixed", preset="smooth"), seed=0)
    assert [s.preset for s in traj.stages] == ["smooth", "smooth"]
    traj = run_episode(ToyLossEnv(max_stages=1), make_agent("fixed", preset="pixel+structure"), seed=0)
    assert traj.stages[0].notes == {"preset": "pixel+structure"}
    with pytest.raises(KeyError, match="Did you mean 'smooth'"):
        run_episode(PresetActions(ToyLossEnv(max_stages=1), PRESETS), FixedAgent(preset="smoth"), seed=0)


def test_an_unknown_fixed_argument_lists_every_accepted_one():
    with pytest.raises(KeyError) as caught:
        make_agent("fixed", presets="edges")
    _one_line(caught, "Did you mean 'preset'", "Known: ['initial_weights', 'preset', 'weights']")


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"weights": "pixel", "preset": "pixel"}, "not both"),
        ({"preset": True}, "preset=True"),
        ({"preset": [1.0, 0.0]}, "preset=[1.0, 0.0]"),
        ({"weights": 0.5}, "weights=0.5"),
        ({"weights": ["0.5", 1.0]}, "weights=['0.5', 1.0]"),
        ({"weights": {1, 2}}, "weights={1, 2}"),
    ],
)
def test_fixed_refuses_what_is_not_weights_or_a_preset(kwargs, named):
    with pytest.raises(ValueError) as caught:
        FixedAgent(**kwargs)
    _one_line(caught, "FixedAgent(", named)


def test_a_preset_index_needs_a_preset_env():
    with pytest.raises(ValueError, match="a preset index needs a preset env"):
        run_episode(ToyLossEnv(max_stages=1), FixedAgent(preset=1), seed=0)
    traj = run_episode(PresetActions(ToyLossEnv(max_stages=1), PRESETS), FixedAgent(preset=1), seed=0)
    assert traj.stages[0].preset == "smooth"


# ------------------------------------------------------------------ random and bandits
@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"alpha": "x"}, "alpha='x'"),
        ({"alpha": math.inf}, "alpha=inf"),
        ({"hold": True}, "hold=True"),
        ({"hold": "3"}, "hold='3'"),
        ({"distribution": ["uniform"]}, "distribution=['uniform']"),
    ],
)
def test_random_agent_names_a_bad_argument(kwargs, named):
    with pytest.raises(ValueError) as caught:
        RandomAgent(**kwargs)
    _one_line(caught, f"RandomAgent({named})")


@pytest.mark.parametrize(
    "cls, kwargs, named",
    [
        (EpsilonGreedyAgent, {"epsilon": "x"}, "epsilon='x'"),
        (EpsilonGreedyAgent, {"epsilon": math.nan}, "epsilon=nan"),
        (UCBAgent, {"c": "big"}, "c='big'"),
        (UCBAgent, {"c": math.inf}, "c=inf"),
        (UCBAgent, {"normalize": "yes"}, "normalize='yes'"),
        (UCBAgent, {"discount": "0.9"}, "discount='0.9'"),
        (UCBAgent, {"window": True}, "window=True"),
        (UCBAgent, {"window": 2.5}, "window=2.5"),
        (ThompsonAgent, {"prior_variance": math.inf}, "prior_variance=inf"),
        (ThompsonAgent, {"prior_strength": None}, "prior_strength=None"),
        (UCBAgent, {"presets": "pixel"}, "presets='pixel'"),
        (UCBAgent, {"presets": 3}, "presets=3"),
        (UCBAgent, {"presets": []}, "presets=[]"),
        (UCBAgent, {"presets": ["pixel", "pixel"]}, "more than once"),
    ],
)
def test_bandit_agents_name_a_bad_argument(cls, kwargs, named):
    with pytest.raises(ValueError) as caught:
        cls(**kwargs)
    _one_line(caught, f"{cls.__name__}(", named)


def test_bandit_cores_name_a_bad_argument():
    with pytest.raises(ValueError, match=re.escape("UCB1(n_arms='3')")):
        UCB1("3")
    with pytest.raises(ValueError, match=re.escape("GaussianThompson(prior_variance='1')")):
        GaussianThompson(2, prior_variance="1")


def test_good_bandit_and_random_arguments_still_run():
    agents = [
        UCBAgent(presets=("l1", "ssim"), c=2, window=3),
        EpsilonGreedyAgent(epsilon=0, discount=1),
        ThompsonAgent(prior_strength=2, prior_variance=0.5),
        RandomAgent("dirichlet", alpha=2, hold=2),
    ]
    for agent in agents:
        assert len(run_episode(ToyLossEnv(max_stages=3), agent, seed=0)) == 3


# ------------------------------------------------------------------ DWA and PBT
@pytest.mark.parametrize(
    "build, named",
    [
        (lambda: DWAAgent(temperature="hot"), "DWAAgent(temperature='hot')"),
        (lambda: DWAAgent(temperature=math.inf), "DWAAgent(temperature=inf)"),
        (lambda: PBTAgent(population="x"), "PBTAgent(population='x')"),
        (lambda: PBTAgent(population=2.0), "PBTAgent(population=2.0)"),
        (lambda: PBTAgent(perturb_factors=(0.8,)), "PBTAgent(perturb_factors"),
        (lambda: PBTAgent(perturb_factors=[0.8, -1.2]), "PBTAgent(perturb_factors.1=-1.2)"),
        (lambda: PBTAgent(resample_prob="x"), "PBTAgent(resample_prob='x')"),
        (lambda: PBTAgent(quantile=math.nan), "PBTAgent(quantile=nan)"),
        (lambda: run_pbt(ToyLossEnv, population="3"), "run_pbt(population='3')"),
    ],
)
def test_dwa_and_pbt_name_a_bad_argument(build, named):
    with pytest.raises(ValueError) as caught:
        build()
    _one_line(caught, named)


def test_pbt_takes_perturb_factors_as_a_list():
    assert PBTAgent(perturb_factors=[0.5, 2]).perturb_factors == (0.5, 2.0)


# ------------------------------------------------------------------ PPO
@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"n_steps": 1}, "n_steps=1"),
        ({"batch_size": 1}, "batch_size=1"),
        ({"n_steps": 0}, "n_steps=0"),
        ({"n_steps": "32"}, "n_steps='32'"),
        ({"n_steps": True}, "n_steps=True"),
        ({"train_steps": 2.5}, "train_steps=2.5"),
        ({"n_epochs": 0}, "n_epochs=0"),
        ({"learning_rate": "fast"}, "learning_rate='fast'"),
        ({"learning_rate": -1e-3}, "learning_rate=-0.001"),
        ({"learning_rate": math.nan}, "learning_rate=nan"),
        ({"gamma": 1.5}, "gamma=1.5"),
        ({"seed": -1}, "seed=-1"),
        ({"device": "gpu"}, "device='gpu'"),
        ({"train_seeds": "12"}, "train_seeds='12'"),
        ({"train_seeds": []}, "train_seeds=[]"),
        ({"train_seeds": [0, -1]}, "train_seeds.1=-1"),
        ({"ppo_kwargs": "fast"}, "ppo_kwargs='fast'"),
        ({"ppo_kwargs": {"n_steps": 4}}, "sets 'n_steps', which PPOAgent sets itself"),
        ({"ppo_kwargs": {"env": None}}, "sets 'env', which PPOAgent sets itself"),
        ({"ppo_kwargs": {"clip_range": -0.2}}, "ppo_kwargs.clip_range=-0.2"),
        ({"ppo_kwargs": {"clip_range_vf": 0.0}}, "ppo_kwargs.clip_range_vf=0.0"),
        ({"ppo_kwargs": {"gae_lambda": 2}}, "ppo_kwargs.gae_lambda=2"),
        ({"ppo_kwargs": {"normalize_advantage": "no"}}, "ppo_kwargs.normalize_advantage='no'"),
        ({"ppo_kwargs": {"target_kl": 0}}, "ppo_kwargs.target_kl=0"),
    ],
)
def test_ppo_names_a_bad_argument_when_built(kwargs, named):
    with pytest.raises(ValueError) as caught:
        PPOAgent(**kwargs)
    _one_line(caught, "PPOAgent", named)


def test_ppo_says_how_to_train_on_rollouts_of_one_step():
    with pytest.raises(ValueError) as caught:
        PPOAgent(n_steps=1)
    _one_line(caught, "n_steps >= 2", "normalize_advantage")


@pytest.mark.rl
def test_ppo_kwargs_names_must_be_ppo_arguments():
    pytest.importorskip("stable_baselines3")
    with pytest.raises(ValueError) as caught:
        PPOAgent(ppo_kwargs={"clip_rnge": 0.1})
    _one_line(caught, "Did you mean 'clip_range'")


@pytest.mark.rl
def test_ppo_with_one_step_rollouts_trains_without_advantage_normalization():
    pytest.importorskip("stable_baselines3")
    agent = PPOAgent(train_steps=4, n_steps=1, n_epochs=1, ppo_kwargs={"normalize_advantage": False})
    agent.train(ToyLossEnv(max_stages=2))
    assert agent.trained_steps == 4
    assert len(run_episode(ToyLossEnv(max_stages=2), agent, seed=0)) == 2


@pytest.mark.rl
def test_what_stable_baselines3_refuses_later_is_a_value_error():
    pytest.importorskip("stable_baselines3")
    agent = PPOAgent(train_steps=4, n_steps=4)
    agent.batch_size = 1  # changed after the checks: stable-baselines3 asserts on it
    with pytest.raises(ValueError, match="stable-baselines3 refused the settings of PPOAgent"):
        agent.train(ToyLossEnv(max_stages=2))


# ------------------------------------------------------------------ training budgets
@pytest.mark.parametrize(
    "build, named",
    [
        (lambda: PPOAgent(train_steps=10**12), "PPOAgent(train_steps=1000000000000)"),
        (lambda: PPOAgent(train_steps=2.0), "PPOAgent(train_steps=2.0)"),
        (lambda: PPOAgent().train(ToyLossEnv(max_stages=2), steps=10**12), "PPOAgent.train(steps=1000000000000)"),
        (lambda: UCBAgent(train_episodes=10**12), "UCBAgent(train_episodes=1000000000000)"),
        (lambda: ThompsonAgent(train_episodes=-1), "ThompsonAgent(train_episodes=-1)"),
    ],
)
@pytest.mark.timeout(60)  # a budget that is not refused trains (for ever)
def test_an_absurd_training_budget_is_refused_with_its_bound_before_anything_starts(build, named):
    with pytest.raises(ValueError) as caught:
        build()
    _one_line(caught, named)
    assert re.search(r"(less|greater) than or equal to \d+|valid integer", str(caught.value)), caught.value


def test_the_largest_training_budgets_are_accepted():
    from agents.arguments import MAX_TRAIN_EPISODES, MAX_TRAIN_STEPS

    assert PPOAgent(train_steps=MAX_TRAIN_STEPS).train_steps == MAX_TRAIN_STEPS
    assert UCBAgent(train_episodes=MAX_TRAIN_EPISODES).train_episodes == MAX_TRAIN_EPISODES


# ------------------------------------------------------------------ LLM
@pytest.mark.parametrize(
    "kwargs, named, allowed",
    [
        ({"rationale_chars": 10**9}, "rationale_chars=1000000000", "less than or equal to 1000"),
        ({"rationale_chars": 0}, "rationale_chars=0", "greater than or equal to 1"),
        ({"temperature": math.nan}, "temperature=nan", "finite number"),
        ({"temperature": math.inf}, "temperature=inf", "finite number"),
        ({"temperature": -1}, "temperature=-1", "greater than or equal to 0"),
        ({"temperature": "0.2"}, "temperature='0.2'", "valid number"),
        ({"timeout": -1}, "timeout=-1", "greater than 0"),
        ({"timeout": math.nan}, "timeout=nan", "finite number"),
        ({"max_history_tokens": math.nan}, "max_history_tokens=nan", "valid integer"),
        ({"max_history_tokens": 1.5}, "max_history_tokens=1.5", "valid integer"),
        ({"max_history_tokens": "5"}, "max_history_tokens='5'", "valid integer"),
        ({"max_history_tokens": 0}, "max_history_tokens=0", "greater than or equal to 1"),
        ({"model": ""}, "model=''", "a LangChain chat model, a model name"),
        ({"model": 123}, "model=123", "a LangChain chat model, a model name"),
        ({"base_url": ""}, "base_url=''", "at least 1 character"),
        ({"method": "xml"}, "method='xml'", "'function_calling'"),
        ({"history": "random"}, "history='random'", "'chronological' or 'sorted'"),
        ({"max_retries": -1}, "max_retries=-1", "greater than or equal to 0"),
        ({"transport_retries": 1.0}, "transport_retries=1.0", "valid integer"),
        ({"backoff_max": math.inf}, "backoff_max=inf", "finite number"),
        ({"examples": 51}, "examples=51", "less than or equal to 50"),
    ],
)
def test_llm_agent_names_a_bad_argument_its_value_and_what_is_allowed(kwargs, named, allowed):
    from agents import LLMAgent

    with pytest.raises(ValueError) as caught:
        LLMAgent(**kwargs)
    _one_line(caught, f"LLMAgent({named}): ", allowed)


def test_llm_agent_keeps_good_arguments():
    from agents import LLMAgent

    agent = LLMAgent("openai:gpt-4o-mini", temperature=0.7, timeout=30, max_history_tokens=500, rationale_chars=1000)
    assert (agent.temperature, agent.timeout, agent.max_history_tokens, agent.rationale_chars) == (0.7, 30, 500, 1000)
    assert LLMAgent(max_history_tokens=None, timeout=None).max_history_tokens is None
