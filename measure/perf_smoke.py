"""Time the README's main job, ``lossagent bench --suite smoke``, against its targets.

Runs the command as a user does (a fresh process, default settings) ``--repeats`` times.
With ``--baseline``, each repeat is followed by the same job with ``--workers 1`` (one
process, every core), so that the machine's drift hits both settings alike. Prints,
per setting, the median wall time of the job and the median latency of the embedded
model's decisions (read back from ``results.jsonl``), and the ratio of the medians::

    python -m measure.perf_smoke [--repeats 3] [--baseline] [--out DIR]

The targets (on 2 cores) are the constants below, as in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB_TARGET_S, JOB_GOAL_S = 90.0, 60.0
DECISION_TARGET_S, DECISION_GOAL_S = 1.0, 0.5
SETTINGS = {"default": [], "workers 1": ["--workers", "1"]}


def time_job(out: Path, extra: list[str]) -> tuple[float, float]:
    """Run the smoke job into ``out``; return its wall time and its median decision latency."""
    from benchmarks.execution.results import RESULTS, read_rows
    from benchmarks.reports.report import llm_time

    command = [sys.executable, "-m", "benchmarks", "bench", "--suite", "smoke", "--out", str(out), *extra]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    figures = llm_time(read_rows(out / RESULTS))
    return wall, (figures.median_s if figures is not None else float("nan"))


def verdict(value: float, target: float, goal: float) -> str:
    """``"goal met"``, ``"target met"`` or ``"target missed"`` for a time (lower is better)."""
    if value <= goal:
        return "goal met"
    return "target met" if value <= target else "target missed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m measure.perf_smoke",
        description="Median wall time and decision latency of `lossagent bench --suite smoke`.",
    )
    parser.add_argument("--repeats", type=int, default=3, help="jobs per setting; medians count [default: 3]")
    parser.add_argument("--baseline", action="store_true", help="alternate with --workers 1")
    parser.add_argument("--out", default=None, help="keep the benchmark folders here [default: a temporary folder]")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats} is not allowed. Allowed: an integer >= 1")
    base = Path(args.out or tempfile.mkdtemp(prefix="perf-smoke-"))
    settings = SETTINGS if args.baseline else {"default": []}
    walls: dict[str, list[float]] = {name: [] for name in settings}
    decisions: dict[str, list[float]] = {name: [] for name in settings}
    for repeat in range(args.repeats):
        for name, extra in settings.items():
            wall, decision = time_job(base / f"{name.replace(' ', '')}-{repeat}", extra)
            walls[name].append(wall)
            decisions[name].append(decision)
            print(f"{name}, job {repeat + 1}: {wall:.1f} s, median decision {decision:.2f} s", flush=True)
    for name in settings:
        job, decision = statistics.median(walls[name]), statistics.median(decisions[name])
        print(
            f"{name}: job median {job:.1f} s ({verdict(job, JOB_TARGET_S, JOB_GOAL_S)}: target "
            f"{JOB_TARGET_S:.0f} s, goal {JOB_GOAL_S:.0f} s); decision median {decision:.2f} s "
            f"({verdict(decision, DECISION_TARGET_S, DECISION_GOAL_S)}: target {DECISION_TARGET_S} s, "
            f"goal {DECISION_GOAL_S} s)"
        )
    if args.baseline:
        ratio = statistics.median(walls["workers 1"]) / statistics.median(walls["default"])
        print(f"workers 1 / default: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
