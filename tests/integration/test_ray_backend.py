"""``--backend ray``: the same runs as Ray tasks on a small local cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.execution.results import complete_runs, read_rows
from benchmarks.runner import run_suite
from benchmarks.suites.suite import load_suite_text

pytestmark = pytest.mark.ray

SUITE = """\
name = "ray-test"
seeds = [0, 1]
objectives = ["psnr"]

[env]
id = "LossAgent/SuperResolution-v0"
kwargs = { scale = 2, patch_size = 32, batch_size = 2, eval_images = 2, eval_size = 32, device = "cpu", losses = ["l1", "ssim", "fft"] }

[budget]
max_stages = 2
stage_iters = 2

[[agents]]
name = "random"
"""
TIMING_FIELDS = {"wall_s", "setup_s", "act_s", "train_s", "eval_s"}


def _stable(rows: list[dict]) -> dict:
    return {(r["run"], r["stage"]): {k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows}


def test_ray_backend_matches_local(tmp_path: Path):
    ray = pytest.importorskip("ray")
    suite = load_suite_text(SUITE)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_suite(suite, tmp_path / "ray", workers=2, backend="ray", report=False)
    finally:
        ray.shutdown()
    assert not result.failures and sorted(result.executed) == sorted(result.runs)
    rows = read_rows(tmp_path / "ray" / "results.jsonl")
    assert len(rows) == 2 * 2 and len(complete_runs(rows)) == 2
    assert len(list((tmp_path / "ray" / "tb").iterdir())) == 2

    # the Ray tasks ran one torch thread each (2 CPUs / 2 workers); so does this run
    run_suite(suite, tmp_path / "local", workers=1, threads=1, report=False)
    assert _stable(rows) == _stable(read_rows(tmp_path / "local" / "results.jsonl"))


def test_runs_that_may_use_cuda_ask_ray_for_a_share_of_the_gpus(tmp_path: Path, monkeypatch):
    ray = pytest.importorskip("ray")
    suite = load_suite_text(SUITE.replace('device = "cpu"', 'device = "auto"'))
    asked = []
    real_remote = ray.remote

    def recording_remote(*args, **kwargs):
        asked.append(kwargs)
        return real_remote(*args, **kwargs)

    monkeypatch.setattr(ray, "remote", recording_remote)
    # A cluster that declares one GPU: Ray schedules by the declared resources.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        result = run_suite(suite, tmp_path / "ray", workers=2, backend="ray", report=False)
    finally:
        ray.shutdown()
    tasks = [kwargs for kwargs in asked if "num_cpus" in kwargs]  # (Ray's queue is an actor too)
    assert tasks == [{"num_cpus": 1, "num_gpus": 0.5}]  # two tasks at once share the GPU
    assert not result.failures
    rows = read_rows(tmp_path / "ray" / "results.jsonl")
    expected = "cuda:0" if __import__("torch").cuda.is_available() else "cpu"
    assert {r["device"] for r in rows} == {expected}
