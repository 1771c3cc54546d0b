"""Every agent family on a preset env (a table replay): actions are presets, no agent
ends above the table's optimum, and the ones that need weight vectors say so."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from langchain_core.messages import AIMessage

import lossagent_env  # noqa: F401  (registers the ids)
from agents import LLMAgent, make_agent, run_episode
from agents.base import AgentSpec, Trajectory
from agents.llm.prompts import render_parts
from lossagent_env.tabular import TableAnalysis
from tests.fake_chat import ScriptedChatModel, tool_message

FAMILIES = [
    ("fixed", {}),
    ("fixed", {"weights": "edges"}),
    ("random", {}),
    ("egreedy", {}),
    ("ucb", {}),
    ("thompson", {}),
]


def _env(table, objective="psnr"):
    return gym.make("LossAgent/Tabular-v0", table=str(table["path"]), objective=objective)


@pytest.mark.parametrize("name, kwargs", FAMILIES, ids=lambda x: x if isinstance(x, str) else json.dumps(x))
def test_baselines_play_presets_and_never_beat_the_oracle(small_table, name, kwargs):
    for objective in ("psnr", {"ssim": 1.0, "piqe": 0.1}):
        for seed in (123, 456):
            env = _env(small_table, objective)
            traj = run_episode(env, make_agent(name, **kwargs), seed=seed)
            presets = env.unwrapped.preset_names
            assert len(traj) == 2 and all(stage.preset in presets for stage in traj.stages)
            for stage in traj.stages:  # the action recorded is the preset's weights
                index = presets.index(stage.preset)
                assert stage.action == [float(w) for w in env.unwrapped.preset_weights[index]]
            oracle = TableAnalysis(small_table["path"], objective).oracle(seeds=[seed])
            assert traj.final_objective <= oracle["final_objective"]
            replayed = Trajectory.from_dict(json.loads(json.dumps(traj.to_dict())))
            assert [s.preset for s in replayed.stages] == [s.preset for s in traj.stages]
    if kwargs.get("weights") == "edges":
        assert [s.preset for s in traj.stages] == ["edges", "edges"]


def test_the_oracle_sequence_is_reached_by_a_fixed_schedule(small_table):
    oracle = TableAnalysis(small_table["path"], "psnr").oracle(seeds=[456])
    env2 = _env(small_table)
    traj = run_episode(env2, make_agent("random"), seed=456, initial_action=oracle["presets"][0])
    assert traj.stages[0].preset == oracle["presets"][0]


def test_bandit_arms_are_the_env_presets(small_table):
    env = _env(small_table)
    agent = make_agent("ucb")
    run_episode(env, agent, seed=123)
    assert agent.arm_names == list(env.unwrapped.preset_names)
    with pytest.raises(KeyError, match="Did you mean 'edges'"):
        run_episode(_env(small_table), make_agent("ucb", presets=["pixel", "edgs"]), seed=123)


def test_a_fixed_agent_names_an_unknown_preset(small_table):
    with pytest.raises(KeyError, match="Did you mean 'structure'"):
        run_episode(_env(small_table), make_agent("fixed", weights="structur"), seed=123)
    with pytest.raises(ValueError, match="give a preset's name"):
        run_episode(_env(small_table), make_agent("fixed", weights={"l1": 1.0}), seed=123)


@pytest.mark.parametrize("name", ["dwa", "pbt"])
def test_agents_that_need_weight_vectors_say_so(small_table, name):
    with pytest.raises(ValueError, match="needs continuous weights"):
        run_episode(_env(small_table), make_agent(name), seed=123)


@pytest.mark.rl
def test_ppo_trains_a_discrete_policy_on_the_training_seeds(small_table):
    pytest.importorskip("stable_baselines3")
    agent = make_agent("ppo", train_steps=256, n_steps=32, train_seeds=[123])
    traj = run_episode(_env(small_table), agent, seed=456)
    assert agent.model.action_space == gym.spaces.Discrete(3)
    assert traj.stages[0].notes["train_seeds"] == [123]
    # Another agent with the same settings on the same configuration reuses the policy.
    again = make_agent("ppo", train_steps=256, n_steps=32, train_seeds=[123])
    second = run_episode(_env(small_table), again, seed=456)
    assert again.model is agent.model
    assert [s.preset for s in second.stages] == [s.preset for s in traj.stages]
    assert second.final_objective <= TableAnalysis(small_table["path"], "psnr").oracle(seeds=[456])["final_objective"]


def _choice(preset: str, rationale: str = "sharper edges") -> AIMessage:
    return tool_message("PresetChoice", {"preset": preset, "rationale": rationale})


def test_llm_agent_chooses_presets_by_name_with_retries_and_fallback(small_table):
    script = [
        _choice("edgez"),  # not a preset: asked again
        _choice("edges"),
        AIMessage("no tool call"), AIMessage("still none"), AIMessage("nothing"),  # fallback
    ]
    model = ScriptedChatModel(messages=iter(script))
    env = _env(small_table)
    traj = run_episode(env, LLMAgent(model, max_retries=2), seed=123)
    first, second = traj.stages
    assert first.preset == "edges" and first.notes["retries"] == 1
    assert first.notes["rationale"] == "sharper edges"
    assert second.notes["fallback"] is True and second.preset == "edges"  # the previous preset
    assert "Input should be 'pixel', 'structure' or 'edges'" in model.seen[1][-1].content
    system = model.seen[0][0].content
    assert "| preset | l1 | ssim | gradient |" in system and "| edges | 1.00 | 0.00 | 0.50 |" in system
    assert "Choose exactly one preset by its name: pixel, structure, edges." in system
    later = model.seen[2][1].content  # the history of the second decision names the preset
    assert "| 1 | edges |" in later


def test_preset_prompt_parts_render(small_table):
    env = _env(small_table)
    spec = AgentSpec.from_env(env)
    from agents.llm.schema import make_preset_schema

    parts = render_parts(spec, [], method="function_calling", schema=make_preset_schema(spec.preset_names))
    assert "`PresetChoice`" in parts.format and "pixel, structure, edges" in parts.format
    assert spec.presets["edges"] == (1.0, 0.0, 0.5)
    assert np.array_equal(spec.preset_vector(2), np.array([1.0, 0.0, 0.5], np.float32))
