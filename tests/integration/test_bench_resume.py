"""``lossagent bench``: SIGKILL mid-way, ``--resume``, and ``--workers 2`` == ``--workers 1``.

The benchmark runs as a real subprocess on a tiny suite written here. After a SIGKILL
at a random-ish moment (as soon as some rows exist), ``--resume`` must finish every run
without duplicating a stage row, and the summary must equal that of an uninterrupted
run with the same seeds (every column that does not depend on wall time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.execution.executor import threads_per_worker
from benchmarks.execution.results import complete_runs, read_rows
from benchmarks.reports.report import TIMING_COLUMNS, read_summary

ROOT = Path(__file__).resolve().parents[2]
STAGES = 3
SUITE = f"""\
name = "resume-test"
seeds = [0, 1]
objectives = ["psnr"]

[env]
id = "LossAgent/SuperResolution-v0"
kwargs = {{ scale = 2, patch_size = 32, batch_size = 2, eval_images = 2, eval_size = 32, device = "cpu", losses = ["l1", "ssim", "fft"] }}

[budget]
max_stages = {STAGES}
stage_iters = 2

[[agents]]
name = "fixed"

[[agents]]
name = "random"
"""
N_RUNS = 2 * 2
# fields of a row that depend on wall-clock time (everything else is reproducible)
TIMING_FIELDS = {"wall_s", "setup_s", "act_s", "train_s", "eval_s"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(ROOT / ".torch_home"),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
    )
    return env


def _bench(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks", "bench", *args]


# float32 reductions depend on the torch thread count: the runs compared bit for bit
# use one thread each (what --workers 2 gives on 2 cores). One worker, so that a kill
# finds one run complete and the next under way (the default runs one per core).
ONE_PROCESS_ONE_THREAD = ("--workers", "1", "--threads", "1")


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(_bench(*args), env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _comparable(rows: list[dict]) -> dict[tuple[str, int], dict]:
    out = {}
    for row in rows:
        key = (row["run"], int(row["stage"]))
        assert key not in out, f"duplicated stage row {key}"
        notes = {k: v for k, v in row["notes"].items() if "latency" not in k and "seconds" not in k}
        out[key] = {k: v for k, v in row.items() if k not in TIMING_FIELDS} | {"notes": notes}
    return out


def _stable_summary(out: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in read_summary(out / "summary.csv")
    ]


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "resume_test.toml"
    path.write_text(SUITE)
    return path


@pytest.fixture(scope="module")
def uninterrupted(suite_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "full"
    _run("--suite", str(suite_file), "--out", str(out), *ONE_PROCESS_ONE_THREAD)
    return out


def test_uninterrupted_run_writes_everything(uninterrupted: Path):
    rows = read_rows(uninterrupted / "results.jsonl")
    assert len(rows) == N_RUNS * STAGES
    assert len(complete_runs(rows)) == N_RUNS
    assert len(_comparable(rows)) == len(rows)
    for name in ("summary.csv", "report.md", "suite.json", "plots/psnr__objective.png"):
        assert (uninterrupted / name).is_file(), name
    assert len(list((uninterrupted / "tb").iterdir())) == N_RUNS


def test_sigkill_then_resume_repeats_nothing(suite_file: Path, uninterrupted: Path, tmp_path: Path):
    out = tmp_path / "killed"
    results = out / "results.jsonl"
    proc = subprocess.Popen(
        _bench("--suite", str(suite_file), "--out", str(out), *ONE_PROCESS_ONE_THREAD),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and len(results.read_text().splitlines()) >= STAGES + 1:
                break  # one run complete and the next one under way
            time.sleep(0.02)
        assert proc.poll() is None, (
            f"the benchmark ended before it could be killed: {proc.stderr.read()[-2000:]}"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = read_rows(results)
    assert 0 < len(before) < N_RUNS * STAGES
    done_before = complete_runs(before)
    assert done_before, "expected at least one complete run before the kill"
    kept_lines = [line for line in results.read_text().splitlines() if json.loads(line)["run"] in done_before]

    proc = _run("--resume", "--out", str(out))  # threads: as started (runner.json)
    assert f"{len(done_before)} already complete" in proc.stdout
    assert json.loads((out / "runner.json").read_text())["threads"] == 1

    rows = read_rows(results)
    assert len(rows) == N_RUNS * STAGES  # every run complete, nothing duplicated
    assert len(complete_runs(rows)) == N_RUNS
    # the rows of runs finished before the kill are kept as they were, not repeated
    assert results.read_text().splitlines()[: len(kept_lines)] == kept_lines
    # same numbers as the uninterrupted benchmark (CPU is deterministic)
    assert _comparable(rows) == _comparable(read_rows(uninterrupted / "results.jsonl"))
    assert _stable_summary(out) == _stable_summary(uninterrupted)
    assert len(list((out / "tb").iterdir())) == N_RUNS

    # resuming a finished benchmark runs nothing
    proc = _run("--resume", "--out", str(out))
    assert f"0 runs executed, {N_RUNS} already complete" in proc.stdout
    assert len(read_rows(results)) == N_RUNS * STAGES


def test_two_workers_give_the_same_results(suite_file: Path, uninterrupted: Path, tmp_path: Path):
    out = tmp_path / "two"
    _run("--suite", str(suite_file), "--out", str(out), "--workers", "2")
    threads = json.loads((out / "runner.json").read_text())["threads"]
    assert threads == threads_per_worker(2)
    rows = _comparable(read_rows(out / "results.jsonl"))
    expected = _comparable(read_rows(uninterrupted / "results.jsonl"))
    if threads == 1:  # the same thread count as the --workers 1 --threads 1 run: bit for bit
        assert rows == expected
        assert _stable_summary(out) == _stable_summary(uninterrupted)
    else:  # more cores: another float32 reduction order; close after 6 iterations
        assert rows.keys() == expected.keys()
        for key, row in rows.items():
            assert row["action"] == expected[key]["action"]
            assert row["objective_value"] == pytest.approx(expected[key]["objective_value"], rel=1e-3)
