"""TensorBoardLogger: event files read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lossagent_env  # noqa: F401  (registers the env ids)
from lossagent_env.wrappers import TensorBoardLogger

STAGES = 3
TINY = dict(
    objective={"psnr": 1.0, "ssim": 10.0},
    losses=("l1", "ssim", "fft"),
    stage_iters=2,
    max_stages=STAGES,
    patch_size=32,
    batch_size=2,
    eval_images=2,
    eval_size=32,
    device="cpu",
)


def _read(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[Path, list[dict], list[float], tuple[str, ...]]:
    logdir = tmp_path_factory.mktemp("tb") / "run"
    env = TensorBoardLogger(
        gym.make("LossAgent/SuperResolution-v0", render_mode="rgb_array", **TINY),
        logdir,
        image_every=2,
        run_config={"agent": "constant"},
    )
    infos, rewards = [], []
    env.reset(seed=0)
    names = env.unwrapped.loss_names
    rng = np.random.default_rng(0)
    done = False
    while not done:
        action = rng.uniform(0.2, 1.0, size=len(names)).astype(np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        env.log_notes(
            {
                "latency_s": 0.25,
                "retries": 1,
                "fallback": False,
                "rationale": f"stage {info['stage']}: more ssim",
                "skipped": None,
            }
        )
        infos.append(info)
        rewards.append(float(reward))
        done = terminated or truncated
    env.close()
    return logdir, infos, rewards, names


def test_one_point_per_stage_for_weights_metrics_objective(logged):
    logdir, infos, rewards, names = logged
    acc = _read(logdir)
    tags = set(acc.Tags()["scalars"])
    steps = list(range(1, STAGES + 1))
    for name in names:
        events = acc.Scalars(f"weights/{name}")
        assert [e.step for e in events] == steps
        assert [e.value for e in events] == pytest.approx([i["weights"][name] for i in infos])
        assert [e.step for e in acc.Scalars(f"losses/{name}")] == steps
    for metric in ("psnr", "ssim"):
        events = acc.Scalars(f"metrics/{metric}")
        assert [e.step for e in events] == steps
        assert [e.value for e in events] == pytest.approx([i["metrics"][metric] for i in infos], rel=1e-6)
    objective = acc.Scalars("objective")
    assert [e.step for e in objective] == steps
    assert [e.value for e in objective] == pytest.approx([i["objective"] for i in infos], rel=1e-6)
    assert [e.value for e in acc.Scalars("reward")] == pytest.approx(rewards, rel=1e-5, abs=1e-6)
    (ret,) = acc.Scalars("charts/episodic_return")
    assert ret.step == STAGES and ret.value == pytest.approx(sum(rewards), rel=1e-5, abs=1e-6)
    assert {"charts/SPS", "perf/train_seconds", "perf/eval_seconds"} <= tags


def test_agent_notes_images_and_config(logged):
    logdir, infos, _, _ = logged
    acc = _read(logdir)
    scalars = set(acc.Tags()["scalars"])
    assert {"agent/latency_s", "agent/retries", "agent/fallback"} <= scalars
    assert not any(t.startswith("agent/skipped") for t in scalars)
    assert [e.step for e in acc.Scalars("agent/latency_s")] == [1, 2, 3]
    # images every 2 stages and at the end of the episode
    images = acc.Images("images/comparison")
    assert [e.step for e in images] == [2, 3]
    assert images[0].width > 0 and images[0].height > 0
    # text summaries are stored as tensors: the config table once, one rationale per stage
    tensors = set(acc.Tags()["tensors"])
    assert "config/text_summary" in tensors and "agent/rationale/text_summary" in tensors
    (config,) = acc.Tensors("config/text_summary")
    table = config.tensor_proto.string_val[0].decode()
    assert "| agent | constant |" in table and "| stage_iters | 2 |" in table
    rationale = acc.Tensors("agent/rationale/text_summary")
    assert [e.step for e in rationale] == [1, 2, 3]
    assert rationale[-1].tensor_proto.string_val[0].decode() == "stage 3: more ssim"


def test_image_every_is_validated(tmp_path: Path):
    env = gym.make("LossAgent/SuperResolution-v0", **TINY)
    with pytest.raises(ValueError, match="image_every=-1"):
        TensorBoardLogger(env, tmp_path, image_every=-1)
    env.close()
