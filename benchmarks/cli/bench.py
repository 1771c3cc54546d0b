"""``lossagent bench``: run a benchmark suite (agents x objectives x seeds)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.cli.common import EXIT_OK, UsageError, examples, parse_seeds
from benchmarks.suites import suite_names

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    bench = sub.add_parser(
        "bench",
        help="run a benchmark suite",
        description="Run every agent x objective x seed of a suite with equal budgets; "
        "write results.jsonl (one row per stage), summary.csv, report.md, plots and "
        "TensorBoard files under --out.",
        epilog=examples(
            "lossagent bench --suite smoke",
            "lossagent bench --suite quick --workers 2 --out runs/quick",
            "lossagent bench --resume --out runs/quick          # continue after a crash",
            "lossagent bench --suite smoke --llm openai:gpt-4o-mini --seeds 0,1,2",
            "lossagent bench --suite my_suite.toml --backend ray --ray-address auto",
            "lossagent bench --suite paper --data /data/DIV2K_train_HR --device cuda",
        ),
    )
    bench.add_argument(
        "--suite",
        help=f"a shipped suite name ({', '.join(suite_names())}) or the path of a TOML file "
        "[default: smoke, or the suite stored in --out with --resume]",
    )
    bench.add_argument("--out", help="output directory [default: runs/<suite>-<timestamp>]")
    bench.add_argument(
        "--workers", type=int,
        help="runs in parallel [default: one per core, and per 2 GiB of available memory, when "
        "the runs train on the CPU, else 1]; "
        "with several, runs on the embedded LLM run in the main process after the others",
    )
    bench.add_argument(
        "--threads", type=int,
        help="torch threads per run [default: cores // workers]; results are bit-identical "
        "across --workers settings at equal --threads",
    )
    bench.add_argument(
        "--backend", choices=("local", "ray"), default="local", help="where runs execute [default: local]"
    )
    bench.add_argument("--ray-address", help="Ray cluster address [default: a local cluster]")
    bench.add_argument("--resume", action="store_true", help="continue the benchmark in --out")
    bench.add_argument("--llm", help="model of the llm agent, e.g. openai:gpt-4o-mini")
    bench.add_argument("--seeds", help="override the seeds: '0,1,2' or '0-4'")
    bench.add_argument("--device", help="override the env device (cpu, cuda, auto)")
    bench.add_argument("--data", help="image folder used as the env dataset")
    bench.set_defaults(func=_cmd_bench)


def _existing_out(out: str) -> str:
    """Why an existing ``--out`` cannot start a benchmark, and what will work."""
    from benchmarks.execution.results import SUITE_FILE

    if not os.path.isdir(out):
        return f"--out {out!r} exists and is not a folder; --out is a new folder for the benchmark. Choose another --out."
    if not os.path.isfile(os.path.join(out, SUITE_FILE)):
        return (
            f"--out {out!r} already exists and is not the folder of a benchmark (it has no "
            f"{SUITE_FILE}). Choose another --out."
        )
    return (
        f"--out {out!r} already exists. Pass --resume to continue the benchmark in it, "
        "or choose another --out."
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.execution.executor import check_backend
    from benchmarks.execution.results import RESULTS, complete_runs, read_rows
    from benchmarks.reports.report import llm_time, llm_time_line, read_summary
    from benchmarks.runner import run_suite, stored_suite
    from benchmarks.suites.suite import load_suite, safe_name

    check_backend(args.backend, args.ray_address)
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out DIR: the benchmark directory to continue.")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise UsageError(
                f"--resume: {args.out!r} is a file, not the folder of a benchmark. Give that "
                "folder, or start a new benchmark with another --out."
            )
        if not Path(args.out).is_dir():
            raise UsageError(f"--resume: {args.out!r} does not exist. Start a benchmark without --resume.")
    if args.resume and args.suite is None:
        suite = stored_suite(args.out)  # it holds the overrides it was started with
        if any(v is not None for v in (args.llm, args.seeds, args.device, args.data)):
            raise UsageError(
                "--resume without --suite continues the stored suite as it was started; "
                "drop --llm/--seeds/--device/--data (or give --suite with all of them)."
            )
    else:
        suite = _apply_overrides(load_suite(args.suite or "smoke"), args)
    # the suite's name is free text: made safe before it becomes a folder name
    out = args.out or os.path.join("runs", f"{safe_name(suite.name)}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not args.resume and os.path.lexists(out):
        raise UsageError(_existing_out(out))
    from tqdm import tqdm

    objectives = len(suite.objectives) + len(suite.new_objectives)
    n_runs = len(suite.agents) * objectives * len(suite.seeds)
    tracks = f" ({len(suite.new_objectives)} of them the new-objective track's)" if suite.new_objectives else ""
    print(
        f"lossagent bench: suite {suite.name!r}: {len(suite.agents)} agents x "
        f"{objectives} objectives{tracks} x {len(suite.seeds)} seeds = {n_runs} runs of "
        f"{suite.max_stages} stages x {suite.stage_iters} iterations -> {out}",
        file=sys.stderr,
    )
    bar = tqdm(total=n_runs * suite.max_stages, unit="stage", desc="bench", file=sys.stderr)
    runs_done: set[str] = set()

    def on_row(row: Mapping[str, Any]) -> None:
        bar.update(1)
        if int(row["stage"]) == int(row["max_stages"]):
            runs_done.add(row["run"])
        bar.set_postfix_str(f"{row['agent']}/{row['objective']}/{row['seed']} J={row['objective_value']:.4g}")

    try:
        if args.resume:
            rows = read_rows(Path(out) / RESULTS)
            bar.update(sum(1 for r in rows if r["run"] in complete_runs(rows)))
        result = run_suite(
            suite,
            out,
            workers=args.workers,
            backend=args.backend,
            ray_address=args.ray_address,
            resume=args.resume,
            on_row=on_row,
            threads=args.threads,
        )
    finally:
        bar.close()
    summary = read_summary(Path(out) / "summary.csv")
    for row in summary:
        print(
            f"{row['objective']:>14}  {row['agent']:<12} final J {row['final_mean']:.4g} "
            f"[{row['final_ci_low']:.4g}, {row['final_ci_high']:.4g}]  best {row['best_mean']:.4g}  "
            f"wall {row['wall_s_mean']:.1f}s"
        )
    figures = llm_time(read_rows(Path(out) / RESULTS))
    if figures is not None:
        # its decisions run one at a time, so their share of this call's wall time is exact
        share = f"; {100 * figures.total_s / result.wall_s:.0f}% of this call's {result.wall_s:.1f} s" if result.wall_s > 0 and not args.resume else ""
        print(f"lossagent bench: {llm_time_line(figures)}{share}")
    print(
        f"lossagent bench: {len(result.executed)} runs executed, {len(result.skipped)} already "
        f"complete, in {result.wall_s:.1f} s. Report: {Path(out) / 'report.md'}; "
        f"TensorBoard: tensorboard --logdir {Path(out) / 'tb'}"
    )
    return EXIT_OK


def _apply_overrides(suite: Any, args: argparse.Namespace) -> Any:
    from benchmarks.suites.suite import TABULAR_ENV_ID

    if suite.env_id == TABULAR_ENV_ID and (args.device is not None or args.data is not None):
        raise UsageError("--device and --data do not apply to a table replay: it trains nothing.")
    env_kwargs: dict[str, Any] = {}
    if args.device is not None:
        env_kwargs["device"] = args.device
    if args.data is not None:
        if not Path(args.data).exists():
            raise UsageError(f"--data {args.data!r} does not exist. Allowed: an image folder.")
        env_kwargs["dataset"] = args.data
    elif suite.requires_data:
        raise UsageError(
            f"Suite {suite.name!r} needs an image folder: pass --data DIR (e.g. DIV2K_train_HR)."
        )
    agent_kwargs = {}
    if args.llm is not None:
        if not any(a.name == "llm" for a in suite.agents):
            raise UsageError(f"--llm {args.llm!r}: suite {suite.name!r} has no llm agent.")
        agent_kwargs["llm"] = {"model": args.llm}
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if env_kwargs or agent_kwargs or seeds is not None:
        suite = suite.replace(seeds=seeds, env_kwargs=env_kwargs, agent_kwargs=agent_kwargs)
    return suite
