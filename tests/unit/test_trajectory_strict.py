"""``Trajectory.from_dict`` is strict: a value of the wrong type or outside its range is
refused with a message naming the field, and everything ``to_dict`` writes reads back."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest

from agents import Trajectory


def _good() -> dict:
    return {
        "agent": "fixed",
        "seed": 0,
        "env_id": None,
        "loss_names": ["l1", "ssim"],
        "initial": {"metrics": {"psnr": 20.0}, "objective": 20.0, "loss_values": {"l1": 0.1, "ssim": 0.4}},
        "stages": [
            {
                "stage": 1,
                "action": [0.5, 1.0],
                "weights": {"l1": 0.5, "ssim": 0.5},
                "metrics": {"psnr": 21.0},
                "objective": 21.0,
                "reward": 1.0,
                "loss_values": {"l1": 0.09, "ssim": 0.35},
                "diverged": False,
                "feedback": None,
                "notes": {"arm": "pixel", "scores": [1, 2.5, None], "nested": {"ok": True}},
                "timings": {"act_seconds": 0.001, "train_seconds": 0.5},
                "preset": None,
            },
            {
                "stage": 2,
                "action": [0.0, 0.0],
                "weights": {"l1": 0.0, "ssim": 0.0},
                "metrics": {"psnr": 21.0},
                "objective": 21.0,
                "reward": 0.0,
                "loss_values": {},
                "diverged": True,
                "feedback": "no change",
                "notes": {},
                "timings": {},
                "preset": None,
            },
        ],
    }


def _with(path: str, value) -> dict:
    """``_good()`` with the entry at ``path`` (dots; list indices as numbers) replaced."""
    data = _good()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return data


BAD = [
    ("stages.0.action", [1.5, 0.5], "stages.0.action.0"),
    ("stages.0.action", [-0.1, 0.5], "stages.0.action.0"),
    ("stages.0.action", [math.nan, 0.5], "stages.0.action.0"),
    ("stages.0.action", [0.5, math.inf], "stages.0.action.1"),
    ("stages.0.action", [True, 0.5], "stages.0.action.0"),
    ("stages.0.action", ["0.5", 0.5], "stages.0.action.0"),
    ("stages.0.objective", "1.5", "stages.0.objective"),
    ("stages.0.objective", True, "stages.0.objective"),
    ("stages.0.reward", "0", "stages.0.reward"),
    ("stages.0.reward", False, "stages.0.reward"),
    ("stages.0.diverged", "yes", "stages.0.diverged"),
    ("stages.0.diverged", 1, "stages.0.diverged"),
    ("stages.0.stage", 0, "stages.0.stage"),
    ("stages.0.stage", -3, "stages.0.stage"),
    ("stages.0.stage", True, "stages.0.stage"),
    ("stages.0.stage", 1.0, "stages.0.stage"),
    ("stages.1.stage", 1, "stages[1].stage is 1"),
    ("stages.1.stage", 3, "stages[1].stage is 3"),
    ("seed", -1, "seed"),
    ("seed", True, "seed"),
    ("seed", "0", "seed"),
    ("loss_names", ["l1", "l1"], "loss_names"),
    ("loss_names", ["l1", 2], "loss_names.1"),
    ("loss_names", [], "loss_names"),
    ("agent", 5, "agent"),
    ("agent", "", "agent"),
    ("env_id", 3, "env_id"),
    ("initial.objective", "abc", "initial.objective"),
    ("initial.objective", True, "initial.objective"),
    ("initial.metrics", {"psnr": "20"}, "initial.metrics.psnr"),
    ("initial.unexpected", 1, "initial.unexpected"),
    ("initial.feedback", 7, "initial.feedback"),
    ("stages.0.notes", {"seen": {1, 2}}, "stages.0.notes.seen"),
    ("stages.0.notes", {"what": object()}, "stages.0.notes.what"),
    ("stages.0.notes", {"arms": (1, 2)}, "stages.0.notes.arms"),
    ("stages.0.notes", "text", "stages.0.notes"),
    ("stages.0.metrics", {"psnr": "21"}, "stages.0.metrics.psnr"),
    ("stages.0.metrics", {"psnr": None}, "stages.0.metrics.psnr"),
    ("stages.0.weights", {"l1": -0.5}, "stages.0.weights.l1"),
    ("stages.0.weights", {"l1": math.nan}, "stages.0.weights.l1"),
    ("stages.0.weights", {"l2": 0.5}, "stages[0].weights names 'l2'"),
    ("stages.0.loss_values", {"l2": 0.5}, "stages[0].loss_values names 'l2'"),
    ("stages.0.timings", {"act_seconds": -1.0}, "stages.0.timings.act_seconds"),
    ("stages.0.timings", {"act_seconds": "fast"}, "stages.0.timings.act_seconds"),
    ("stages.0.feedback", 3, "stages.0.feedback"),
    ("stages.0.preset", 2, "stages.0.preset"),
    ("stages", {"0": {}}, "stages"),
]


@pytest.mark.parametrize("path, value, field", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_a_hostile_value_is_refused_naming_its_field(path, value, field):
    with pytest.raises(ValueError, match=re.escape(field)) as caught:
        Trajectory.from_dict(_with(path, value))
    message = str(caught.value)
    assert message.startswith("Trajectory.from_dict") and "\n" not in message


def test_a_refusal_names_the_bad_value():
    with pytest.raises(ValueError, match=re.escape("stages.0.objective: ") + r".*got '1\.5'"):
        Trajectory.from_dict(_with("stages.0.objective", "1.5"))
    with pytest.raises(ValueError, match=r"stages\.0\.action\.0: .*less than or equal to 1.*got 1\.5"):
        Trajectory.from_dict(_with("stages.0.action", [1.5, 0.5]))


def test_what_to_dict_writes_reads_back_exactly():
    good = _good()
    traj = Trajectory.from_dict(copy.deepcopy(good))
    assert traj.to_dict() == good
    assert Trajectory.from_dict(json.loads(json.dumps(traj.to_dict()))) == traj


@pytest.mark.parametrize(
    "path, value",
    [
        ("stages.1.objective", math.nan),  # a stage whose objective was not measured
        ("stages.1.reward", math.inf),
        ("stages.0.metrics", {"psnr": math.inf}),  # identical images: PSNR is infinite
        ("stages.0.loss_values", {"l1": math.nan}),
        ("initial.objective", math.nan),
        ("initial.objective", -math.inf),
        ("stages.0.notes", {"latency": math.nan, "tokens": None}),
        ("stages.0.preset", "pixel"),
        ("stages.0.feedback", "sharper"),
        ("stages.0.action", [1, 0]),  # integers in JSON are numbers too
        ("seed", None),
        ("initial", {}),
    ],
)
def test_non_finite_measurements_and_plain_numbers_are_accepted(path, value):
    data = _with(path, value)
    traj = Trajectory.from_dict(data)
    again = Trajectory.from_dict(json.loads(json.dumps(traj.to_dict())))
    assert json.dumps(again.to_dict()) == json.dumps(traj.to_dict())


def test_best_objective_of_a_read_trajectory_is_a_number():
    traj = Trajectory.from_dict(_with("initial.objective", 25.0))
    assert traj.best_objective == 25.0
    assert isinstance(traj.final_objective, float)
