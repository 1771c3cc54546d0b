"""The command line answers at once: help and argument errors import no heavy library.

``lossagent --help``, every subcommand's ``--help`` and every argparse error are answered
before torch, Ray, stable-baselines3, LangChain, Gymnasium or pyiqa are imported: those
belong to the subcommand that needs them, after the arguments are parsed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("lossagent")

HEAVY = (
    "torch", "ray", "stable_baselines3", "langchain", "langchain_core", "gymnasium", "pyiqa",
    "matplotlib", "pandas", "rliable",
)
"""Top-level packages that no help text nor argument error may import."""

SUBCOMMANDS = (
    ["bench"], ["run"], ["report"], ["tabulate"], ["losses"], ["metrics"],
    ["assets"], ["assets", "list"], ["assets", "install"],
)
HELPS = [[], *SUBCOMMANDS]
ERRORS = {
    "unknown flag": ["bench", "--no-such-flag"],
    "unknown subcommand": ["benchh"],
    "bad int": ["bench", "--workers", "two"],
    "bad float": ["tabulate", "--suite", "s", "--out", "t", "--ray-timeout", "soon"],
    "bad choice": ["bench", "--backend", "slurm"],
    "missing required": ["report"],
    "missing required of a nested command": ["assets", "install", "lpips"],
    "missing subcommand": [],
}
BUDGET_S = 0.5
"""Wall time allowed for ``lossagent --help`` (median of 3 runs, fresh processes)."""

_PROBE = """\
import json, sys
from benchmarks.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exit:
    code = exit.code
heavy = json.loads(sys.argv[2])
loaded = sorted(name for name in heavy if name in sys.modules)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.__stdout__)
"""


def _environ() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _commands() -> list[list[str]]:
    commands = [[sys.executable, "-m", "benchmarks"]]
    if CONSOLE_SCRIPT.exists():
        commands.append([str(CONSOLE_SCRIPT)])
    return commands


def _probe(argv: list[str]) -> dict:
    """Run ``benchmarks.cli.main(argv)`` in a fresh interpreter; its exit code and the
    heavy packages loaded afterwards."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)],
        cwd=ROOT, env=_environ(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [[*a, "--help"] for a in HELPS], ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_library(argv):
    outcome = _probe(argv)
    assert outcome["code"] == 0
    assert outcome["loaded"] == [], f"lossagent {' '.join(argv)} imported {outcome['loaded']}"


@pytest.mark.parametrize("argv", list(ERRORS.values()), ids=list(ERRORS))
def test_argument_error_imports_no_heavy_library(argv):
    outcome = _probe(argv)
    assert outcome["code"] == 2
    assert outcome["loaded"] == [], f"lossagent {' '.join(argv)} imported {outcome['loaded']}"


@pytest.mark.parametrize("command", _commands(), ids=lambda c: Path(c[-1]).name)
@pytest.mark.parametrize("argv", [[*a, "--help"] for a in HELPS], ids=lambda a: " ".join(a))
def test_help_in_a_real_process(command, argv):
    result = subprocess.run(
        [*command, *argv], cwd=ROOT, env=_environ(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lossagent"), result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("command", _commands(), ids=lambda c: Path(c[-1]).name)
@pytest.mark.parametrize("argv", list(ERRORS.values()), ids=list(ERRORS))
def test_argument_error_is_one_line(command, argv):
    result = subprocess.run(
        [*command, *argv], cwd=ROOT, env=_environ(), capture_output=True, text=True, timeout=120
    )
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and errors[0].startswith("lossagent"), result.stderr
    assert result.stdout == ""


def test_workers_ratio_help_imports_nothing_heavy():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, measure.workers_ratio as m\n"
         "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
         f"print(sorted(n for n in {HEAVY!r} if n in sys.modules), file=sys.stderr)"],
        cwd=ROOT, env=_environ(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]", result.stderr


@pytest.mark.parametrize("command", _commands(), ids=lambda c: Path(c[-1]).name)
def test_help_answers_at_once(command):
    subprocess.run([*command, "--help"], cwd=ROOT, env=_environ(), capture_output=True, timeout=120)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        result = subprocess.run(
            [*command, "--help"], cwd=ROOT, env=_environ(), capture_output=True, timeout=120
        )
        times.append(time.perf_counter() - t0)
        assert result.returncode == 0, result.stderr
    assert statistics.median(times) <= BUDGET_S, f"{' '.join(command)} --help took {times} s"


@pytest.mark.parametrize("gymnasium_first", [False, True], ids=["package first", "gymnasium first"])
def test_importing_the_package_registers_the_ids(gymnasium_first):
    """``import lossagent_env`` stays light and still registers every id for ``gym.make``,
    whether Gymnasium is imported before or after it."""
    code = (
        "import json, sys\n"
        + ("import gymnasium\n" if gymnasium_first else "")
        + "import lossagent_env\n"
        "light = sorted(n for n in ('torch', 'gymnasium') if n in sys.modules)\n"
        "import gymnasium as gym\n"
        "env = gym.make('LossAgent/Tabular-v0', table='smoke', objective='psnr')\n"
        "env.reset(seed=env.unwrapped.seeds[0])\n"
        "print(json.dumps({'light': light, 'all': list(lossagent_env.ALL_ENV_IDS),\n"
        "                  'registered': sorted(i for i in gym.registry if i.startswith('LossAgent/'))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_environ(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if not gymnasium_first:  # nothing heavy until Gymnasium is imported
        assert outcome["light"] == []
    assert outcome["registered"] == sorted(outcome["all"])
    assert len(outcome["all"]) == 4
