"""Every agent on the real LossAgent env (tiny CPU configuration).

Each episode goes through a wrapper that checks every action against the action space
before the env sees it, independently of run_episode's own check.
"""

from __future__ import annotations

import json
import time

import gymnasium as gym
import numpy as np
import pytest

import lossagent_env  # noqa: F401  (registers the env ids)
from agents import AgentSpec, PBTAgent, PPOAgent, Trajectory, make_agent, run_episode, run_pbt
from tests.fake_chat import ScriptedChatModel, tool_message

TINY = dict(objective="psnr", stage_iters=2, max_stages=3, patch_size=32, batch_size=4, eval_images=2, device="cpu")


class InSpace(gym.Wrapper):
    """Fails the test if any action outside the action space reaches the env."""

    def __init__(self, env):
        super().__init__(env)
        self.steps = 0

    def step(self, action):
        array = np.asarray(action)
        assert array.dtype == np.float32 and self.action_space.contains(array), action
        self.steps += 1
        return self.env.step(action)


def make_env(env_id: str = "LossAgent/SuperResolution-v0", **overrides):
    return InSpace(gym.make(env_id, **{**TINY, **overrides}))


def _llm_agent(spec_names):
    args = dict.fromkeys(spec_names, 0.5) | {"rationale": "balanced"}
    reply = tool_message("LossWeights", args)
    return make_agent("llm", model=ScriptedChatModel(messages=iter([reply] * 10)))


@pytest.fixture(scope="module")
def env():
    env = make_env()
    yield env
    env.close()


def test_spec_from_the_real_env(env):
    spec = AgentSpec.from_env(env)
    unwrapped = env.unwrapped
    assert spec.loss_names == unwrapped.loss_names and len(spec.loss_names) >= 2
    assert all(spec.descriptions[n] for n in spec.loss_names)
    assert spec.objective == unwrapped.objective.describe()
    assert spec.metric_names == tuple(unwrapped.objective.metric_names)
    assert spec.lower_better["psnr"] is False
    assert (spec.max_stages, spec.stage_iters) == (3, 2)
    assert spec.env_id == "LossAgent/SuperResolution-v0"
    assert spec.task.startswith("super-resolution")


# Ids are prefixed: tests/conftest.py skips items whose keywords contain a marker name
# such as "llm", and a bare parameter id "llm" would be one.
@pytest.mark.parametrize(
    "name",
    ["fixed", "random", "egreedy", "ucb", "thompson", "dwa", "pbt", "llm"],
    ids=lambda name: f"agent-{name}",
)
def test_every_agent_runs_a_whole_episode_in_space(env, name):
    agent = _llm_agent(env.unwrapped.loss_names) if name == "llm" else make_agent(name)
    before = env.steps
    traj = run_episode(env, agent, seed=0)
    assert len(traj) == 3 and env.steps - before == 3
    assert [s.stage for s in traj.stages] == [1, 2, 3]
    for stage in traj.stages:
        assert set(stage.weights) == set(env.unwrapped.loss_names)
        assert np.isfinite(stage.objective)
    if name == "pbt":  # each stage's reward is the improvement of the member that trained it
        for stage in traj.stages:
            start = stage.notes["objectives"][stage.notes["member"]]
            assert stage.reward == pytest.approx(stage.objective - start, abs=1e-6)
    else:
        assert traj.episode_return == pytest.approx(traj.final_objective - traj.initial["objective"], abs=1e-6)
    assert Trajectory.from_dict(json.loads(json.dumps(traj.to_dict()))) == traj


def test_same_seed_same_trajectory_on_the_real_env(env):
    first = run_episode(env, make_agent("thompson"), seed=4)
    second = run_episode(env, make_agent("thompson"), seed=4)
    np.testing.assert_array_equal(first.actions, second.actions)
    np.testing.assert_array_equal(first.objectives, second.objectives)


def test_initial_action_gives_every_agent_the_same_start(env):
    start = dict.fromkeys(env.unwrapped.loss_names, 0.0) | {env.unwrapped.loss_names[0]: 1.0}
    objectives = {
        name: run_episode(env, make_agent(name), seed=1, initial_action=start).stages[0].objective
        for name in ("random", "ucb", "dwa")
    }
    assert len(set(objectives.values())) == 1


def test_pbt_agent_exploits_on_the_real_env():
    env = make_env(max_stages=4)
    agent = PBTAgent(population=3)
    traj = run_episode(env, agent, seed=0)
    exploits = [e for e in agent.log if e["kind"] == "exploit"]
    assert exploits, agent.log
    for event in exploits:
        assert set(event) >= {"stage", "member", "from_member", "old_weights", "new_weights"}
        assert event["from_objective"] > event["objective"]
    for stage in traj.stages:  # the recorded member was the best one when the stage began
        objectives = stage.notes["objectives"]
        assert objectives[stage.notes["member"]] == max(objectives)
        assert stage.reward == pytest.approx(stage.objective - max(objectives), abs=1e-6)
    env.close()


def test_run_pbt_with_one_env_per_member():
    result = run_pbt(lambda: make_env(), population=3, seed=0)
    assert any(e["kind"] == "exploit" for e in result.log)
    assert result.trajectory.final_objective == max(t.final_objective for t in result.members)
    assert result.stages_trained == 9


@pytest.mark.rl
@pytest.mark.slow
def test_ppo_trains_then_acts_in_space():
    pytest.importorskip("stable_baselines3")
    started = time.perf_counter()
    agent = PPOAgent(train_steps=192, n_steps=32, n_epochs=2).train(lambda: make_env())
    train_seconds = time.perf_counter() - started
    assert agent.trained_steps == 192
    env = make_env()
    state = np.random.get_state()[1].copy()
    first = run_episode(env, agent, seed=0)
    second = run_episode(env, agent, seed=0)
    np.testing.assert_array_equal(first.actions, second.actions)  # deterministic policy
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # no global seeding left behind
    assert env.steps == 6
    print(f"PPO: 192 training steps in {train_seconds:.1f} s")


@pytest.mark.rl
def test_untrained_ppo_trains_on_the_episode_env_through_prepare():
    pytest.importorskip("stable_baselines3")
    env = make_env()
    agent = PPOAgent(train_steps=8, n_steps=8, n_epochs=1)
    traj = run_episode(env, agent, seed=0)
    assert agent.is_trained and len(traj) == 3
    assert env.steps == 8 + 3


@pytest.mark.slow
@pytest.mark.local_llm
def test_llm_agent_with_the_embedded_local_model():
    """One stage decided by SmolLM2-135M behind the loopback llama.cpp server."""
    pytest.importorskip("llama_cpp")
    from agents.llm import LLMAgent
    from tests.toy_env import ToyLossEnv

    agent = LLMAgent("local", max_retries=1, transport_retries=0, timeout=300)
    traj = run_episode(InSpace(ToyLossEnv(max_stages=1)), agent, seed=0)
    notes = traj.stages[0].notes
    assert notes["model"] == "smollm2-135m-instruct"
    if not notes["fallback"]:
        assert notes["prompt_tokens"] > 0 and notes["completion_tokens"] > 0
    assert not (notes["fallback"] and not notes["errors"])  # a fallback always says why
