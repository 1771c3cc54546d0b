"""run_episode, Trajectory, AgentSpec and make_agent, on the synthetic ToyLossEnv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import agents
from agents import Agent, AgentSpec, FixedAgent, InvalidActionError, RandomAgent, Trajectory, make_agent, run_episode
from agents.base import BaseAgent
from tests.toy_env import ToyLossEnv

REPO = Path(__file__).resolve().parents[2]
CHEAP_AGENTS = ["fixed", "random", "egreedy", "ucb", "thompson", "dwa", "pbt"]


class _Constant(BaseAgent):
    name = "constant"

    def __init__(self, value):
        super().__init__()
        self.value = value

    def _act(self, observation, info):
        return self.value


def test_spec_from_env_reads_losses_objective_and_budget():
    env = ToyLossEnv(max_stages=4, stage_iters=7)
    spec = AgentSpec.from_env(env)
    assert spec.loss_names == ("l1", "ssim", "gradient", "gan")
    assert spec.scales["gan"] == 0.1
    assert spec.descriptions["l1"].startswith("Mean absolute error")
    assert "LPIPS" in spec.objective
    assert spec.metric_names == ("psnr", "lpips")
    assert spec.lower_better == {"psnr": False, "lpips": True}
    assert (spec.max_stages, spec.stage_iters) == (4, 7)
    assert spec.task.startswith("super-resolution")


@pytest.mark.parametrize("name", CHEAP_AGENTS)
def test_every_cheap_agent_runs_an_episode_in_space(name):
    env = ToyLossEnv(max_stages=6)
    seen = []
    traj = run_episode(env, make_agent(name), seed=3, callbacks=[lambda rec, e: seen.append(rec)])
    assert len(traj) == 6 and seen == traj.stages
    for stage in traj.stages:
        action = np.asarray(stage.action, np.float32)
        assert env.action_space.contains(action)
    assert [s.stage for s in traj.stages] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("name", CHEAP_AGENTS)
def test_trajectory_round_trips_through_json_exactly(name):
    traj = run_episode(ToyLossEnv(max_stages=4, feedback=True), make_agent(name), seed=0)
    text = json.dumps(traj.to_dict())
    again = Trajectory.from_dict(json.loads(text))
    assert again == traj
    assert json.dumps(again.to_dict()) == text
    assert again.stages[-1].feedback is not None


def test_trajectory_conveniences_agree_with_the_env():
    env = ToyLossEnv(max_stages=5)
    traj = run_episode(env, FixedAgent("pixel+structure"), seed=1)
    assert traj.episode_return == pytest.approx(traj.final_objective - traj.initial["objective"])
    np.testing.assert_allclose(traj.returns, np.cumsum(traj.rewards))
    assert traj.actions.shape == (5, 4)
    assert traj.best_objective == pytest.approx(max(traj.objectives.max(), traj.initial["objective"]))
    assert traj.stages[0].weights["ssim"] == pytest.approx(0.5)  # action 1.0 * scale 0.5


def test_same_seed_same_episode_and_no_global_seeding():
    state = np.random.get_state()[1].copy()
    first = run_episode(ToyLossEnv(max_stages=5), RandomAgent(), seed=11)
    second = run_episode(ToyLossEnv(max_stages=5), RandomAgent(), seed=11)
    other = run_episode(ToyLossEnv(max_stages=5), RandomAgent(), seed=12)
    np.testing.assert_array_equal(first.actions, second.actions)
    assert not np.array_equal(first.actions, other.actions)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize(
    "bad",
    [np.array([0.5, 0.5, 0.5, 1.5]), np.array([0.5, np.nan, 0.5, 0.5]), np.array([0.5, 0.5]), np.full(4, -0.1)],
    ids=["above-1", "nan", "wrong-shape", "negative"],
)
def test_out_of_space_action_raises_naming_the_agent(bad):
    env = ToyLossEnv(max_stages=3)
    with pytest.raises(InvalidActionError, match="'constant'.*outside the action space"):
        run_episode(env, _Constant(bad), seed=0)
    assert env._stage == 0  # the env was never stepped with it


def test_initial_action_is_played_first_and_observed():
    traj = run_episode(ToyLossEnv(max_stages=3), FixedAgent("pixel"), seed=0, initial_action={"gan": 1.0})
    assert traj.stages[0].action == [0.0, 0.0, 0.0, 1.0]
    assert traj.stages[0].notes == {"source": "initial_action"}
    assert traj.stages[1].action == [1.0, 0.0, 0.0, 0.0]


def test_initial_weights_of_an_agent_are_its_first_action():
    agent = RandomAgent(initial_weights=[0.1, 0.2, 0.3, 0.4])
    traj = run_episode(ToyLossEnv(max_stages=3), agent, seed=0)
    np.testing.assert_allclose(traj.stages[0].action, [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    assert traj.stages[0].notes == {"source": "initial_weights"}
    assert traj.stages[1].notes == {"held": False}


def test_initial_weights_are_validated():
    with pytest.raises(KeyError, match="Did you mean 'ssim'"):
        run_episode(ToyLossEnv(), FixedAgent(initial_weights={"sim": 1.0}), seed=0)
    with pytest.raises(ValueError, match=r"gan=1\.5.*\[0, 1\]"):
        run_episode(ToyLossEnv(), FixedAgent(initial_weights={"gan": 1.5}), seed=0)


def test_make_agent_builds_every_registered_name_and_hints_unknown_ones():
    for name in agents.AGENTS:
        if name in ("llm",):
            continue
        agent = make_agent(name)
        assert agent.name == name
        assert isinstance(agent, Agent)
    with pytest.raises(KeyError, match="Did you mean 'ucb'"):
        make_agent("ucb1")
    assert make_agent("random", hold=3).hold == 3


def test_importing_agents_is_cheap():
    # torch comes with lossagent_env (its task registry holds the degradations); the
    # optional heavy parts (RL, the OpenAI client, the local model) load on first use.
    code = (
        "import sys, agents, agents.llm; "
        "heavy = [m for m in ('stable_baselines3', 'langchain_openai', 'llama_cpp', 'lossagent_env.chat.local') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_notes_must_be_json_types():
    class Bad(_Constant):
        def notes(self):
            return {"thing": object()}

    with pytest.raises(TypeError, match="JSON types"):
        run_episode(ToyLossEnv(max_stages=2), Bad(np.full(4, 0.5, np.float32)), seed=0)
