"""Objectives: the J formula, the accepted specs, refusals, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from lossagent_env.metrics import create_metric, metric_info
from lossagent_env.objectives import (
    CallableObjective,
    MetricObjective,
    Objective,
    ObjectiveResult,
    make_objective,
)


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 8, 8, generator=gen)
    target = torch.nn.functional.interpolate(
        coarse, size=(40, 40), mode="bilinear", align_corners=False
    )
    restored = (target + 0.04 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    return restored, target


# ------------------------------------------------------------------- formula
def test_j_negates_lower_is_better_metrics():
    objective = MetricObjective({"psnr": 1.0, "niqe": 0.5})
    assert objective.combine({"psnr": 30.0, "niqe": 5.0}) == pytest.approx(27.5)
    assert objective.lower_better == {"psnr": False, "niqe": True}
    assert objective.formula() == "J = 1*psnr - 0.5*niqe"


def test_j_with_only_lower_is_better_metrics_is_negative():
    objective = MetricObjective({"piqe": 2.0, "gmsd": 10.0})
    assert objective.combine({"piqe": 20.0, "gmsd": 0.1}) == pytest.approx(-41.0)
    assert objective.formula() == "J = -2*piqe - 10*gmsd"


def test_combine_needs_every_metric():
    with pytest.raises(KeyError, match="niqe"):
        MetricObjective({"psnr": 1.0, "niqe": 0.5}).combine({"psnr": 30.0})


def test_evaluate_matches_the_metrics_it_is_made_of(images):
    restored, target = images
    objective = MetricObjective({"psnr": 1.0, "piqe": 0.25})
    objective.setup("cpu")
    result = objective.evaluate(restored, target)
    psnr = create_metric("psnr")(restored, target).double().mean().item()
    piqe = create_metric("piqe")(restored).double().mean().item()
    assert isinstance(result, ObjectiveResult)
    assert list(result.metrics) == ["psnr", "piqe"]
    assert result.metrics["psnr"] == pytest.approx(psnr)
    assert result.metrics["piqe"] == pytest.approx(piqe)
    assert result.value == pytest.approx(psnr - 0.25 * piqe)
    assert result.feedback is None


def test_psnr_objective_on_a_known_error():
    target = torch.full((1, 3, 16, 16), 0.5)
    restored = target + 10 ** (-1.5)  # MSE 1e-3 -> 30 dB
    result = make_objective("psnr").evaluate(restored, target)
    assert result.metrics["psnr"] == pytest.approx(30.0, abs=1e-3)
    assert result.value == pytest.approx(30.0, abs=1e-3)


def test_evaluate_sets_itself_up_when_setup_was_not_called(images):
    restored, target = images
    assert math.isfinite(
        MetricObjective({"ssim": 1.0}).evaluate(restored, target).value
    )


def test_evaluate_is_deterministic(images):
    restored, target = images
    first = MetricObjective({"psnr": 1.0, "ssim": 3.0, "gmsd": 2.0, "piqe": 0.1})
    second = MetricObjective({"psnr": 1.0, "ssim": 3.0, "gmsd": 2.0, "piqe": 0.1})
    a = first.evaluate(restored, target)
    b = first.evaluate(restored.clone(), target.clone())
    c = second.evaluate(restored, target)
    assert a.metrics == b.metrics == c.metrics
    assert a.value == b.value == c.value


def test_bounds_and_order_come_from_the_catalogue():
    objective = MetricObjective({"niqe": 1.0, "psnr": 0.0, "ssim": 2.0})
    assert objective.metric_names == ("niqe", "psnr", "ssim")
    for name in objective.metric_names:
        info = metric_info(name)
        assert objective.bounds[name] == (info.low, info.high)
        assert all(math.isfinite(b) for b in objective.bounds[name])


def test_describe_names_each_metric_weight_direction_and_formula():
    text = MetricObjective({"psnr": 1.0, "niqe": 0.5}).describe()
    assert "psnr (weight 1; higher is better)" in text
    assert "niqe (weight 0.5; lower is better" in text
    assert metric_info("niqe").description in text
    assert "J = 1*psnr - 0.5*niqe" in text


# --------------------------------------------------------------------- specs
def test_string_spec_is_one_metric_with_weight_one():
    objective = make_objective("ssim")
    assert isinstance(objective, MetricObjective)
    assert objective.weights == {"ssim": 1.0}


def test_dict_spec_keeps_order_and_weights():
    objective = make_objective({"piqe": 0.5, "psnr": 2})
    assert isinstance(objective, MetricObjective)
    assert objective.metric_names == ("piqe", "psnr")
    assert objective.weights == {"piqe": 0.5, "psnr": 2.0}


def test_objective_spec_is_returned_as_is():
    objective = MetricObjective({"psnr": 1.0})
    assert make_objective(objective) is objective


def test_callable_spec(images):
    restored, target = images

    def negative_l1(restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -(restored - target).abs().mean()

    objective = make_objective(negative_l1)
    assert isinstance(objective, CallableObjective)
    assert objective.metric_names == ("negative_l1",)
    assert objective.lower_better == {"negative_l1": False}
    result = objective.evaluate(restored, target)
    expected = -(restored - target).abs().mean().item()
    assert result.value == pytest.approx(expected)
    assert result.metrics == {"negative_l1": result.value}
    assert "negative_l1" in objective.describe()


def test_lambda_spec_is_named_custom(images):
    restored, target = images
    objective = make_objective(lambda r, t: 3.0)
    assert objective.metric_names == ("custom",)
    assert objective.evaluate(restored, target).value == 3.0
    assert objective.bounds["custom"][0] < objective.bounds["custom"][1]


def test_callable_returning_nan_or_text_is_refused(images):
    restored, target = images
    with pytest.raises(ValueError, match="finite"):
        CallableObjective(lambda r, t: float("nan")).evaluate(restored, target)
    with pytest.raises(ValueError, match="one number"):
        CallableObjective(lambda r, t: "good", name="judge").evaluate(restored, target)
    with pytest.raises(ValueError, match="one number"):
        CallableObjective(lambda r, t: torch.ones(2)).evaluate(restored, target)


def test_subclass_of_objective_plugs_in(images):
    restored, target = images

    class Brightness(Objective):
        def __init__(self):
            super().__init__()
            self.metric_names = ("brightness",)
            self.lower_better = {"brightness": False}
            self.bounds = {"brightness": (0.0, 1.0)}

        def evaluate(self, restored, target, *, degraded=None, stage=0, weights=None):
            value = float(restored.mean())
            return ObjectiveResult(
                {"brightness": value}, value, feedback=f"stage {stage}"
            )

        def describe(self):
            return "mean brightness"

    objective = make_objective(Brightness())
    objective.setup("cpu")
    objective.reset(seed=0)
    assert objective.evaluate(restored, target, stage=3).feedback == "stage 3"


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ({}, ValueError, "non-empty"),
        (
            {"psnr": float("nan")},
            ValueError,
            r"Weight of metric 'psnr' is nan\. Allowed: a finite number >= 0",
        ),
        ({"psnr": float("inf")}, ValueError, "finite"),
        ({"psnr": -1.0}, ValueError, ">= 0"),
        ({"psnr": "1"}, ValueError, "Weight of metric 'psnr' is '1'"),
        ({"psnr": True}, ValueError, "Weight of metric 'psnr' is True"),
        ({"psnr": 0.0, "ssim": 0}, ValueError, "at least one weight > 0"),
        ({"psnrr": 1.0}, KeyError, "Did you mean 'psnr'"),
        ("psnrr", KeyError, "Did you mean 'psnr'"),
        ({"fid": 1.0}, ValueError, "sets of images"),
        (
            42,
            ValueError,
            r"Cannot build an objective from 42 \(int\)\. Allowed: a metric name",
        ),
        (None, ValueError, "Allowed: a metric name"),
        (["psnr"], ValueError, "Allowed: a metric name"),
    ],
)
def test_bad_specs_are_refused_with_clear_messages(spec, error, match):
    with pytest.raises(error, match=match):
        make_objective(spec)


def test_callable_objective_checks_its_arguments():
    with pytest.raises(ValueError, match="callable"):
        CallableObjective(3.0)
    with pytest.raises(ValueError, match="non-empty string"):
        CallableObjective(lambda r, t: 0.0, name="")
    with pytest.raises(ValueError, match="bounds"):
        CallableObjective(lambda r, t: 0.0, bounds=(1.0, float("inf")))


# ------------------------------------------------------------------ J must stay finite
HUGE = {"psnr": 1e308, "ssim": 1e308}


def test_weights_that_let_j_overflow_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"Weights \{'psnr': 1e\+308, 'ssim': 1e\+308\} let \|J\| reach inf within the metrics' bounds"):
        make_objective(HUGE)
    with pytest.raises(ValueError, match=r"Weights \{'psnr': 1e\+299\} let \|J\| reach 8e\+300 .* Allowed: weights for which \|J\| stays at most 1e\+300"):
        MetricObjective({"psnr": 1e299})  # finite, but its differences may not be
    assert MetricObjective({"psnr": 1e297}).j_bound() == pytest.approx(8e298)


def test_a_composite_whose_j_can_overflow_is_refused():
    from lossagent_env.objectives import CompositeObjective

    with pytest.raises(ValueError, match=r"Weights \{'psnr': 1e\+308, 'ssim': 1e\+308\} let \|J\| reach inf"):
        CompositeObjective(HUGE).metric_layout()
    with pytest.raises(ValueError, match=r"let \|J\| reach"):
        CompositeObjective({"psnr": 1.0, "ssim": 1.0}, scales={0: 1e-300}).metric_layout()
    for scale in (True, float("nan"), -1.0):
        with pytest.raises(ValueError, match=r"scales\[0\] = .* Allowed: a part index"):
            CompositeObjective({"psnr": 1.0}, scales={0: scale})


def test_j_that_overflows_on_values_outside_the_bounds_is_an_error():
    objective = MetricObjective({"psnr": 1e297})
    with pytest.raises(ValueError, match=r"gives J = inf from the metric values \{'psnr': 1e\+300\}"):
        objective.combine({"psnr": 1e300})
    assert math.isnan(objective.combine({"psnr": math.nan}))  # not measured: NaN, not an error


def test_the_live_env_refuses_weights_that_let_j_overflow(tiny_kwargs):
    import gymnasium as gym

    import lossagent_env  # noqa: F401  (registers the env ids)

    with pytest.raises(ValueError, match=r"Weights \{'psnr': 1e\+308, 'ssim': 1e\+308\} let \|J\| reach inf"):
        gym.make("LossAgent/SuperResolution-v0", **{**tiny_kwargs, "objective": HUGE})
