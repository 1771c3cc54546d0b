"""The environment contract of DESIGN.md, on the tiny CPU configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import lossagent_env
from lossagent_env.config import EnvConfig

IDS = sorted(lossagent_env.ENV_IDS)


def rollout(env, actions, seed):
    obs, info = env.reset(seed=seed)
    out = [(obs, None, info)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, info))
    return out


def assert_same(a, b):
    for (obs1, r1, i1), (obs2, r2, i2) in zip(a, b, strict=True):
        assert gym.utils.env_checker.data_equivalence(obs1, obs2, exact=True)
        assert r1 == r2
        assert i1 == i2


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_passes_without_warnings(env_id, tiny_kwargs):
    env = gym.make(env_id, **tiny_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_spaces_and_info_follow_the_contract(env_id, tiny_kwargs):
    env = gym.make(env_id, **tiny_kwargs)
    u = env.unwrapped
    n = len(u.loss_names)
    assert u.action_space == gym.spaces.Box(0, 1, (n,), np.float32)
    assert set(u.observation_space.keys()) == {"metrics", "weights", "loss_values", "progress"}
    obs, info = env.reset(seed=0)
    assert obs in u.observation_space
    assert set(info) >= {"metrics", "objective", "loss_values", "weights", "stage", "diverged"}
    assert info["stage"] == 0 and info["diverged"] is False
    assert set(info["loss_values"]) == set(u.loss_names)
    action = np.linspace(0, 1, n, dtype=np.float32)
    for stage in range(1, u.config.max_stages + 1):
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs in u.observation_space
        assert isinstance(reward, float) and np.isfinite(reward)
        assert terminated is False
        assert truncated is (stage == u.config.max_stages)
        assert info["stage"] == stage
        assert obs["progress"][0] == pytest.approx(stage / u.config.max_stages)
        np.testing.assert_array_equal(obs["weights"], action)
        for name, a in zip(u.loss_names, action):
            assert info["weights"][name] == pytest.approx(float(a) * u.losses[name].scale)
    assert set(u.timings) == {"train_seconds", "eval_seconds", "prepare_seconds"}
    assert all(t >= 0 for t in u.timings.values())
    assert u.timings["prepare_seconds"] <= u.timings["train_seconds"]


def test_same_seed_same_trajectory_other_seed_differs(tiny_kwargs):
    env = gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs)
    n = len(env.unwrapped.loss_names)
    actions = [np.full(n, 0.3, np.float32), np.eye(n, dtype=np.float32)[0], np.full(n, 0.7, np.float32)]
    first = rollout(env, actions, seed=7)
    again = rollout(gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs), actions, seed=7)
    assert_same(first, again)
    other = rollout(env, actions, seed=8)
    assert [r for _, r, _ in other] != [r for _, r, _ in first]


@pytest.mark.parametrize(
    "bad, words",
    [
        ([0.5], "shape (1,)"),
        ("abc", "not numbers"),
        (None, "not numbers"),
        ("nan", "not numbers"),
        ("inf", "not numbers"),
        ("negative", "outside [0, 1]"),
        ("above", "outside [0, 1]"),
    ],
    ids=["wrong-length", "string", "none", "nan", "inf", "negative", "above-1"],
)
def test_bad_action_raises_and_leaves_env_unchanged(bad, words, tiny_kwargs):
    env = gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs)
    names = env.unwrapped.loss_names
    n = len(names)
    good = np.full(n, 0.5, np.float32)
    if bad in ("nan", "inf", "negative", "above"):
        value = {"nan": np.nan, "inf": np.inf, "negative": -0.1, "above": 1.5}[bad]
        bad = good.copy()
        bad[2] = value
        words = "outside [0, 1]"
    reference = rollout(gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs), [good, good], seed=3)

    obs, info = env.reset(seed=3)
    with pytest.raises(ValueError) as excinfo:
        env.step(bad)
    message = str(excinfo.value)
    assert words in message and "[0, 1]" in message
    if isinstance(bad, np.ndarray):
        assert names[2] in message  # names the bad entry
    after = [(obs, None, info)]
    for a in (good, good):
        o, r, _, _, i = env.step(a)
        after.append((o, r, i))
    assert_same(reference, after)


def test_all_zero_action_makes_no_update(tiny_kwargs):
    env = gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs)
    env.reset(seed=0)
    before = {k: v.clone() for k, v in env.unwrapped.model.state_dict().items()}
    obs, reward, *_ , info = env.step(np.zeros(len(env.unwrapped.loss_names), np.float32))
    after = env.unwrapped.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert reward == 0.0 and info["diverged"] is False


def test_diverged_stage_rolls_back(tiny_kwargs):
    env = gym.make("LossAgent/SuperResolution-v0", **{**tiny_kwargs, "lr": 1e30, "stage_iters": 3},
                   divergence_penalty=-2.5)
    u = env.unwrapped
    obs0, info0 = env.reset(seed=0)
    l1 = np.eye(len(u.loss_names), dtype=np.float32)[u.loss_names.index("mse")]
    before = {k: v.clone() for k, v in u.model.state_dict().items()}
    opt_before = u.trainer.optimizer.state_dict()["state"]
    obs, reward, terminated, truncated, info = env.step(l1)
    assert info["diverged"] is True
    assert reward == -2.5
    assert obs in u.observation_space
    assert all(np.isfinite(v).all() for v in (obs["weights"], obs["loss_values"], obs["progress"]))
    after = u.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert u.trainer.optimizer.state_dict()["state"] == opt_before == {}
    assert info["metrics"] == info0["metrics"] and info["stage"] == 1
    # The episode goes on.
    obs, reward, *_ = env.step(np.zeros_like(l1))
    assert reward == 0.0


def test_training_with_l1_raises_psnr(tiny_kwargs):
    kwargs = {**tiny_kwargs, "stage_iters": 25, "max_stages": 4, "batch_size": 8, "eval_images": 3}
    env = gym.make("LossAgent/SuperResolution-v0", losses=("l1", "ssim"), **kwargs)
    obs, info = env.reset(seed=0)
    start = info["metrics"]["psnr"]
    total = 0.0
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], np.float32))
        total += reward
    assert info["metrics"]["psnr"] > start + 0.05
    assert total == pytest.approx(info["objective"] - start, abs=1e-6)


def test_get_state_set_state_replays_a_step(tiny_kwargs):
    env = gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs)
    u = env.unwrapped
    n = len(u.loss_names)
    env.reset(seed=1)
    env.step(np.full(n, 0.4, np.float32))
    state = u.get_state()
    action = np.full(n, 0.8, np.float32)  # includes the GAN and its discriminator
    first = env.step(action)
    u.set_state(state)
    second = env.step(action)
    assert gym.utils.env_checker.data_equivalence(first, second, exact=True)


def test_render_shows_degraded_restored_target(tiny_kwargs):
    env = gym.make("LossAgent/Denoising-v0", render_mode="rgb_array", **tiny_kwargs)
    env.reset(seed=0)
    frame = env.render()
    size = tiny_kwargs["eval_size"]
    assert frame.shape == (size, 3 * size, 3) and frame.dtype == np.uint8
    assert not np.array_equal(frame[:, :size], frame[:, 2 * size :])  # noisy vs clean


def test_init_checkpoint_starts_every_episode_there(tmp_path, tiny_kwargs):
    env = gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs)
    env.reset(seed=0)
    env.step(np.full(len(env.unwrapped.loss_names), 0.5, np.float32))
    path = tmp_path / "net.pt"
    torch.save(env.unwrapped.model.state_dict(), path)
    trained = env.unwrapped.model.state_dict()
    other = gym.make("LossAgent/SuperResolution-v0", init_checkpoint=str(path), **tiny_kwargs)
    _, info = other.reset(seed=5)
    assert all(torch.equal(trained[k], v) for k, v in other.unwrapped.model.state_dict().items())
    missing = gym.make("LossAgent/SuperResolution-v0", init_checkpoint=str(tmp_path / "no.pt"), **tiny_kwargs)
    with pytest.raises(FileNotFoundError, match="no.pt"):
        missing.reset(seed=0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"scale": 3}, "scale"),
        ({"stage_iters": 0}, "stage_iters"),
        ({"lr": float("nan")}, "lr"),
        ({"device": "tpu"}, "device"),
        ({"patch_size": 33}, "patch_size"),
        ({"losses": ()}, "losses"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"EnvConfig.{field}"):
        EnvConfig(**kwargs)


def test_unknown_loss_suggests_a_name(tiny_kwargs):
    with pytest.raises(KeyError, match="Did you mean 'charbonnier'"):
        gym.make("LossAgent/SuperResolution-v0", losses=("l1", "charbonier"), **tiny_kwargs)


def test_async_vector_env_after_training_in_parent(tiny_kwargs):
    # The parent has used torch's thread pool before forking the workers.
    env = gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs)
    env.reset(seed=0)
    env.step(np.full(len(env.unwrapped.loss_names), 0.5, np.float32))
    vec = gym.make_vec("LossAgent/SuperResolution-v0", num_envs=2, vectorization_mode="async",
                       **tiny_kwargs)
    try:
        obs, info = vec.reset(seed=[0, 1])
        actions = np.full(vec.action_space.shape, 0.5, np.float32)
        obs, rewards, terminated, truncated, info = vec.step(actions)
        assert rewards.shape == (2,) and np.isfinite(rewards).all()
        assert rewards[0] != rewards[1]  # seed + i
    finally:
        vec.close()


_VECTOR_AFTER_TRAINING = """
import gymnasium as gym, numpy as np, torch, lossagent_env
kw = dict(objective="psnr", patch_size=32, batch_size=4, stage_iters=2, max_stages=3, eval_images=2, eval_size=64)
env = gym.make("LossAgent/SuperResolution-v0", **kw)
env.reset(seed=0)
env.step(np.full(env.action_space.shape, 0.5, np.float32))  # the parent uses its thread pool
vec = gym.make_vec("LossAgent/SuperResolution-v0", num_envs=2, vectorization_mode="async", **kw)
vec.reset(seed=0)
_, rewards, *_ = vec.step(np.full(vec.action_space.shape, 0.5, np.float32))
vec.close()
print("threads", torch.get_num_threads(), "rewards", np.isfinite(rewards).all())
"""


def test_async_vector_env_with_default_thread_settings():
    # As a user runs it: torch's default thread count (the test session sets
    # OMP_NUM_THREADS=1 for speed, which once hid a hang of the forked workers here).
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    result = subprocess.run(
        [sys.executable, "-c", _VECTOR_AFTER_TRAINING], capture_output=True, text=True,
        env=env, timeout=240, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    threads = int(result.stdout.split()[1])
    if len(os.sched_getaffinity(0)) > 1:
        assert threads > 1  # the parent really trained with several threads
    assert result.stdout.strip().endswith("rewards True")


def test_unmeasured_objective_gives_zero_reward_and_keeps_the_reference(tiny_kwargs):
    from lossagent_env.objectives import Objective, ObjectiveResult

    class Flaky(Objective):  # higher is better; cannot be measured at its second call
        metric_names = ("neg_l1",)

        def __init__(self):
            super().__init__()
            self.lower_better = {"neg_l1": False}
            self.bounds = {"neg_l1": (-1.0, 0.0)}
            self.calls = 0

        def evaluate(self, restored, target, **context):
            self.calls += 1
            value = -float((restored - target).abs().mean())
            if self.calls == 2:
                value = float("nan")
            return ObjectiveResult({"neg_l1": value}, value)

        def describe(self):
            return "minus the mean absolute error"

    objective = Flaky()
    env = gym.make("LossAgent/SuperResolution-v0", **{**tiny_kwargs, "objective": objective})
    u = env.unwrapped
    obs, info = env.reset(seed=0)
    start = info["objective"]
    action = np.full(len(u.loss_names), 0.5, np.float32)
    rewards = []
    for _ in range(3):
        obs, reward, _, _, info = env.step(action)
        assert obs in u.observation_space
        rewards.append(reward)
        if objective.calls == 2:
            assert np.isnan(info["objective"]) and reward == 0.0 and not info["diverged"]
    assert objective.calls == 4
    assert sum(rewards) == pytest.approx(info["objective"] - start, abs=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
def test_cuda_stages_train_and_stay_in_space(amp, tiny_kwargs):
    env = gym.make("LossAgent/SuperResolution-v0", **{**tiny_kwargs, "device": "cuda", "amp": amp,
                                                        "stage_iters": 10})
    u = env.unwrapped
    assert u.device.type == "cuda" and next(u.model.parameters()).is_cuda
    obs, info = env.reset(seed=0)
    start = info["metrics"]["psnr"]
    l1 = np.eye(len(u.loss_names), dtype=np.float32)[u.loss_names.index("l1")]
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(l1)
        assert obs in u.observation_space and np.isfinite(reward) and not info["diverged"]
    assert info["metrics"]["psnr"] > start
