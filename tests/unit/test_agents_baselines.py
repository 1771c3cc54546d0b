"""Weight presets, FixedAgent, RandomAgent and DWAAgent."""

from __future__ import annotations

import numpy as np
import pytest

from agents import DWAAgent, FixedAgent, RandomAgent, run_episode
from agents.base import AgentSpec
from agents.presets import named_mixes, weight_presets
from lossagent_env.losses import LOSSES
from tests.toy_env import ToyLossEnv

OFFLINE = ("l1", "mse", "charbonnier", "ssim", "ms_ssim", "gradient", "fft", "tv", "gan")


def _spec(names):
    return AgentSpec(
        loss_names=tuple(names),
        descriptions={n: f"{n} loss." for n in names},
        scales=dict.fromkeys(names, 1.0),
        roles={n: LOSSES.get(n.split(":")[0]).role for n in names if n.split(":")[0] in LOSSES},
        objective="Maximise PSNR.",
        metric_names=("psnr",),
        lower_better={"psnr": False},
        max_stages=5,
        stage_iters=2,
    )


def _as_dict(spec, vector):
    return {n: float(v) for n, v in zip(spec.loss_names, vector) if v}


def test_esrgan_on_the_offline_repository_falls_back_to_gradient_and_fft():
    spec = _spec(OFFLINE)
    mixes = named_mixes(spec)
    assert _as_dict(spec, mixes["esrgan"]) == pytest.approx({"l1": 1.0, "gradient": 0.5, "fft": 0.5, "gan": 0.1})
    assert _as_dict(spec, mixes["pixel"]) == {"l1": 1.0}
    assert _as_dict(spec, mixes["pixel+structure"]) == {"l1": 1.0, "ssim": 1.0}
    assert _as_dict(spec, mixes["uniform"]) == dict.fromkeys(OFFLINE, 1.0)


def test_esrgan_uses_a_real_perceptual_loss_when_present():
    spec = _spec(("charbonnier", "perceptual", "gan", "gradient"))
    assert _as_dict(spec, named_mixes(spec)["esrgan"]) == pytest.approx(
        {"charbonnier": 1.0, "perceptual": 1.0, "gan": 0.1}
    )
    spec = _spec(("mse", "iqa:lpips"))
    assert _as_dict(spec, named_mixes(spec)["esrgan"]) == pytest.approx({"mse": 1.0, "iqa:lpips": 1.0})


def test_weight_presets_are_distinct_in_range_and_start_with_singles():
    spec = _spec(OFFLINE)
    presets = weight_presets(spec)
    assert list(presets)[: len(OFFLINE)] == list(OFFLINE)
    assert "pixel" not in presets  # equal to the single "l1"
    vectors = np.stack(list(presets.values()))
    assert len({v.tobytes() for v in vectors}) == len(vectors)
    assert vectors.min() >= 0 and vectors.max() == 1 and vectors.dtype == np.float32
    assert {"pixel+structure", "pixel+edges", "pixel+frequency", "esrgan", "uniform"} <= set(presets)


@pytest.mark.parametrize("preset", ["pixel", "pixel+structure", "esrgan", "uniform", "gan"])
def test_fixed_agent_plays_its_preset_every_stage(preset):
    env = ToyLossEnv(max_stages=4)
    traj = run_episode(env, FixedAgent(preset), seed=0)
    spec = AgentSpec.from_env(env)
    expected = {**weight_presets(spec), **named_mixes(spec)}[preset]
    for stage in traj.stages:
        np.testing.assert_array_equal(stage.action, expected)


def test_fixed_agent_with_explicit_weights_and_errors():
    traj = run_episode(ToyLossEnv(max_stages=2), FixedAgent({"ssim": 0.25, "gan": 0.5}), seed=0)
    assert traj.stages[1].action == [0.0, 0.25, 0.0, 0.5]
    with pytest.raises(KeyError, match="Did you mean 'esrgan'"):
        run_episode(ToyLossEnv(), FixedAgent("esrgn"), seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\).*shape \(4,\)"):
        run_episode(ToyLossEnv(), FixedAgent([0.5, 0.5]), seed=0)


def test_random_agent_dirichlet_and_hold():
    traj = run_episode(ToyLossEnv(max_stages=7), RandomAgent("dirichlet", hold=3), seed=5)
    actions = traj.actions
    np.testing.assert_allclose(actions.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(actions[0], actions[1])
    np.testing.assert_array_equal(actions[0], actions[2])
    assert not np.array_equal(actions[2], actions[3])
    np.testing.assert_array_equal(actions[3], actions[5])
    assert not np.array_equal(actions[5], actions[6])
    assert [s.notes["held"] for s in traj.stages] == [False, True, True, False, True, True, False]


@pytest.mark.parametrize("kwargs", [{"distribution": "gauss"}, {"hold": 0}, {"alpha": 0.0}])
def test_random_agent_rejects_bad_options(kwargs):
    with pytest.raises(ValueError, match=str(next(iter(kwargs.values())))):
        RandomAgent(**kwargs)


def test_dwa_follows_the_formula_of_liu_et_al():
    spec = _spec(("a", "b", "c"))
    agent = DWAAgent(temperature=2.0, base={"a": 1.0, "b": 1.0, "c": 0.0})
    agent.reset(spec, seed=0)
    values = [np.array([1.0, 1.0, 1.0]), np.array([0.5, 0.9, 0.8]), np.array([0.45, 0.45, 0.1])]
    first = agent.act({"loss_values": values[0]}, {})
    np.testing.assert_array_equal(first, [1.0, 1.0, 0.0])  # base until two values are known
    agent.observe(first, 0.0, {"loss_values": values[1]}, {}, False, False)
    second = agent.act({"loss_values": values[1]}, {})
    rates = values[1] / values[0]
    raw = np.exp(rates[:2] / 2.0)
    expected = raw / raw.max()
    np.testing.assert_allclose(second[:2], expected, rtol=1e-6)
    assert second[2] == 0.0 and second.max() == pytest.approx(1.0)
    assert second[1] == pytest.approx(1.0)  # b decreased more slowly: it gets the larger weight
    assert agent.notes()["rates"]["b"] == pytest.approx(0.9)
    agent.observe(second, 0.0, {"loss_values": values[2]}, {}, False, False)
    third = agent.act({"loss_values": values[2]}, {})
    assert third[0] == pytest.approx(1.0) and third[1] < 1.0  # now a decreases more slowly


def test_dwa_runs_on_an_env_and_treats_non_positive_values_as_rate_one():
    spec = _spec(("a", "b"))
    agent = DWAAgent()
    agent.reset(spec, seed=0)
    agent.act({"loss_values": np.array([0.0, 1.0])}, {})
    out = agent.act({"loss_values": np.array([0.5, 1.0])}, {})
    np.testing.assert_allclose(out, [1.0, 1.0])
    traj = run_episode(ToyLossEnv(max_stages=5), DWAAgent(), seed=0)
    assert traj.stages[-1].notes["rates"] is not None
