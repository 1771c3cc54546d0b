"""HumanObjective with scripted, in-memory terminal and file raters."""

from __future__ import annotations

import io
import json
import math
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

import lossagent_env  # noqa: F401  (registers the env ids)
from lossagent_env.objectives import HumanObjective
from lossagent_env.objectives.human import (
    FileRater,
    TerminalRater,
    check_score,
    comparison_image,
)


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 16, generator=gen)
    return target.flip(-1), target, target[:, :, ::2, ::2]


def test_scripted_rater_drives_a_three_stage_episode(tiny_kwargs, tmp_path):
    calls = []

    def rater(image_path: str, stage: int):
        with Image.open(image_path) as image:
            calls.append((image_path, stage, image.size))
        return [4, 6, 5, 8][stage], None if stage == 0 else f"comment {stage}"

    objective = HumanObjective(rater=rater, out_dir=tmp_path)
    env = gym.make(
        "LossAgent/SuperResolution-v0", **{**tiny_kwargs, "objective": objective}
    )
    _, info = env.reset(seed=0)
    assert info["objective"] == 4.0 and "feedback" not in info
    rewards, feedback = [], []
    for _ in range(3):
        _, reward, _, truncated, info = env.step(
            np.full(env.action_space.shape, 0.4, np.float32)
        )
        rewards.append(reward)
        feedback.append(info["feedback"])
    assert truncated and rewards == [2.0, -1.0, 3.0]
    assert feedback == ["comment 1", "comment 2", "comment 3"]
    assert info["metrics"] == {"human": 8.0}
    assert [c[1] for c in calls] == [0, 1, 2, 3]
    # degraded | restored | target, each eval_size wide, plus a caption band on top
    assert all(
        size[0] == 3 * tiny_kwargs["eval_size"] and size[1] > tiny_kwargs["eval_size"]
        for *_, size in calls
    )
    assert calls[1][0] == str(tmp_path / "stage_001.png")
    assert objective.history[-1] == (3, 8.0, "comment 3")


def test_comparison_image_shows_the_three_panels_and_the_caption(batch):
    restored, target, degraded = batch
    image = comparison_image(
        restored[0], target[0], degraded[0], "stage 2\nweights: l1=0.5"
    )
    array = np.asarray(image)
    band = array.shape[0] - 16
    assert array.shape == (16 + band, 48, 3)
    middle = array[band:, 16:32].astype(np.float64) / 255
    np.testing.assert_allclose(
        middle, restored[0].permute(1, 2, 0).numpy(), atol=1 / 255
    )
    assert (array[:band] < 128).any()  # the caption is drawn


@pytest.mark.parametrize("bad", [0, 11, math.nan, math.inf, "7", True, None])
def test_bad_scores_are_refused(bad):
    with pytest.raises(ValueError, match="Allowed: a number from 1 to 10"):
        check_score(bad)


def test_rater_returning_a_bad_score_raises(batch, tmp_path):
    restored, target, _ = batch
    objective = HumanObjective(rater=lambda path, stage: (12, None), out_dir=tmp_path)
    with pytest.raises(ValueError, match="12"):
        objective.evaluate(restored, target)
    objective = HumanObjective(rater=lambda path, stage: 7, out_dir=tmp_path)
    with pytest.raises(ValueError, match="tuple"):
        objective.evaluate(restored, target)


def test_non_callable_rater_is_refused():
    with pytest.raises(ValueError, match="not callable"):
        HumanObjective(rater=7)


def test_terminal_rater_reasks_and_uses_the_default(batch):
    answers = io.StringIO("eleven\n42\n\n\n8.5\n  too soft  \n")
    screen = io.StringIO()
    rater = TerminalRater(default=6, input_stream=answers, output_stream=screen)
    assert rater("img.png", 0) == (6.0, None)  # bad, out of range, then Enter
    assert rater("img.png", 1) == (8.5, "too soft")
    text = screen.getvalue()
    assert (
        "'eleven' is not a number from 1 to 10" in text
        and "'42' is not a number" in text
    )
    assert "[Enter = 6]" in text


def test_file_rater_reads_the_answer_written_later(batch, tmp_path):
    restored, target, degraded = batch
    objective = HumanObjective(rater=FileRater(timeout=5, poll=0.02), out_dir=tmp_path)

    def answer():
        while not (tmp_path / "stage_002.png").exists():
            time.sleep(0.01)
        (tmp_path / "stage_002.json").write_text(
            json.dumps({"score": 7, "comment": "more texture"})
        )

    writer = threading.Thread(target=answer)
    writer.start()
    result = objective.evaluate(
        restored, target, degraded=degraded, stage=2, weights={"l1": 0.5}
    )
    writer.join()
    assert result.value == 7.0 and result.feedback == "more texture"


def test_file_rater_times_out_naming_the_file(batch, tmp_path):
    restored, target, _ = batch
    objective = HumanObjective(
        rater=FileRater(tmp_path / "answers", timeout=0.2, poll=0.05), out_dir=tmp_path
    )
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"stage_003\.json"):
        objective.evaluate(restored, target, stage=3)
    assert time.monotonic() - start < 2


def test_file_rater_refuses_a_bad_answer(tmp_path):
    (tmp_path / "stage_000.json").write_text(json.dumps({"score": 0}))
    with pytest.raises(ValueError, match="out of range"):
        FileRater(timeout=1)(str(tmp_path / "stage_000.png"), 0)
    with pytest.raises(ValueError, match="timeout=0"):
        FileRater(timeout=0)
