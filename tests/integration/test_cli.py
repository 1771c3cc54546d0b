"""The ``lossagent`` command line: real subprocesses with tiny budgets, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.cli.common import parse_objective, parse_seeds

ROOT = Path(__file__).resolve().parents[2]
TINY_SET = [
    "--set",
    "patch_size=32",
    "--set",
    "batch_size=2",
    "--set",
    "eval_images=2",
    "--set",
    "eval_size=32",
]
SUITE = """\
name = "cli-test"
seeds = [0]
objectives = ["psnr", { psnr = 1.0, ssim = 10.0 }]

[env]
id = "LossAgent/SuperResolution-v0"
kwargs = { scale = 2, patch_size = 32, batch_size = 2, eval_images = 2, eval_size = 32, device = "cpu", losses = ["l1", "ssim", "fft"] }

[budget]
max_stages = 2
stage_iters = 2

[[agents]]
name = "ucb"
"""


def lossagent(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TORCH_HOME=str(ROOT / ".torch_home"))
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "cli_test.toml"
    path.write_text(SUITE)
    return path


# --------------------------------------------------------------------------- happy paths


def test_run_subprocess_writes_results_and_tensorboard(tmp_path: Path):
    out = tmp_path / "one"
    proc = lossagent(
        "run",
        "--agent",
        "random",
        "--objective",
        "psnr:1,ssim:10",
        "--stages",
        "2",
        "--iters",
        "2",
        "--seed",
        "3",
        "--out",
        str(out),
        *TINY_SET,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [1, 2]
    assert {r["seed"] for r in rows} == {3} and rows[0]["objective"] == "psnr+10ssim"
    assert set(rows[0]["metrics"]) == {"psnr", "ssim"}
    (tb_dir,) = (out / "tb").iterdir()
    assert tb_dir.name == "LossAgent-SuperResolution-v0__random__psnr+10ssim__3"
    assert any(p.name.startswith("events.out.tfevents") for p in tb_dir.iterdir())
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("random on LossAgent/SuperResolution-v0 (psnr+10ssim), seed 3: final J")
    assert f"{rows[-1]['objective_value']:.4g}" in summary


def test_bench_subprocess_writes_every_output(tmp_path: Path, suite_file: Path):
    out = tmp_path / "bench"
    proc = lossagent("bench", "--suite", str(suite_file), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2  # 2 objectives x 1 seed x 2 stages
    assert {r["run"] for r in rows} == {
        "LossAgent-SuperResolution-v0__ucb__psnr__0",
        "LossAgent-SuperResolution-v0__ucb__psnr+10ssim__0",
    }
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("objective,agent,seeds,final_mean") and len(summary) == 3
    report = (out / "report.md").read_text()
    assert "## Objective: psnr+10ssim" in report and "(plots/psnr__weights.png)" in report
    assert (out / "plots" / "psnr+10ssim__objective.png").stat().st_size > 0
    assert len(list((out / "tb").iterdir())) == 2
    assert "2 runs executed" in proc.stdout

    # `lossagent report` rebuilds the report from results.jsonl alone
    (out / "summary.csv").unlink()
    (out / "report.md").unlink()
    proc = lossagent("report", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "summary.csv").read_text().splitlines() == summary
    assert (out / "report.md").read_text() == report


def test_losses_and_metrics_listings(capsys):
    assert main(["losses"]) == 0
    text = capsys.readouterr().out
    assert "l1  (scale" in text and "usable now" in text
    assert main(["losses", "--json"]) == 0
    catalogue = json.loads(capsys.readouterr().out)
    assert {"l1", "ssim"} <= {e["name"] for e in catalogue}
    assert main(["metrics", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["psnr"]["usable_now"] is True and metrics["niqe"]["lower_better"] is True
    assert main(["metrics", "--usable"]) == 0
    assert "psnr" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["bench", "run", "report", "losses", "metrics", "assets"])
def test_every_subcommand_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_bench_help_names_every_shipped_suite(capsys):
    from benchmarks.suites.suite import suite_names

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse may wrap at a hyphen
    assert f"a shipped suite name ({', '.join(suite_names())})" in text and "tabular" in suite_names()


def test_parse_helpers():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("2-4,0") == [0, 2, 3, 4]
    assert parse_objective("psnr") == "psnr"
    assert parse_objective("psnr:1,ssim:10") == {"psnr": 1.0, "ssim": 10.0}


# --------------------------------------------------------------------------- bad input


def test_unknown_suite_subprocess_clean_error():
    proc = lossagent("bench", "--suite", "smoek")
    assert proc.returncode == 2
    assert "No suite named 'smoek'. Did you mean 'smoke'?" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--agent", "rndom"], "No agent named 'rndom'. Did you mean 'random'?"),
        (["run", "--objective", "psnrr"], "No metric named 'psnrr'. Did you mean 'psnr'?"),
        (["run", "--set", 'losses=["l1", "ssmi"]'], "No loss named 'ssmi'. Did you mean 'ssim'?"),
        (["run", "--env", "LossAgent/Denoisng-v0"], "Did you mean 'LossAgent/Denoising-v0'?"),
        (["run", "--set", "patch_sise=32"], "Did you mean 'patch_size'?"),
        (["run", "--set", "patch_size=33"], "patch_size=33"),
        (["run", "--stages", "0"], "--stages 0"),
        (["run", "--agent", "ucb", "--llm", "openai:gpt-4o-mini"], "--agent llm only"),
        (["bench", "--suite", "smoke", "--seeds", "a,b"], "--seeds 'a,b'"),
        (["bench", "--suite", "paper"], "--data DIR"),
        (["bench", "--resume"], "--resume needs --out"),
    ],
    ids=[
        "agent",
        "metric",
        "loss",
        "env",
        "env-field",
        "env-value",
        "stages",
        "model-flag",
        "seeds",
        "data",
        "resume",
    ],
)
def test_bad_input_exits_2_with_a_clear_message(argv, expected, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert err.startswith(f"lossagent {argv[0]}: error: ")


def test_malformed_suite_file_names_file_line_and_key(tmp_path: Path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(SUITE.replace('name = "ucb"', 'name = "ucb"\nweight = 3'))
    assert main(["bench", "--suite", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:15: key 'agents[0].weight'" in err
    assert not (tmp_path / "o").exists()


def test_existing_out_without_resume_is_refused(tmp_path: Path, suite_file: Path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    assert main(["bench", "--suite", str(suite_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    # a folder that holds no benchmark cannot be resumed either: only another --out works
    assert "already exists and is not the folder of a benchmark" in err and "--resume" not in err
    assert list(out.iterdir()) == []


def test_resume_of_a_directory_that_is_not_a_benchmark(tmp_path: Path, capsys):
    assert main(["bench", "--resume", "--out", str(tmp_path)]) == 2
    assert "suite.json" in capsys.readouterr().err
