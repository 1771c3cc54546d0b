"""The env after a step that failed, a finished episode, a collapsed metric, and on
devices that are not there: nothing half-updated, and errors that say what to do."""

from __future__ import annotations

import json
import math
import re

import gymnasium as gym
import numpy as np
import pytest
import torch

import lossagent_env  # noqa: F401  (registers the ids)
from lossagent_env.config import EnvConfig
from lossagent_env.device import resolve_device
from lossagent_env.objectives import FileRater, HumanObjective, MetricObjective
from tests.unit.test_env import assert_same, rollout

ENV = "LossAgent/SuperResolution-v0"


def _half(env):
    return np.full(env.action_space.shape, 0.5, np.float32)


def test_a_step_whose_objective_raises_changes_nothing(tiny_kwargs):
    def scorer(fail_at):
        calls = {"n": 0}

        def score(restored, target):
            calls["n"] += 1
            if calls["n"] == fail_at:  # reset, stage 1, then stage 2 raises once
                raise RuntimeError("the metric server is down")
            return -float((restored - target).abs().mean())

        return score

    env = gym.make(ENV, **{**tiny_kwargs, "objective": scorer(3)})
    reference = rollout(gym.make(ENV, **{**tiny_kwargs, "objective": scorer(0)}), [_half(env)] * 3, seed=4)
    obs, info = env.reset(seed=4)
    out = [(obs, None, info)]
    obs, reward, *_, info = env.step(_half(env))
    out.append((obs, reward, info))
    state_before = env.unwrapped.get_state()
    with pytest.raises(RuntimeError, match="server is down"):
        env.step(_half(env))
    after = env.unwrapped.get_state()
    assert after["stage"] == state_before["stage"] == 1
    assert after["np_random"] == state_before["np_random"]
    assert torch.equal(after["torch_generator"], state_before["torch_generator"])
    for key, value in state_before["model"].items():
        assert torch.equal(after["model"][key], value), key
    for _ in range(2):  # the retried step and the next are those of an env that never failed
        obs, reward, *_, info = env.step(_half(env))
        out.append((obs, reward, info))
    assert_same(out, reference)


def test_a_file_rater_timeout_is_retried_under_the_same_stage(tiny_kwargs, tmp_path):
    (tmp_path / "stage_000.json").write_text(json.dumps({"score": 4}))
    objective = HumanObjective(rater=FileRater(timeout=0.3, poll=0.02), out_dir=tmp_path)
    env = gym.make(ENV, **{**tiny_kwargs, "objective": objective})
    env.reset(seed=0)
    with pytest.raises(TimeoutError, match="stage_001.json"):
        env.step(_half(env))
    assert env.unwrapped.get_state()["stage"] == 0
    (tmp_path / "stage_001.json").write_text(json.dumps({"score": 6, "comment": "sharper"}))
    _, reward, *_, info = env.step(_half(env))
    assert info["stage"] == 1 and info["metrics"] == {"human": 6.0} and reward == 2.0
    assert info["feedback"] == "sharper"


def test_a_step_after_truncation_is_refused(tiny_kwargs):
    env = gym.make(ENV, **{**tiny_kwargs, "max_stages": 1})
    env.reset(seed=0)
    *_, truncated, _ = env.step(_half(env))
    assert truncated
    with pytest.raises(gym.error.ResetNeeded, match="max_stages=1.*reset"):
        env.unwrapped.step(_half(env))
    env.reset(seed=0)
    obs, *_ = env.step(_half(env))
    assert obs["progress"][0] == 1.0


def test_a_collapsed_output_counts_at_the_worst_bound_and_is_flagged():
    objective = MetricObjective({"piqe": 1.0, "psnr": 1.0})
    flat = torch.zeros(2, 3, 64, 64)  # PIQE of an all-black image is NaN
    target = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    result = objective.evaluate(flat, target)
    assert "piqe" in result.invalid and "psnr" not in result.invalid
    assert result.metrics["piqe"] == objective.bounds["piqe"][1]  # lower is better: worst = high
    assert math.isfinite(result.value)


def test_the_env_reports_invalid_metrics_in_info(tiny_kwargs):
    env = gym.make(ENV, **{**tiny_kwargs, "objective": {"piqe": 1.0}, "backbone": _Flat()})
    obs, info = env.reset(seed=0)
    assert info["invalid_metrics"] == ["piqe"]
    assert info["metrics"]["piqe"] == env.unwrapped.objective.bounds["piqe"][1]
    assert obs in env.observation_space


