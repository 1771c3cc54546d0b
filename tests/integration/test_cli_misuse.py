"""The command line under misuse: one-line errors (exit 2), nothing half-written, and
an output directory that only one process writes at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.cli import main
from benchmarks.execution.output import LOCK_FILE
from benchmarks.execution.results import RESULTS, read_rows
from benchmarks.suites.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--stages", "1", "--iters", "1", "--set", "patch_size=32", "--set", "batch_size=2",
        "--set", "eval_images=1", "--set", "eval_size=32"]
SUITE = """\
name = "misuse"
seeds = [0, 1]
objectives = ["psnr"]

[env]
id = "LossAgent/SuperResolution-v0"
kwargs = { patch_size = 32, batch_size = 2, eval_images = 1, eval_size = 32, losses = ["l1", "ssim"] }

[budget]
max_stages = {stages}
stage_iters = {iters}

[[agents]]
name = "fixed"

[[agents]]
name = "random"
"""


def _suite(tmp_path: Path, stages: int = 1, iters: int = 1, **replace: str) -> Path:
    text = SUITE.replace("{stages}", str(stages)).replace("{iters}", str(iters))
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "misuse.toml"
    path.write_text(text)
    return path


def _one_line_error(capsys, code: int, expected: str, command: str = "run") -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"lossagent {command}: error: "), err
    assert expected in lines[0], err
    return lines[0]


def _images(folder: Path, size: int, count: int = 3) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(folder / f"{i}.png")
    return folder


# ------------------------------------------------------------------ lossagent run
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--objective", "psnr:-1"], "with a weight > 0"),
        (["--agent", "ucb", "--agent-arg", "windw=3"], "Did you mean 'window'"),
        (["--agent", "fixed", "--agent-arg", "weights=[2.0,0.5]"], "shape (2,)"),
        (["--set", "backbone_kwargs={chanels=8}"], "takes no option ['chanels']"),
        (["--objective", "ms_ssim"], "EnvConfig.eval_size=32 is too small for the metric 'ms_ssim'"),
        (["--seed", "-1"], "--seed -1 is not allowed. Allowed: an integer >= 0"),
        (["--set", 'divergence_penalty="x"'], "EnvConfig.divergence_penalty='x'"),
        (["--set", 'losses="l1"'], "is not a list"),
        (["--agent", "llm", "--llm", "nonexistent:xyz"], "nonexistent"),
    ],
    ids=["negative-weight", "unknown-agent-arg", "weights-out-of-range", "backbone-kwargs",
         "ms-ssim-too-small", "negative-seed", "penalty-string", "losses-string", "unknown-provider"],
)
def test_bad_run_input_is_one_line_and_leaves_nothing(args, expected, capsys, tmp_path):
    out = tmp_path / "new"
    code = main(["run", *TINY, "--out", str(out), *args])
    _one_line_error(capsys, code, expected)
    assert not out.exists()


def test_cuda_where_there_is_none(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["run", *TINY, "--device", "cuda", "--out", str(tmp_path / "new")])
    _one_line_error(capsys, code, "CUDA is not available here")
    assert not (tmp_path / "new").exists()


def test_openai_without_a_key(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "new"
    code = main(["run", *TINY, "--agent", "llm", "--llm", "openai:gpt-4o-mini", "--out", str(out)])
    line = _one_line_error(capsys, code, "OPENAI_API_KEY")
    assert "openai:gpt-4o-mini" in line
    assert not out.exists()


@pytest.mark.parametrize("kind", ["corrupt", "tiny-images"])
def test_a_bad_dataset_names_the_file_or_the_size(kind, capsys, tmp_path):
    if kind == "corrupt":
        folder = _images(tmp_path / "data", 64)
        (folder / "1.png").write_bytes((folder / "1.png").read_bytes()[:200])  # truncated
        expected = "1.png"
    else:
        folder = _images(tmp_path / "data", 8)
        expected = "patch_size=32 is larger than some training images"
    out = tmp_path / "new"
    code = main(["run", *TINY, "--set", f'dataset="{folder}"', "--out", str(out)])
    _one_line_error(capsys, code, expected)
    assert not out.exists()


def test_junk_init_checkpoint_names_the_field(capsys, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(105, 200)))
    code = main(["run", *TINY, "--set", f'init_checkpoint="{junk}"', "--out", str(tmp_path / "new")])
    _one_line_error(capsys, code, f"EnvConfig.init_checkpoint='{junk}' is not a network state_dict")
    assert not (tmp_path / "new").exists()


def test_out_that_is_a_file(capsys, tmp_path):
    path = tmp_path / "a-file"
    path.write_text("x")
    code = main(["run", *TINY, "--out", str(path)])
    _one_line_error(capsys, code, "is a file")
    assert path.read_text() == "x"


def test_a_failed_run_can_be_rerun_with_the_same_out(capsys, tmp_path):
    out = tmp_path / "new"
    assert main(["run", *TINY, "--objective", "ms_ssim", "--out", str(out)]) == 2
    capsys.readouterr()
    assert main(["run", *TINY, "--objective", "psnr", "--out", str(out)]) == 0
    assert len(read_rows(out / RESULTS)) == 1


# ------------------------------------------------------------------ lossagent bench
def test_seed_ranges(capsys, tmp_path):
    started = time.perf_counter()
    code = main(["bench", "--suite", str(_suite(tmp_path)), "--seeds", "0-100000000", "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "more than 10000 seeds", "bench")
    assert time.perf_counter() - started < 30
    code = main(["bench", "--suite", str(_suite(tmp_path)), "--seeds", "5-2", "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "the range '5-2' is empty", "bench")
    assert not (tmp_path / "o").exists()


def test_duplicate_seed_check_is_fast(tmp_path):
    seeds = ", ".join(map(str, range(40_000)))
    path = _suite(tmp_path, **{"seeds = [0, 1]": f"seeds = [{seeds}]"})
    started = time.perf_counter()
    suite = load_suite(path, check_names=False)
    assert len(suite.seeds) == 40_000 and time.perf_counter() - started < 5


def test_a_shipped_suite_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()  # what `lossagent bench --suite smoke --out smoke` leaves
    assert load_suite("smoke").name == "smoke"


def test_invalid_suite_values_are_one_line_and_create_nothing(capsys, tmp_path):
    path = _suite(tmp_path, **{"patch_size = 32": "patch_size = 0"})
    out = tmp_path / "o"
    code = main(["bench", "--suite", str(path), "--out", str(out)])
    line = _one_line_error(capsys, code, "EnvConfig.patch_size=0", "bench")
    assert f"{path}:" in line  # the file and the line of the key
    assert not out.exists()


def test_a_suite_file_that_is_not_utf8(capsys, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(SUITE.replace("misuse", "mis\xfcse").encode("latin-1"))
    code = main(["bench", "--suite", str(path), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "not UTF-8", "bench")


def test_out_below_a_file(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["bench", "--suite", str(_suite(tmp_path)), "--out", str(blocker / "o")])
    _one_line_error(capsys, code, "Cannot create the output directory", "bench")
    code = main(["bench", "--resume", "--out", str(blocker / "o")])
    _one_line_error(capsys, code, "does not exist", "bench")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "bench"
    assert main(["bench", "--suite", str(_suite(tmp)), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", ["suite.json", "runner.json"])
def test_resume_with_a_corrupt_json_file(name, finished, capsys, tmp_path):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(finished), str(out)], check=True)
    (out / name).write_text("{not json")
    code = main(["bench", "--resume", "--out", str(out)])
    _one_line_error(capsys, code, f"{out / name}' is corrupt", "bench")


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"[1, 2, 3]\n", "must be a JSON object"),
        (b'{"run": "\xff\xfe"}\n', "not a JSON row"),
        (b'{"run": "x", "stage": 1}\n', "lacks the keys"),
    ],
    ids=["a-list", "not-utf8", "missing-keys"],
)
def test_report_on_broken_rows_names_the_line(line, expected, finished, capsys, tmp_path):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(finished), str(out)], check=True)
    rows = (out / RESULTS).read_bytes()
    (out / RESULTS).write_bytes(line + rows)  # a broken first line
    for command in (["report", "--out", str(out)], ["bench", "--resume", "--out", str(out)]):
        code = main(command)
        line = _one_line_error(capsys, code, f"{out / RESULTS}:1: ", command[0])
        assert expected in line


# ---------------------------------------------------------------- one owner per --out
def _bench_process(suite: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "bench", "--suite", str(suite), "--out", str(out), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_a_second_process_on_a_running_out_is_refused_and_loses_nothing(capsys, tmp_path):
    suite = _suite(tmp_path, stages=3, iters=30)
    out = tmp_path / "bench"
    first = _bench_process(suite, out)
    deadline = time.time() + 120
    while not (out / RESULTS).is_file() and time.time() < deadline:  # running, a row written
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()
    holder = (out / LOCK_FILE).read_text()
    assert f"pid {first.pid}" in holder
    code = main(["bench", "--resume", "--out", str(out)])
    line = _one_line_error(capsys, code, "is in use by lossagent bench", "bench")
    assert f"pid {first.pid}" in line
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "is in use by", "report")
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    rows = read_rows(out / RESULTS)
    assert len(rows) == 2 * 2 * 3  # agents x seeds x stages, none lost
    assert len({(r["run"], r["stage"]) for r in rows}) == len(rows)
    assert "4 runs executed" in stdout
    # The lock goes with its holder: a resume now runs (and has nothing to do).
    assert main(["bench", "--resume", "--out", str(out)]) == 0
    assert "0 runs executed, 4 already complete" in capsys.readouterr().out
    assert json.loads((out / "suite.json").read_text())["name"] == "misuse"


# ---------------------------------------------------------------- lossagent run on a table
def _lossagent(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real command line in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def _refused(result: subprocess.CompletedProcess, *expected: str) -> str:
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("lossagent run: error: "), result.stderr
    for part in expected:
        assert part in lines[0], result.stderr
    return lines[0]


TABLE_RUN = ["run", "--env", "LossAgent/Tabular-v0", "--set", "table=smoke"]


def test_run_on_a_shipped_table_as_documented_plays_the_whole_table(tmp_path):
    out = tmp_path / "run"
    result = _lossagent(*TABLE_RUN, "--agent", "ucb", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ucb on LossAgent/Tabular-v0 (psnr), seed 0: final J" in result.stdout
    rows = read_rows(out / RESULTS)
    assert [r["stage"] for r in rows] == [1, 2, 3, 4]  # the table's depth
    assert {r["max_stages"] for r in rows} == {4}


def test_run_on_a_table_refuses_training_iterations(tmp_path):
    result = _lossagent(*TABLE_RUN, "--iters", "999", "--out", str(tmp_path / "run"), cwd=tmp_path)
    _refused(result, "--iters 999: the table fixes it at 40")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--device", "cuda"], "--device cuda: the table fixes it at 'cpu'"),
        (["--set", "patch_size=48"], "--set patch_size=...: the table fixes it at 32"),
        (["--set", 'dataset="div2k"'], "--set dataset=...: the table fixes it at 'skimage'"),
        (["--stages", "5"], "--stages 5: max_stages=5 is not allowed. Allowed: an integer in [1, 4]"),
        (["--seed", "-1"], "--seed -1"),
        (["--agent", "fixed", "--agent-arg", "presett=edges"], "Known: ['initial_weights', 'preset', 'weights']"),
        (["--agent", "ppo", "--agent-arg", "batch_size=1"], "PPOAgent: batch_size=1"),
        (["--agent", "ppo", "--agent-arg", "learning_rate=-1"], "PPOAgent(learning_rate=-1)"),
        (["--agent", "ppo", "--agent-arg", 'train_seeds="12"'], "PPOAgent(train_seeds='12')"),
        (["--agent", "random", "--agent-arg", 'alpha="x"'], "RandomAgent(alpha='x')"),
        (["--agent", "ucb", "--agent-arg", 'presets="pixel"'], "UCBAgent(presets='pixel')"),
        (["--agent", "egreedy", "--agent-arg", "epsilon=2"], "EpsilonGreedyAgent(epsilon=2)"),
    ],
)
def test_run_on_a_table_refuses_what_the_table_fixes_and_bad_agent_arguments(args, expected, capsys, tmp_path):
    code = main([*TABLE_RUN, *args, "--out", str(tmp_path / "run")])
    _one_line_error(capsys, code, expected)
    assert not (tmp_path / "run").exists()


def test_run_on_a_table_without_a_table_says_how_to_name_one(capsys):
    from lossagent_env.tabular import shipped_tables

    code = main(["run", "--env", "LossAgent/Tabular-v0"])
    _one_line_error(
        capsys, code,
        f"--set table=...: a table replay needs `table = NAME_OR_PATH`: a table file, or a shipped table {shipped_tables()}",
    )


def test_run_on_a_table_accepts_the_table_s_own_settings(capsys):
    assert main([*TABLE_RUN, "--agent", "random", "--iters", "40", "--device", "cpu", "--stages", "2",
                 "--seed", "3"]) == 0
    assert "random on LossAgent/Tabular-v0 (psnr), seed 3: final J" in capsys.readouterr().out


def test_run_fixed_with_a_preset_argument(tmp_path):
    result = _lossagent(*TABLE_RUN, "--agent", "fixed", "--agent-arg", "preset=edges", "--out",
                        str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {r["preset"] for r in read_rows(tmp_path / "run" / RESULTS)} == {"edges"}


def test_run_ppo_with_one_step_rollouts_says_why_before_training(tmp_path):
    result = _lossagent(*TABLE_RUN, "--agent", "ppo", "--agent-arg", "n_steps=1", "--out", str(tmp_path / "run"),
                        cwd=tmp_path)
    _refused(result, "PPOAgent: n_steps=1", "n_steps >= 2", "normalize_advantage")
    assert not (tmp_path / "run").exists()


def test_a_mistyped_table_env_id_suggests_the_table_env(capsys):
    code = main(["run", "--env", "LossAgent/Tabular-v1", "--agent", "random"])
    _one_line_error(capsys, code, "Did you mean 'LossAgent/Tabular-v0'?")
