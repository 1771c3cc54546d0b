"""``lossagent report``: rebuild summary.csv, report.md and the plots of a benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.cli.common import EXIT_OK, UsageError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    report = sub.add_parser(
        "report",
        help="rebuild the report of a benchmark",
        description="Rebuild summary.csv, report.md and the plots from results.jsonl.",
        epilog="example:\n  lossagent report --out runs/smoke-20250101-120000\n",
    )
    report.add_argument("--out", required=True, help="the benchmark's output directory")
    report.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.execution.output import OutputLock
    from benchmarks.reports.report import build_report

    if not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r} is not a folder of a benchmark.")
    with OutputLock(args.out, "lossagent report"):  # not while a benchmark writes there
        paths = build_report(args.out)
    plots = sum(path.suffix == ".png" for path in paths.values())
    print(f"lossagent report: wrote {paths['summary']}, {paths['report']} and {plots} plots")
    return EXIT_OK
