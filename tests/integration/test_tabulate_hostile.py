"""``lossagent tabulate`` (and the output locks of ``report`` and ``bench``) under
hostile or careless use, through the real command line in a subprocess: huge tables,
Ray addresses that do not answer, symbolic links and files of the user's beside the
table, two builds of one table through a link, and messages that must say what works.

Every refusal is one line on stderr with exit status 2, and leaves nothing behind:
no table, no lock file, and every file of the user's as it was.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import INSTANCE_TABLE_TOML, SMALL_TABLE_TOML

ROOT = Path(__file__).resolve().parents[2]

TINY_TABLE_TOML = SMALL_TABLE_TOML.replace("stages = 2", "stages = 1").replace(
    "seeds = [123, 456]", "seeds = [0]"
)
"""1 seed, 3 presets, 1 stage: 4 nodes, built in a few seconds."""


def _lossagent(
    *args: str, timeout: float = 120, cwd: Path | None = None, memory_mb: int | None = None
) -> subprocess.CompletedProcess:
    """``lossagent ARGS`` in a subprocess; a command still running after ``timeout`` fails
    the test, and one that allocates more than ``memory_mb`` of data fails with a MemoryError."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")

    def limit_memory() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (memory_mb * 2**20, memory_mb * 2**20))

    try:
        return subprocess.run(
            [sys.executable, "-m", "benchmarks", *args], env=env, cwd=cwd, capture_output=True,
            text=True, timeout=timeout, check=False, preexec_fn=limit_memory if memory_mb else None,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"lossagent {' '.join(args)} still ran after {timeout} s: {(e.stderr or b'')[-2000:]!r}")


def _one_line_error(proc: subprocess.CompletedProcess, expected: str, command: str = "tabulate") -> str:
    lines = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"lossagent {command}: error: "), proc.stderr[-3000:]
    assert expected in lines[0], lines[0]
    return lines[0]


def _suite(folder: Path, text: str, name: str = "table.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- size


def test_a_huge_table_is_refused_with_its_size_and_time_before_anything_is_created(tmp_path):
    suite = _suite(tmp_path, SMALL_TABLE_TOML.replace("stages = 2", "stages = 50").replace(
        'structure = { ssim = 1.0 }\nedges = [1.0, 0.0, 0.5]', "structure = { ssim = 1.0 }"
    ).replace("seeds = [123, 456]", "seeds = [0]"))
    out = tmp_path / "huge.sqlite"
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--no-progress", timeout=90)
    line = _one_line_error(proc, "2,251,799,813,685,247 nodes")  # 2**51 - 1: K = 2, T = 50
    assert "Estimated build time" in line and "years" in line and "--max-nodes" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.toml"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA bounds the heap on Linux")
def test_a_billion_replicates_are_refused_at_once_without_listing_their_seeds(tmp_path):
    suite = _suite(tmp_path, INSTANCE_TABLE_TOML.replace("replicates = 2", "replicates = 1000000000"))
    out = tmp_path / "huge.sqlite"
    started = time.monotonic()
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), timeout=60, memory_mb=1536)
    line = _one_line_error(proc, "28,000,000,000 nodes")
    assert "4 instance(s) x 1,000,000,000 replicates" in line and "Estimated build time" in line
    assert time.monotonic() - started < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.toml"]


