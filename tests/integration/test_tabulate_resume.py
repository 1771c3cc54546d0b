"""``lossagent tabulate``: SIGKILL mid-build, then resume, equals an
uninterrupted build in every column but the wall-clock seconds.

The killed build runs as a real subprocess with two worker processes; the resume runs
in this process with one; the reference is the session's small table, built in this
process without interruption. Every unit runs one torch thread (the table's
``threads``), so the three agree bit for bit whatever the number of workers. A Ray
build (marker ``ray``) gives the same table too.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.execution.tabulate import tabulate

ROOT = Path(__file__).resolve().parents[2]
UNITS = 2 * 3  # seeds x presets of the small table


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TORCH_HOME=str(ROOT / ".torch_home"))
    return env


def _units_done(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:  # being created, or locked by a write: ask again
        return 0


def _comparable(path: Path) -> dict[str, list]:
    """Every row of every table, sorted, without the wall-clock columns and the build
    command (which differs between a build and its resumption)."""
    db = sqlite3.connect(path)
    try:
        return {
            "header": db.execute("SELECT * FROM header WHERE key != 'build' ORDER BY key").fetchall(),
            "nodes": db.execute("SELECT seed, path, depth, diverged FROM nodes ORDER BY 1, 2").fetchall(),
            "metrics": db.execute("SELECT * FROM metrics ORDER BY 1, 2, 3, 4").fetchall(),
            "losses": db.execute("SELECT * FROM losses ORDER BY 1, 2, 3").fetchall(),
            "units": db.execute("SELECT * FROM units ORDER BY 1, 2").fetchall(),
        }
    finally:
        db.close()


def test_sigkill_then_resume_equals_an_uninterrupted_build(small_table, tmp_path):
    out = tmp_path / "killed.sqlite"
    command = [
        sys.executable, "-m", "benchmarks", "tabulate", "--suite", str(small_table["suite"]),
        "--out", str(out), "--workers", "2", "--no-progress",
    ]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and _units_done(out) < 1:
            time.sleep(0.01)
        assert proc.poll() is None, f"the build ended before it could be killed: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = _units_done(out)
    assert 1 <= done < UNITS, f"expected a partial table, found {done} of {UNITS} units"

    result = tabulate(small_table["suite"], out, resume=True, progress=False)
    assert (result.skipped, result.computed) == (done, UNITS - done)
    assert _comparable(out) == _comparable(small_table["path"])
    header = sqlite3.connect(out).execute("SELECT value FROM header WHERE key = 'build'").fetchone()
    assert "lossagent tabulate --suite" in header[0] and "--workers 2" in header[0]


@pytest.mark.ray
def test_the_ray_backend_builds_the_same_table(small_table, tmp_path):
    out = tmp_path / "ray.sqlite"
    result = tabulate(small_table["suite"], out, backend="ray", workers=2, progress=False)
    assert (result.computed, result.nodes) == (UNITS, UNITS * (1 + 1 + 3))
    assert _comparable(out) == _comparable(small_table["path"])