class _Flat(torch.nn.Module):
    """A network whose output is all black (the collapse PIQE scores as NaN)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        size = (x.shape[-2] * 2, x.shape[-1] * 2)
        return torch.zeros((x.shape[0], 3, *size)) + 0 * self.bias


# --------------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["cuda:abc", "gpu", "cuda:-1", "tpu", 3])
def test_misspelled_devices_are_refused_by_the_config(device):
    with pytest.raises(ValueError, match=r"EnvConfig.device=.*Allowed: 'cpu', 'cuda', 'cuda:N'"):
        EnvConfig(device=device)


def test_a_gpu_index_that_does_not_exist_names_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"'cuda:7' names GPU 7, but this machine has 1 \(indices 0 to 0\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_cuda_where_there_is_none_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available here"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_building_a_cuda_env_does_not_touch_cuda(tiny_kwargs, monkeypatch):
    touched = []
    for name in ("is_available", "device_count", "init", "is_bf16_supported"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, _n=name, **k: touched.append(_n))
    env = gym.make(ENV, **{**tiny_kwargs, "device": "cuda", "amp": True})
    assert touched == []
    assert env.observation_space is not None and env.action_space.shape[0] > 0
    assert all(p.device.type == "cpu" for p in env.unwrapped.model.parameters())


def test_amp_on_a_gpu_without_native_bfloat16_names_the_field(tiny_kwargs, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    env = gym.make(ENV, **{**tiny_kwargs, "device": "cuda", "amp": True})
    with pytest.raises(ValueError, match="EnvConfig.amp=True.*'Tesla V100'.*amp=False"):
        env.reset(seed=0)


def test_reset_never_reseeds_the_callers_cuda_generators(tiny_kwargs, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    torch.manual_seed(1234)  # the caller's own seeding goes through, as it should
    calls.clear()
    before = torch.random.get_rng_state()
    env = gym.make(ENV, **tiny_kwargs)
    env.reset(seed=0)
    env.step(_half(env))
    assert calls == []
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.gpu
def test_a_cpu_snapshot_renders_on_a_cuda_env(tiny_kwargs):
    env = gym.make(ENV, **{**tiny_kwargs, "device": "cuda", "render_mode": "rgb_array"})
    env.reset(seed=0)
    env.step(_half(env))
    state = env.unwrapped.get_state()
    cpu_state = torch.utils._pytree.tree_map(
        lambda x: x.cpu() if isinstance(x, torch.Tensor) else x, state
    )
    env.unwrapped.set_state(cpu_state)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape[-1] == 3


@pytest.mark.gpu
def test_async_vector_env_on_cuda_with_the_default_start_method(tiny_kwargs):
    vec = gym.make_vec(ENV, num_envs=2, vectorization_mode="async", **{**tiny_kwargs, "device": "cuda"})
    try:
        vec.reset(seed=0)
        _, rewards, *_ = vec.step(np.full(vec.action_space.shape, 0.5, np.float32))
        assert np.isfinite(rewards).all()
    finally:
        vec.close()


def test_human_render_mode_says_what_is_allowed_instead_of_asking_for_pygame(tiny_kwargs):
    with pytest.raises(ValueError, match="render_mode='human' is not supported.*'rgb_array'"):
        gym.make(ENV, **{**tiny_kwargs, "render_mode": "human"})


def test_trajectory_from_dict_validates_at_the_boundary():
    from agents import Trajectory

    good = {"agent": "a", "seed": 0, "env_id": None, "loss_names": ["l1", "ssim"], "initial": {}, "stages": [
        {"stage": 1, "action": [0.5, 0.5], "weights": {}, "metrics": {}, "objective": 1.0, "reward": 0.0}]}
    assert Trajectory.from_dict(good).stages[0].action == [0.5, 0.5]
    cases = [
        ({k: v for k, v in good.items() if k != "agent"}, "agent: Field required"),
        ({**good, "loss_names": "l1"}, "loss_names: Input should be a valid list"),
        ({**good, "stages": [{**good["stages"][0], "objective": None}]}, "stages.0.objective"),
        ({**good, "stages": [{**good["stages"][0], "action": [0.5]}]}, "stages[0].action has 1 entries; loss_names has 2"),
        ([1, 2], "needs a dict"),
    ]
    for data, expected in cases:
        with pytest.raises(ValueError, match=re.escape(expected)):
            Trajectory.from_dict(data)
