"""Population-based training: the Ray Tune rules, PBTAgent and run_pbt on ToyLossEnv."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents import PBTAgent, Trajectory, run_episode, run_pbt
from agents.pbt import exploit_and_explore, quantile_members
from tests.toy_env import ToyLossEnv


@pytest.mark.parametrize("n, size", [(2, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)])
def test_quantile_sizes_follow_ray_tune(n, size):
    bottom, top = quantile_members(list(range(n)), 0.25, np.random.default_rng(0))
    assert len(bottom) == len(top) == size
    assert bottom == list(range(size)) and sorted(top) == list(range(n - size, n))


def test_exploit_copies_a_top_member_and_perturbs_or_resamples():
    rng = np.random.default_rng(0)
    weights = [np.full(3, 0.5, np.float32), np.array([0.5, 0.25, 0.0], np.float32), np.full(3, 0.1, np.float32)]
    events = exploit_and_explore(4, [3.0, 9.0, 1.0], weights, rng, loss_names=("a", "b", "c"))
    assert len(events) == 1
    event = events[0]
    assert (event["stage"], event["member"], event["from_member"]) == (4, 2, 1)
    assert event["old_weights"] == pytest.approx([0.1, 0.1, 0.1])
    new = np.array(event["new_weights"])
    np.testing.assert_array_equal(weights[2], new.astype(np.float32))
    source = np.array([0.5, 0.25, 0.0])
    for i, name in enumerate("abc"):
        if name not in event["resampled"]:
            assert new[i] == pytest.approx(source[i] * 0.8, rel=1e-6) or new[i] == pytest.approx(
                min(source[i] * 1.2, 1.0), rel=1e-6
            )
    json.dumps(events)


def test_ties_are_not_exploited():
    weights = [np.zeros(2, np.float32) for _ in range(3)]
    assert exploit_and_explore(1, [1.0, 1.0, 1.0], weights, np.random.default_rng(0)) == []


def test_pbt_agent_time_shares_one_env_and_logs_exploits():
    env = ToyLossEnv(max_stages=6, noise=0.0)
    agent = PBTAgent(population=3)
    traj = run_episode(env, agent, seed=0)
    kinds = [e["kind"] for e in agent.log]
    assert kinds[:3] == ["init"] * 3 and kinds.count("exploit") >= 1
    assert [s.stage for s in traj.stages] == list(range(1, 7))
    # Each recorded stage continues the member that was best when it began, and its
    # reward is that member's improvement.
    for stage in traj.stages:
        objectives = stage.notes["objectives"]
        assert objectives[stage.notes["member"]] == max(objectives)
        assert stage.reward == pytest.approx(stage.objective - max(objectives))
    assert traj.final_objective >= max(traj.stages[-1].notes["objectives"])
    # Every exploit event is in the notes of the stage it happened before.
    noted = [e for s in traj.stages for e in s.notes["perturbations"]]
    assert noted == [e for e in agent.log if e["kind"] == "exploit"]
    assert Trajectory.from_dict(json.loads(json.dumps(traj.to_dict()))) == traj


def test_pbt_agent_is_deterministic_for_a_seed():
    runs = []
    for seed in (1, 1, 2):
        agent = PBTAgent(population=4)
        traj = run_episode(ToyLossEnv(max_stages=6), agent, seed=seed)
        runs.append((agent.log, traj.actions.tolist(), traj.objectives.tolist()))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_pbt_agent_needs_an_env_with_snapshots():
    class NoSnapshots(ToyLossEnv):
        get_state = None

    with pytest.raises(TypeError, match="get_state"):
        run_episode(NoSnapshots(), PBTAgent(), seed=0)


def test_run_pbt_returns_the_best_members_lineage():
    result = run_pbt(lambda: ToyLossEnv(max_stages=5, noise=0.0), population=3, seed=2)
    finals = [t.final_objective for t in result.members]
    assert result.best_member == int(np.argmax(finals))
    assert result.trajectory.final_objective == max(finals)
    assert result.stages_trained == 15
    assert any(e["kind"] == "exploit" for e in result.log)
    for member in result.members:
        assert len(member) == 5
        assert member.episode_return == pytest.approx(member.final_objective - member.initial["objective"])
    json.dumps(result.log)


@pytest.mark.parametrize(
    "kwargs, message", [({"population": 1}, "population=1"), ({"quantile": 0.75}, "quantile=0.75")]
)
def test_pbt_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PBTAgent(**kwargs)
