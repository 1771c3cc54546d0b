"""The main job's timing script: its verdicts and its refusal of a bad repeat count."""

from __future__ import annotations

import pytest

from measure.perf_smoke import DECISION_GOAL_S, DECISION_TARGET_S, JOB_GOAL_S, JOB_TARGET_S, main, verdict


@pytest.mark.parametrize(
    ("value", "expected"),
    [(59.9, "goal met"), (60.0, "goal met"), (60.1, "target met"), (90.0, "target met"), (90.1, "target missed")],
)
def test_job_verdicts_at_the_boundaries(value: float, expected: str):
    assert verdict(value, JOB_TARGET_S, JOB_GOAL_S) == expected


def test_decision_verdicts():
    assert verdict(0.49, DECISION_TARGET_S, DECISION_GOAL_S) == "goal met"
    assert verdict(0.83, DECISION_TARGET_S, DECISION_GOAL_S) == "target met"
    assert verdict(1.09, DECISION_TARGET_S, DECISION_GOAL_S) == "target missed"


def test_a_repeat_count_below_one_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--repeats", "0"])
    assert exit_info.value.code == 2
    assert "--repeats 0 is not allowed. Allowed: an integer >= 1" in capsys.readouterr().err