def test_max_nodes_sets_the_limit(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "tiny.sqlite"
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--max-nodes", "3")
    _one_line_error(proc, "has 4 nodes")
    assert not out.exists() and not Path(f"{out}.lock").exists()
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--max-nodes", "4", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 nodes" not in proc.stderr and out.is_file()


def test_more_workers_than_cores_are_capped_with_one_line(tmp_path):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "tiny.sqlite"
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--workers", "1000", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if "--workers" in line]
    assert notes == [f"lossagent tabulate: --workers 1000 is more than the {cores} cores here; using {cores} processes."]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA bounds the heap on Linux")
def test_verify_names_a_bad_seed_and_refuses_a_billion_samples_before_it_starts(tmp_path):
    proc = _lossagent("tabulate", "--verify", "smoke", "--seed", "-1", timeout=60)
    line = _one_line_error(proc, "--seed")
    assert "-1 is not allowed" in line and "an integer >= 0" in line
    started = time.monotonic()
    proc = _lossagent("tabulate", "--verify", "smoke", "--samples", "1000000000", timeout=60, memory_mb=1536)
    line = _one_line_error(proc, "--samples")
    assert "1000000000 is not allowed" in line and "[1, 1000]" in line and "hours" in line
    assert time.monotonic() - started < 60


# --------------------------------------------------------------------------- Ray


@pytest.mark.ray
def test_a_ray_address_that_refuses_fails_at_once_and_creates_nothing(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "t.sqlite"
    address = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    proc = _lossagent(
        "tabulate", "--suite", str(suite), "--out", str(out), "--backend", "ray",
        "--ray-address", address, "--ray-timeout", "5", timeout=60,
    )
    _one_line_error(proc, f"Cannot connect to the Ray cluster at {address!r}")
    assert time.monotonic() - t0 < 45
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.toml"]


@pytest.mark.ray
def test_a_ray_address_that_never_answers_times_out(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "t.sqlite"
    with socket.socket() as silent:  # accepts connections (the kernel does) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        proc = _lossagent(
            "tabulate", "--suite", str(suite), "--out", str(out), "--backend", "ray",
            "--ray-address", address, "--ray-timeout", "3", timeout=60,
        )
    _one_line_error(proc, f"Cannot connect to the Ray cluster at {address!r}: no answer within 3 s")
    assert time.monotonic() - t0 < 45
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.toml"]


@pytest.mark.parametrize("command", ["tabulate", "bench"])
def test_a_ray_address_without_the_ray_backend_is_refused(tmp_path, command):
    out = tmp_path / "out"
    args = ["--suite", str(_suite(tmp_path, TINY_TABLE_TOML))] if command == "tabulate" else [
        "--suite", "smoke", "--seeds", "0"
    ]
    proc = _lossagent(command, *args, "--out", str(out), "--ray-address", "127.0.0.1:1", timeout=90)
    _one_line_error(proc, "used only by the ray backend", command)
    assert "--backend ray" in proc.stderr
    assert not out.exists()


@pytest.mark.ray
def test_bench_on_a_ray_address_that_refuses_fails_at_once_and_keeps_nothing(tmp_path):
    out = tmp_path / "bench"
    address = f"127.0.0.1:{_closed_port()}"
    proc = _lossagent(
        "bench", "--suite", "smoke", "--seeds", "0", "--out", str(out), "--backend", "ray",
        "--ray-address", address, timeout=90,
    )
    _one_line_error(proc, f"Cannot connect to the Ray cluster at {address!r}", "bench")
    assert not out.exists()


# --------------------------------------------------------------------------- files beside the table


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / ".lock").symlink_to(victim)
    proc = _lossagent("report", "--out", str(bench))
    _one_line_error(proc, "is a symbolic link", "report")
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "t.sqlite"
    Path(f"{out}.lock").symlink_to(victim)
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out))
    _one_line_error(proc, "is a symbolic link")
    assert victim.read_text() == "keep me\n"
    assert not out.exists()


def test_a_users_files_named_like_the_tables_are_never_deleted_nor_overwritten(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "t.sqlite"
    journal = Path(f"{out}-journal")
    journal.write_text("my journal notes\n")
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out))
    _one_line_error(proc, f"{str(journal)!r} exists")
    assert journal.read_text() == "my journal notes\n" and not out.exists()
    journal.unlink()
    tmp = Path(f"{out}.tmp")  # the build writes under a temporary name of its own
    tmp.write_text("my notes\n")
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert tmp.read_text() == "my notes\n" and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".t.sqlite")) == []
    out = tmp_path / "u.sqlite"
    lock = Path(f"{out}.lock")
    lock.write_text("my lock notes\n")
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out))
    _one_line_error(proc, "is not a lossagent lock file")
    assert lock.read_text() == "my lock notes\n" and not out.exists()


@pytest.mark.slow
def test_a_second_build_through_a_symlink_is_refused_while_the_first_runs(tmp_path):
    # deep enough (246 nodes) to outlast the second command; killed once checked
    suite = _suite(tmp_path, SMALL_TABLE_TOML.replace("stages = 2", "stages = 4"))
    target = tmp_path / "real.sqlite"
    link = tmp_path / "link.sqlite"
    link.symlink_to(target)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    first = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "tabulate", "--suite", str(suite), "--out", str(target),
         "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 180
        lock = Path(f"{target}.lock")
        while time.monotonic() < deadline and first.poll() is None and not (
            target.exists() and lock.exists() and f"pid {first.pid}" in lock.read_text()
        ):
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()[1][-3000:]
        for resume_through in (link, target):
            proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(resume_through), "--resume")
            line = _one_line_error(proc, "is in use by lossagent tabulate")
            assert f"pid {first.pid}" in line
        assert first.poll() is None, "the first build must still be running"
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert not Path(f"{link}.lock").exists()


