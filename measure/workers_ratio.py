"""The speed-up of ``lossagent bench --workers 2`` over ``--workers 1`` on a small suite.

Runs a suite of 4 runs (by default the smoke suite's budget with the agents ``fixed`` and
``random``, objective ``psnr`` and seeds 0 and 1) with 1 and with 2 worker processes,
alternating the two settings over several repeats, and prints the median wall times, their
ratio and how closely the results agree. It is a measurement, not a test::

    python -m measure.workers_ratio
    python -m measure.workers_ratio --suite quick --agents ucb,dwa --objectives psnr --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = (
    "import json, sys\n"
    "from benchmarks.runner import run_suite\n"
    "from benchmarks.suites.suite import Suite\n"
    "suite = Suite.from_dict(json.load(open(sys.argv[1])))\n"
    "run_suite(suite, sys.argv[2], workers=int(sys.argv[3]), report=False)\n"
)


def workers_ratio(
    suite_name: str = "smoke",
    agents: list[str] | None = None,
    objectives: list[str] | None = None,
    seeds: list[int] | None = None,
    workers: int = 2,
    repeats: int = 3,
    stage_iters: int | None = None,
    out: Path | None = None,
) -> dict[str, float]:
    """Run a suite with 1 and with ``workers`` processes, alternating, ``repeats`` times.

    Each benchmark runs in a fresh Python process, as ``lossagent bench`` does, so
    imports and worker start-up are counted. Each setting reports the median of its
    repeats (alternation spreads the machine's drifts over both). With the default thread counts (``cores``
    threads for 1 worker, ``cores // workers`` for more) the float32 reduction order
    differs, so results agree only approximately (the difference grows with training).

    Returns:
        ``{"runs", "serial_s", "parallel_s", "ratio", "max_rel_diff", "same_actions"}``.
    """
    from benchmarks.execution.results import read_rows
    from benchmarks.execution.runs import expand
    from benchmarks.suites.suite import load_suite

    suite = load_suite(suite_name)
    data = suite.to_dict()
    if agents:
        data["agents"] = [a for a in data["agents"] if a["name"] in agents]
    if objectives:
        data["objectives"] = [o for o in data["objectives"] if o in objectives]
    if seeds is not None:
        data["seeds"] = seeds
    if stage_iters is not None:
        data["budget"]["stage_iters"] = stage_iters
    suite = type(suite).from_dict(data, source=str(suite.path))
    n = len(expand(suite))
    base = Path(out or tempfile.mkdtemp(prefix="workers-ratio-"))
    suite_file = base / "suite.json"
    suite_file.write_text(json.dumps(suite.to_dict()))
    times: dict[int, list[float]] = {1: [], workers: []}
    for repeat in range(repeats):
        for count in (1, workers):
            # a fresh process per benchmark, as `lossagent bench` is: imports and
            # worker start-up count
            folder = base / f"workers{count}-{repeat}"
            command = [sys.executable, "-c", _CHILD, str(suite_file), str(folder), str(count)]
            t0 = time.perf_counter()
            subprocess.run(command, check=True)
            times[count].append(time.perf_counter() - t0)
    rows = {
        count: {(r["run"], r["stage"]): r for r in read_rows(base / f"workers{count}-0" / "results.jsonl")}
        for count in (1, workers)
    }
    diffs = [
        abs(row["objective_value"] - rows[workers][key]["objective_value"]) / max(1e-12, abs(row["objective_value"]))
        for key, row in rows[1].items()
    ]
    same_actions = all(row["action"] == rows[workers][key]["action"] for key, row in rows[1].items())
    return {
        "runs": n,
        "serial_s": statistics.median(times[1]),
        "parallel_s": statistics.median(times[workers]),
        "ratio": statistics.median(times[1]) / statistics.median(times[workers]),
        "max_rel_diff": max(diffs),
        "same_actions": float(same_actions),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m measure.workers_ratio",
        description="Wall time of a 4-run suite with --workers 1 vs --workers 2.",
        epilog="example:\n  python -m measure.workers_ratio --agents fixed,random --seeds 0,1\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--agents", default="fixed,random")
    parser.add_argument("--objectives", default="psnr")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats; medians count")
    parser.add_argument("--stage-iters", type=int, default=None, help="override the suite's stage_iters")
    parser.add_argument("--out", default=None, help="keep the two benchmark directories here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = workers_ratio(
        args.suite, agents=args.agents.split(","), objectives=args.objectives.split(","),
        seeds=[int(s) for s in args.seeds.split(",")], workers=args.workers, repeats=args.repeats,
        stage_iters=args.stage_iters, out=Path(args.out) if args.out else None,
    )
    print(
        f"{result['runs']:.0f} runs: workers=1 {result['serial_s']:.1f} s, "
        f"workers={args.workers} {result['parallel_s']:.1f} s, ratio {result['ratio']:.2f}x; "
        f"same actions: {'yes' if result['same_actions'] else 'no'}, objective values agree to "
        f"{result['max_rel_diff']:.1e} relative"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
