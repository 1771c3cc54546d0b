"""CompositeObjective: normalised parts, names without collisions, joined feedback."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import lossagent_env  # noqa: F401  (registers the env ids)
from lossagent_env.metrics import metric_info
from lossagent_env.objectives import (
    CallableObjective,
    CompositeObjective,
    HumanObjective,
    MetricObjective,
    Objective,
    ObjectiveResult,
    make_objective,
)


class Fixed(Objective):
    """A one-metric objective returning fixed values, with feedback."""

    def __init__(
        self, name: str, value: float, bounds=(0.0, 10.0), feedback: str | None = None
    ):
        super().__init__()
        self.name, self.value, self.feedback = name, value, feedback
        self.metric_names = (name,)
        self.lower_better = {name: False}
        self.bounds = {name: bounds}

    def evaluate(self, restored, target, *, degraded=None, stage=0, weights=None):
        return ObjectiveResult({self.name: self.value}, self.value, self.feedback)

    def describe(self) -> str:
        return f"fixed {self.name}"


@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=gen)
    return (target + 0.05 * torch.randn(target.shape, generator=gen)).clamp(
        0, 1
    ), target


def test_parts_are_divided_by_the_span_of_their_range(images):
    restored, target = images
    judge = Fixed("text_judge", 6.0, feedback="more texture")
    objective = make_objective({"psnr": 0.5, judge: 0.5})
    assert isinstance(objective, CompositeObjective)
    objective.setup("cpu")
    result = objective.evaluate(restored, target)
    psnr = MetricObjective({"psnr": 1.0}).evaluate(restored, target).value
    span = metric_info("psnr").high - metric_info("psnr").low
    assert objective.scales == [span, 10.0]
    assert result.value == pytest.approx(0.5 * psnr / span + 0.5 * 6.0 / 10.0)
    assert result.metrics == {"psnr": pytest.approx(psnr), "text_judge": 6.0}
    assert result.feedback == "[text_judge] more texture"


def test_lower_is_better_parts_keep_their_sign(images):
    restored, target = images
    objective = CompositeObjective({"gmsd": 1.0, Fixed("h", 5.0): 1.0})
    result = objective.evaluate(restored, target)
    gmsd = result.metrics["gmsd"]
    assert objective.lower_better == {"gmsd": True, "h": False}
    assert result.value == pytest.approx(-gmsd / 2.0 + 5.0 / 10.0)


def test_metric_names_do_not_collide_and_feedback_is_joined(images):
    restored, target = images
    a = Fixed("score", 2.0, feedback="first")
    b = Fixed("score", 4.0, feedback="second")
    c = MetricObjective({"psnr": 1.0, "ssim": 2.0})
    objective = CompositeObjective({a: 1.0, b: 1.0, c: 1.0})
    objective.setup("cpu")
    assert objective.metric_names == ("score", "score_2", "part2/psnr", "part2/ssim")
    assert set(objective.bounds) == set(objective.metric_names)
    result = objective.evaluate(restored, target)
    assert result.feedback == "[score] first\n[score_2] second"
    span_c = 1.0 * 120.0 + 2.0 * 1.0
    assert objective.scales == [10.0, 10.0, span_c]
    j_c = c.evaluate(restored, target).value
    assert result.value == pytest.approx(0.2 + 0.4 + j_c / span_c)


def test_a_missing_part_makes_the_stage_missing(images):
    restored, target = images
    objective = CompositeObjective({"psnr": 1.0, Fixed("judge", math.nan): 1.0})
    assert math.isnan(objective.evaluate(restored, target).value)


def test_open_ended_parts_need_an_explicit_scale(images):
    _restored, _target = images
    unbounded = CallableObjective(lambda r, t: 1.0, name="mine")
    with pytest.raises(ValueError, match=r"give scales=\{1: "):
        CompositeObjective({"psnr": 1.0, unbounded: 1.0}).setup("cpu")
    objective = CompositeObjective({"psnr": 1.0, unbounded: 1.0}, scales={1: 4.0})
    objective.setup("cpu")
    assert objective.scales[1] == 4.0


@pytest.mark.parametrize(
    "parts, match",
    [
        ({}, "non-empty"),
        ({"psnr": 0.0, Fixed("a", 1.0): 0.0}, "All weights are 0"),
        ({"psnr": -1.0, Fixed("a", 1.0): 1.0}, "finite number >= 0"),
        ({3: 1.0}, "Allowed: a metric name or an Objective"),
    ],
)
def test_bad_parts_are_refused(parts, match):
    with pytest.raises(ValueError, match=match):
        CompositeObjective(parts)


def test_unknown_metric_name_has_a_hint():
    with pytest.raises(KeyError, match="psnr"):
        make_objective({"psnrr": 1.0, Fixed("a", 1.0): 1.0})


def test_plain_metric_dicts_stay_metric_objectives():
    assert isinstance(make_objective({"psnr": 1.0, "ssim": 1.0}), MetricObjective)


def test_composite_in_an_env_with_a_human_part(tiny_kwargs, tmp_path):
    ratings = iter([5, 7, 7, 9])
    human = HumanObjective(
        rater=lambda path, stage: (next(ratings), f"seen {stage}"), out_dir=tmp_path
    )
    env = gym.make(
        "LossAgent/JPEG-v0", **{**tiny_kwargs, "objective": {"ssim": 1.0, human: 1.0}}
    )
    _, info = env.reset(seed=0)
    assert set(info["metrics"]) == {"ssim", "human"}
    assert info["objective"] == pytest.approx(info["metrics"]["ssim"] + 5 / 9)
    _, _reward, *_, info = env.step(np.full(env.action_space.shape, 0.3, np.float32))
    assert info["feedback"] == "[human] seen 1"
    assert "each part's J is divided by the span" in env.unwrapped.objective.describe()