def test_a_build_and_a_report_on_an_empty_folder_leave_no_lock_file(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "tiny.sqlite"
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.toml", "tiny.sqlite"]
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _lossagent("report", "--out", str(empty))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert list(empty.iterdir()) == []


# --------------------------------------------------------------------------- messages that say what works


def test_a_refused_resume_names_what_differs_in_one_short_line(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "tiny.sqlite"
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _suite(tmp_path, TINY_TABLE_TOML.replace("stage_iters = 2", "stage_iters = 3"))
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--resume", "--no-progress")
    line = _one_line_error(proc, "differs from this one in ['env_config', 'env_kwargs']")
    assert "env_kwargs.stage_iters: stored 2, now 3" in line and "env_config.stage_iters: stored 2, now 3" in line
    assert len(line) < 600, line


def test_out_a_folder_says_to_name_a_file_with_and_without_resume(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    folder = tmp_path / "tables"
    folder.mkdir()
    for extra in ([], ["--resume"]):
        proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(folder), *extra)
        line = _one_line_error(proc, "is a folder; --out is the table file to write")
        assert str(folder / "table.sqlite") in line and "--resume" not in line
    assert list(folder.iterdir()) == []


def test_out_a_file_that_is_no_table_says_to_choose_another_with_and_without_resume(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "notes.sqlite"
    out.write_text("not a table\n")
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out))
    line = _one_line_error(proc, "already exists and is not a table")
    assert "choose another --out" in line and "--resume" not in line
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--resume")
    line = _one_line_error(proc, "Cannot resume")
    assert "another --out (without --resume)" in line
    assert out.read_text() == "not a table\n"


def test_out_in_a_missing_folder_says_the_folder_does_not_exist(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "missing" / "t.sqlite"
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out))
    _one_line_error(proc, f"its folder {str(out.parent)!r} does not exist. Create the folder")
    assert not out.parent.exists()


def test_a_lock_error_names_the_lock_file_and_what_to_do(tmp_path):
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    (tmp_path / "t.sqlite.lock").mkdir()  # a folder where the lock file goes
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", "t.sqlite", cwd=tmp_path)
    line = _one_line_error(proc, f"{str(tmp_path / 't.sqlite.lock')!r} is a folder")
    assert "'.'" not in line and "Move it away, or choose another --out" in line
    assert not (tmp_path / "t.sqlite").exists()


def test_a_unit_another_writer_stored_meanwhile_is_one_clear_error(tmp_path):
    # What a second writer through another path to the file (a hard link) leaves for
    # the first: the nodes of a unit it is about to store, stored since it looked.
    suite = _suite(tmp_path, TINY_TABLE_TOML)
    out = tmp_path / "t.sqlite"
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(out) as db:
        db.execute("DELETE FROM units WHERE first = 1")
    db.close()
    proc = _lossagent("tabulate", "--suite", str(suite), "--out", str(out), "--resume", "--no-progress")
    line = _one_line_error(proc, "Cannot store unit (seed 0, first preset 1)")
    assert "another process writes this table" in line and "--resume" in line


def test_bench_messages_on_an_existing_out_do_not_send_the_user_in_a_loop(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    proc = _lossagent("bench", "--suite", "smoke", "--out", str(folder))
    line = _one_line_error(proc, "already exists and is not the folder of a benchmark", "bench")
    assert "--resume" not in line
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    proc = _lossagent("bench", "--suite", "smoke", "--out", str(file))
    line = _one_line_error(proc, "exists and is not a folder", "bench")
    assert "--resume" not in line
    proc = _lossagent("bench", "--resume", "--out", str(file))
    line = _one_line_error(proc, "is a file, not the folder of a benchmark", "bench")
    assert "does not exist" not in line
    assert file.read_text() == "mine\n" and list(folder.iterdir()) == []
