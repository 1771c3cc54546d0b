"""The benchmark report: bootstrap intervals, summary numbers, CSV, plots, report.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.execution.results import complete_runs, read_rows
from benchmarks.reports.report import (
    SUMMARY_COLUMNS,
    build_report,
    llm_time,
    llm_time_line,
    mean_intervals,
    read_summary,
    summarize,
)

LOSSES = ("l1", "ssim", "fft")


def _row(agent: str, objective: str, seed: int, stage: int, value: float, **notes) -> dict:
    weights = {name: 0.1 * (i + 1) * stage for i, name in enumerate(LOSSES)}
    return {
        "run": f"Env__{agent}__{objective}__{seed}",
        "suite": "t",
        "env_id": "Env",
        "agent": agent,
        "objective": objective,
        "seed": seed,
        "stage": stage,
        "max_stages": 3,
        "loss_names": list(LOSSES),
        "action": [0.1 * stage] * len(LOSSES),
        "weights": weights,
        "metrics": {objective: value},
        "objective_value": value,
        "reward": 0.0,
        "notes": notes,
        "diverged": False,
        "feedback": None,
        "wall_s": 1.5 * stage,
        "setup_s": 0.1,
        "train_s": 1.0,
        "eval_s": 0.2,
    }


@pytest.fixture
def rows() -> list[dict]:
    rows = []
    curves = {  # agent -> seed -> objective per stage
        "ucb": {0: [20.0, 21.0, 22.0], 1: [20.0, 23.0, 22.5], 2: [19.0, 20.0, 24.0]},
        "llm": {0: [20.5, 21.5, 21.0], 1: [20.0, 20.0, 20.0], 2: [21.0, 22.0, 23.0]},
    }
    for agent, seeds in curves.items():
        for seed, values in seeds.items():
            for stage, value in enumerate(values, start=1):
                notes = {}
                if agent == "llm":
                    notes = {
                        "prompt_tokens": 100,
                        "completion_tokens": 10,
                        "retries": 1,
                        "fallback": stage == 2,
                        "rationale": "more ssim",
                    }
                rows.append(_row(agent, "psnr", seed, stage, value, **notes))
    # an incomplete run: 2 of 3 stages
    rows += [_row("random", "psnr", 0, s, 30.0) for s in (1, 2)]
    return rows


def test_mean_intervals_are_rliables_stratified_bootstrap_and_reproducible():
    from rliable import library as rly

    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [10.0, 5.0]])
    np.random.seed(12345)
    outside = np.random.get_state()
    estimates = mean_intervals(x)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), outside))  # given back
    # rliable's stratified bootstrap draws from NumPy's global RNG (not from random_state)
    np.random.seed(0)
    point, interval = rly.get_interval_estimates(
        {"x": x}, lambda m: np.mean(m, axis=0), reps=2000, random_state=np.random.RandomState(0)
    )
    np.testing.assert_array_equal(estimates, np.vstack([point["x"], interval["x"]]))
    for seed in range(5):  # whatever the global state, the same intervals
        np.random.seed(seed)
        np.testing.assert_array_equal(mean_intervals(x), estimates)
    assert estimates[1, 0] < np.mean(x[:, 0]) < estimates[2, 0]
    np.testing.assert_array_equal(estimates[:, 1], [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(estimates, mean_intervals(x))


def test_agents_with_the_same_scores_get_the_same_interval():
    from rliable import metrics

    from benchmarks.reports.stats import interval_estimates

    scores = np.array([[0.1, -0.5], [0.3, 0.2], [-0.9, 0.4]])
    other = np.array([[1.0, 2.0], [0.0, -1.0], [0.5, 0.5]])
    estimates = interval_estimates({"a": scores, "b": other, "c": scores.copy()}, metrics.aggregate_iqm)
    np.testing.assert_array_equal(estimates["a"], estimates["c"])
    np.testing.assert_array_equal(estimates["a"], interval_estimates({"a": scores}, metrics.aggregate_iqm)["a"])


def test_mean_intervals_bootstrap_each_column_on_the_runs_that_measured_it():
    x = np.array([[1.0, np.nan, np.nan], [2.0, 4.0, np.nan], [3.0, 6.0, np.nan]])
    estimates = mean_intervals(x)
    np.testing.assert_array_equal(estimates[:, 0], mean_intervals(x[:, :1])[:, 0])
    np.testing.assert_array_equal(estimates[:, 1], mean_intervals(x[1:, 1:2])[:, 0])
    assert np.isnan(estimates[:, 2]).all()


def test_complete_runs_needs_every_stage(rows):
    done = complete_runs(rows)
    assert "Env__random__psnr__0" not in done
    assert len(done) == 6


def test_summarize_numbers(rows):
    summary = summarize(rows, agent_order=["ucb", "llm"])
    assert [r["agent"] for r in summary] == ["ucb", "llm"]  # incomplete run left out
    ucb, llm = summary
    assert ucb["seeds"] == 3
    assert ucb["final_mean"] == pytest.approx(np.mean([22.0, 22.5, 24.0]))
    assert ucb["best_mean"] == pytest.approx(np.mean([22.0, 23.0, 24.0]))
    assert ucb["auc_mean"] == pytest.approx(np.mean([21.0, 65.5 / 3, 21.0]))
    assert ucb["final_ci_low"] < ucb["final_mean"] < ucb["final_ci_high"]
    assert ucb["prompt_tokens_mean"] == 0 and ucb["fallbacks"] == 0
    assert llm["prompt_tokens_mean"] == 300 and llm["completion_tokens_mean"] == 30
    assert llm["retries"] == 9 and llm["fallbacks"] == 3
    assert llm["wall_s_mean"] == pytest.approx(4.5)


def test_summary_does_not_depend_on_row_order(rows):
    shuffled = list(rows)
    np.random.default_rng(3).shuffle(shuffled)
    assert summarize(shuffled) == summarize(rows)


def test_build_report_writes_csv_plots_and_markdown(tmp_path: Path, rows):
    with open(tmp_path / "results.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write('{"run": "torn')  # a torn last line, as after a SIGKILL mid-write
    assert len(read_rows(tmp_path / "results.jsonl")) == len(rows)
    paths = build_report(tmp_path)
    summary = read_summary(paths["summary"])
    assert list(summary[0]) == list(SUMMARY_COLUMNS)
    assert summary == summarize(rows)  # full precision round trip
    for key in ("psnr__objective", "psnr__weights"):
        png = paths[key]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    text = paths["report"].read_text()
    assert "## Objective: psnr" in text
    assert "(plots/psnr__objective.png)" in text and "(plots/psnr__weights.png)" in text
    assert "| ucb | 3 |" in text and "| llm | 3 |" in text
    assert "incomplete: 1" in text and "Env__random__psnr__0" in text
    assert "mean over seeds [95% stratified bootstrap interval of the mean, rliable, 2,000 resamples]" in text


def test_build_report_needs_results(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        build_report(tmp_path)


def test_an_unmeasured_stage_never_turns_a_row_into_nan(rows, tmp_path):
    # ucb seed 1 could not measure its last stage (a judge that kept failing), and seed 2
    # not its middle one: the last measured value counts for them.
    for row in rows:
        if row["agent"] == "ucb" and (row["seed"], row["stage"]) in ((1, 3), (2, 2)):
            row["objective_value"] = float("nan")
    summary = {(r["objective"], r["agent"]): r for r in summarize(rows)}
    ucb = summary[("psnr", "ucb")]
    assert ucb["unmeasured"] == 2
    assert ucb["final_mean"] == pytest.approx(np.mean([22.0, 23.0, 24.0]))
    assert ucb["best_mean"] == pytest.approx(np.mean([22.0, 23.0, 24.0]))
    assert all(np.isfinite(ucb[k]) for k in ("final_ci_low", "final_ci_high", "auc_mean"))
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_report(out)
    assert "nan" not in (out / "report.md").read_text().lower()
    assert read_summary(out / "summary.csv")[0]["unmeasured"] in (0, 2)


def test_llm_time_is_the_median_decision_and_its_share_of_the_runs_wall_time(tmp_path: Path):
    rows = [_row("fixed", "psnr", 0, stage, 20.0 + stage) for stage in (1, 2, 3)]
    assert llm_time(rows) is None
    latencies = {1: 0.5, 2: 1.0, 3: 3.0}
    rows += [_row("llm", "psnr", 0, stage, 20.0 + stage, latency_s=latencies[stage]) for stage in (1, 2, 3)]
    rows += [_row("llm", "psnr", 1, 1, 20.0, latency_s=0.7, fallback=True)]  # a run cut short
    figures = llm_time(rows)
    assert figures.decisions == 4
    assert figures.median_s == pytest.approx(0.85)
    assert figures.total_s == pytest.approx(5.2)
    # run walls: fixed/0 4.5 s, llm/0 4.5 s, llm/1 1.5 s (the last stage's wall_s of each run)
    assert figures.run_wall_s == pytest.approx(10.5)
    assert figures.share == pytest.approx(5.2 / 10.5)
    line = llm_time_line(figures)
    assert "LLM decisions: 4, median 0.85 s" in line and "50% of the runs' wall time" in line
    with open(tmp_path / "results.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    assert line in build_report(tmp_path)["report"].read_text()


def test_a_run_whose_last_stage_is_unmeasured_is_not_given_an_earlier_final_j(rows, tmp_path):
    """The final J is the last stage's own value: a NaN there is counted, not replaced by
    the last measured stage (the best-so-far and the AUC still carry it forward)."""
    last = next(r for r in rows if r["agent"] == "ucb" and r["seed"] == 2 and r["stage"] == 3)
    last["objective_value"] = float("nan")
    ucb = summarize(rows, agent_order=["ucb", "llm"])[0]
    assert ucb["final_unmeasured"] == 1 and ucb["unmeasured"] == 1
    assert ucb["final_mean"] == pytest.approx(np.mean([22.0, 22.5]))  # the two measured finals
    assert ucb["best_mean"] == pytest.approx(np.mean([22.0, 23.0, 20.0]))
    with open(tmp_path / "results.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    text = build_report(tmp_path)["report"].read_text()
    assert "(1 of 3 runs unmeasured at the last stage)" in text
