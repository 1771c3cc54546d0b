"""The ``lossagent`` command line.

Subcommands::

    lossagent bench    run a benchmark suite (agents x objectives x seeds)
    lossagent run      one episode of one agent, with a live progress bar
    lossagent report   rebuild summary.csv, report.md and plots of a benchmark
    lossagent losses   the loss repository: names, scales, descriptions, usable offline
    lossagent metrics  the objective metrics: direction, range, usable offline
    lossagent assets   install weight files from local copies (no downloads)

Exit codes: 0 success; 1 a run or benchmark failed (message on stderr); 2 bad input
(unknown names get a "Did you mean" hint; no traceback). ``-v`` shows progress logs,
``--debug`` also shows tracebacks of expected errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomllib

__all__ = ["UsageError", "build_parser", "main"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions; keeps multi-line text (the examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``lossagent`` argument parser (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog="lossagent",
        description="LossAgent Gym: agents choose loss weights for image restoration.",
        formatter_class=_Formatter,
        epilog=textwrap.dedent(
            """\
            examples:
              lossagent bench --suite smoke
              lossagent run --agent ucb --objective psnr --stages 5 --iters 20
              lossagent losses
            """
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show progress logs")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of all errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench = sub.add_parser(
        "bench",
        help="run a benchmark suite",
        description="Run every agent x objective x seed of a suite with equal budgets; "
        "write results.jsonl (one row per stage), summary.csv, report.md, plots and "
        "TensorBoard files under --out.",
        formatter_class=_Formatter,
        epilog=textwrap.dedent(
            """\
            examples:
              lossagent bench --suite smoke
              lossagent bench --suite quick --workers 2 --out runs/quick
              lossagent bench --resume --out runs/quick          # continue after a crash
              lossagent bench --suite smoke --llm openai:gpt-4o-mini --seeds 0,1,2
              lossagent bench --suite my_suite.toml --backend ray --ray-address auto
              lossagent bench --suite paper --data /data/DIV2K_train_HR --device cuda
            """
        ),
    )
    bench.add_argument(
        "--suite",
        default=None,
        help="a shipped suite name (smoke, quick, paper) or the path of a TOML file "
        "[default: smoke, or the suite stored in --out with --resume]",
    )
    bench.add_argument("--out", default=None, help="output directory [default: runs/<suite>-<timestamp>]")
    bench.add_argument("--workers", type=int, default=1, help="runs in parallel [default: 1]")
    bench.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run [default: cores // workers]; results are bit-identical "
        "across --workers settings at equal --threads",
    )
    bench.add_argument(
        "--backend", choices=("local", "ray"), default="local", help="where runs execute [default: local]"
    )
    bench.add_argument("--ray-address", default=None, help="Ray cluster address [default: a local cluster]")
    bench.add_argument("--resume", action="store_true", help="continue the benchmark in --out")
    bench.add_argument("--llm", default=None, help="model of the llm agent, e.g. openai:gpt-4o-mini")
    bench.add_argument("--seeds", default=None, help="override the seeds: '0,1,2' or '0-4'")
    bench.add_argument("--device", default=None, help="override the env device (cpu, cuda, auto)")
    bench.add_argument("--data", default=None, help="image folder used as the env dataset")
    bench.set_defaults(func=_cmd_bench)

    run = sub.add_parser(
        "run",
        help="one episode of one agent",
        description="Run one episode of one agent on one environment, with a live "
        "progress bar and a final summary line; with --out, also results.jsonl and "
        "TensorBoard files.",
        formatter_class=_Formatter,
        epilog=textwrap.dedent(
            """\
            examples:
              lossagent run --agent ucb --objective psnr --stages 5 --iters 20
              lossagent run --env LossAgent/Denoising-v0 --agent llm --llm openai:gpt-4o-mini
              lossagent run --agent random --objective psnr:1,ssim:10 --out runs/one
              lossagent run --agent fixed --set patch_size=48 --set 'losses=["l1","ssim"]'
            """
        ),
    )
    run.add_argument(
        "--env", default="LossAgent/SuperResolution-v0", help="environment id [default: %(default)s]"
    )
    run.add_argument("--agent", default="ucb", help="agent name, see agents.make_agent [default: ucb]")
    run.add_argument(
        "--objective",
        default="psnr",
        help="a metric name, or metric:weight pairs separated by commas, e.g. psnr:1,ssim:10 [default: psnr]",
    )
    run.add_argument("--stages", type=int, default=5, help="stages in the episode [default: 5]")
    run.add_argument("--iters", type=int, default=20, help="training iterations per stage [default: 20]")
    run.add_argument("--seed", type=int, default=0, help="episode seed [default: 0]")
    run.add_argument("--llm", default=None, help="model of the llm agent, e.g. openai:gpt-4o-mini")
    run.add_argument("--device", default="cpu", help="cpu, cuda or auto [default: cpu]")
    run.add_argument("--out", default=None, help="write results.jsonl and TensorBoard files here")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='another EnvConfig field (VALUE is TOML: 48, 1e-3, true, "edsr", [...])',
    )
    run.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an agent keyword argument (VALUE is TOML)",
    )
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser(
        "report",
        help="rebuild the report of a benchmark",
        description="Rebuild summary.csv, report.md and the plots from results.jsonl.",
        formatter_class=_Formatter,
        epilog="example:\n  lossagent report --out runs/smoke-20250101-120000\n",
    )
    report.add_argument("--out", required=True, help="the benchmark's output directory")
    report.set_defaults(func=_cmd_report)

    losses = sub.add_parser(
        "losses",
        help="list the loss repository",
        description="Every loss of the repository: scale, whether it needs weight files "
        "and whether it works offline now, and its description.",
        formatter_class=_Formatter,
        epilog="examples:\n  lossagent losses\n  lossagent losses --json\n",
    )
    losses.add_argument("--json", action="store_true", help="print JSON instead of text")
    losses.set_defaults(func=_cmd_losses)

    metrics = sub.add_parser(
        "metrics",
        help="list the objective metrics",
        description="Every metric usable in an objective: direction, range, whether it "
        "needs a reference image and whether it works offline now.",
        formatter_class=_Formatter,
        epilog="examples:\n  lossagent metrics\n  lossagent metrics --usable\n",
    )
    metrics.add_argument("--usable", action="store_true", help="only metrics usable offline now")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of text")
    metrics.set_defaults(func=_cmd_metrics)

    from lossagent_env.assets import register_cli

    register_cli(sub)
    for name, action in sub.choices.items():
        if not action.epilog:  # every subcommand's --help shows an example
            action.epilog = f"example:\n  lossagent {name} --help\n"
            action.formatter_class = _Formatter
    return parser


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossagent``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from benchmarks.runner import BenchmarkError, RunsFailedError
    from benchmarks.suite import SuiteError
    from lossagent_env.errors import MissingWeightsError

    try:
        return int(args.func(args) or EXIT_OK)
    except (UsageError, SuiteError, FileNotFoundError, FileExistsError) as e:
        return _fail(args, e, EXIT_USAGE)
    except KeyError as e:  # an unknown name; the message has the "Did you mean" hint
        return _fail(args, e, EXIT_USAGE)
    except RunsFailedError as e:
        return _fail(args, e, EXIT_FAILED)
    except BenchmarkError as e:
        return _fail(args, e, EXIT_USAGE)
    except MissingWeightsError as e:
        return _fail(args, e, EXIT_FAILED)
    except KeyboardInterrupt:
        print("lossagent: interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, error: BaseException, code: int) -> int:
    if args.debug:
        logger.exception("lossagent %s failed", args.command)
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    print(f"lossagent {args.command}: error: {message}", file=sys.stderr)
    return code


# --------------------------------------------------------------------------- helpers


def _parse_value(text: str) -> Any:
    """A TOML value (``48``, ``1e-3``, ``true``, ``"x"``, ``[...]``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _parse_pairs(pairs: Sequence[str], what: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {pair!r} is not KEY=VALUE. Allowed: e.g. {what} patch_size=48")
        out[key.strip()] = _parse_value(value.strip())
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix -> sorted unique seeds.

    Raises:
        UsageError: Not a seed list.
    """
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                low, high = part.split("-", 1)
                seeds.extend(range(int(low), int(high) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UsageError(f"--seeds {text!r} is not a seed list. Allowed: e.g. '0,1,2' or '0-4'") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError(f"--seeds {text!r} is not a seed list. Allowed: integers >= 0, e.g. '0,1,2'")
    return sorted(set(seeds))


def parse_objective(text: str) -> str | dict[str, float]:
    """``"psnr"`` -> ``"psnr"``; ``"psnr:1,ssim:10"`` -> ``{"psnr": 1.0, "ssim": 10.0}``.

    Raises:
        UsageError: A weight is not a finite non-zero number.
    """
    if ":" not in text and "," not in text:
        return text.strip()
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            value = math.nan
        if not name.strip() or not math.isfinite(value) or value == 0:
            raise UsageError(
                f"--objective {text!r}: {part!r} is not METRIC:WEIGHT. Allowed: e.g. psnr:1,ssim:10"
            )
        out[name.strip()] = value
    return out


def _check_env_id(env_id: str) -> str:
    import gymnasium as gym

    import lossagent_env
    from lossagent_env.registry import unknown_name_message

    if env_id in gym.registry:
        return env_id
    if f"LossAgent/{env_id}" in gym.registry:
        return f"LossAgent/{env_id}"
    raise KeyError(unknown_name_message("env id", env_id, lossagent_env.ENV_IDS))


def _check_metrics(objective: str | dict[str, float]) -> None:
    from lossagent_env.metrics import metric_names
    from lossagent_env.registry import unknown_name_message

    known = metric_names()
    for name in [objective] if isinstance(objective, str) else objective:
        if name not in known:
            raise KeyError(unknown_name_message("metric", name, known))


def _check_agent(name: str) -> None:
    from benchmarks.suite import agent_names
    from lossagent_env.registry import unknown_name_message

    known = agent_names()
    if name not in known:
        raise KeyError(unknown_name_message("agent", name, known))


def _check_losses(losses: Any) -> None:
    from lossagent_env.losses import LOSSES
    from lossagent_env.registry import unknown_name_message

    if losses is None:
        return
    if isinstance(losses, str) or not isinstance(losses, (list, tuple)):
        raise UsageError(f'losses={losses!r} is not a list. Allowed: e.g. --set \'losses=["l1", "ssim"]\'')
    for spec in losses:
        name = spec.get("type") if isinstance(spec, dict) else spec
        if name not in LOSSES:
            raise KeyError(unknown_name_message("loss", name, LOSSES.names()))


# --------------------------------------------------------------------------- bench


def _cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.runner import run_suite, stored_suite
    from benchmarks.suite import load_suite

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not allowed. Allowed: an integer >= 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads} is not allowed. Allowed: an integer >= 1")
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out DIR: the benchmark directory to continue.")
        if not Path(args.out).is_dir():
            raise UsageError(f"--resume: {args.out!r} does not exist. Start a benchmark without --resume.")
        suite = stored_suite(args.out) if args.suite is None else load_suite(args.suite)
        if args.suite is None:
            # the stored suite already holds the overrides it was started with
            overrides_given = any(v is not None for v in (args.llm, args.seeds, args.device, args.data))
            if overrides_given:
                raise UsageError(
                    "--resume without --suite continues the stored suite as it was started; "
                    "drop --llm/--seeds/--device/--data (or give --suite with all of them)."
                )
    else:
        suite = load_suite(args.suite or "smoke")
    if args.suite is not None or not args.resume:
        suite = _apply_overrides(suite, args)
    out = args.out or os.path.join("runs", f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not args.resume and os.path.exists(out):
        raise UsageError(
            f"--out {out!r} already exists. Pass --resume to continue the benchmark in it, "
            "or choose another --out."
        )
    from tqdm import tqdm

    n_runs = len(suite.agents) * len(suite.objectives) * len(suite.seeds)
    print(
        f"lossagent bench: suite {suite.name!r}: {len(suite.agents)} agents x "
        f"{len(suite.objectives)} objectives x {len(suite.seeds)} seeds = {n_runs} runs of "
        f"{suite.max_stages} stages x {suite.stage_iters} iterations -> {out}",
        file=sys.stderr,
    )
    bar = tqdm(total=n_runs * suite.max_stages, unit="stage", desc="bench", file=sys.stderr)
    runs_done: set[str] = set()

    def on_row(row: dict[str, Any]) -> None:
        bar.update(1)
        if int(row["stage"]) == int(row["max_stages"]):
            runs_done.add(row["run"])
        bar.set_postfix_str(f"{row['agent']}/{row['objective']}/{row['seed']} J={row['objective_value']:.4g}")

    try:
        if args.resume:
            from benchmarks.runner import RESULTS, complete_runs, read_rows

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
    from benchmarks.report import read_summary

    summary = read_summary(Path(out) / "summary.csv")
    for row in summary:
        print(
            f"{row['objective']:>14}  {row['agent']:<12} final J {row['final_mean']:.4g} "
            f"[{row['final_ci_low']:.4g}, {row['final_ci_high']:.4g}]  best {row['best_mean']:.4g}  "
            f"wall {row['wall_s_mean']:.1f}s"
        )
    print(
        f"lossagent bench: {len(result.executed)} runs executed, {len(result.skipped)} already "
        f"complete, in {result.wall_s:.1f} s. Report: {Path(out) / 'report.md'}; "
        f"TensorBoard: tensorboard --logdir {Path(out) / 'tb'}"
    )
    return EXIT_OK


def _apply_overrides(suite: Any, args: argparse.Namespace) -> Any:
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


# --------------------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace) -> int:
    from benchmarks.runner import RunSpec, execute_run, run_name
    from benchmarks.suite import objective_label
    from lossagent_env.config import EnvConfig

    env_id = _check_env_id(args.env)
    _check_agent(args.agent)
    objective = parse_objective(args.objective)
    _check_metrics(objective)
    for flag, value in (("--stages", args.stages), ("--iters", args.iters), ("--seed", args.seed + 1)):
        if value < 1:
            raise UsageError(f"{flag} {value!r} is not allowed. Allowed: an integer >= 1 (seed >= 0)")
    env_kwargs = _parse_pairs(args.set, "--set")
    agent_kwargs = _parse_pairs(args.agent_arg, "--agent-arg")
    fields = {f.name for f in dataclasses.fields(EnvConfig)} - {"task"}
    for key in env_kwargs:
        if key in ("objective", "max_stages", "stage_iters"):
            raise UsageError(f"--set {key}=...: use --objective, --stages or --iters instead.")
        if key not in fields:
            from lossagent_env.registry import unknown_name_message

            raise KeyError(unknown_name_message("EnvConfig field", key, fields))
    _check_losses(env_kwargs.get("losses"))
    env_kwargs["device"] = args.device
    if args.llm is not None:
        if args.agent != "llm":
            raise UsageError(f"--llm {args.llm!r} applies to --agent llm only (got --agent {args.agent!r}).")
        agent_kwargs["model"] = args.llm
    import gymnasium as gym

    task = gym.registry[env_id].kwargs.get("task", "sr")
    try:  # value checks of EnvConfig, before anything heavy is built
        EnvConfig(
            task=task, objective=objective, max_stages=args.stages, stage_iters=args.iters, **env_kwargs
        )
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from e
    label = objective_label(objective)
    spec = RunSpec(
        name=run_name(env_id, args.agent, label, args.seed),
        suite="run",
        env_id=env_id,
        env_kwargs=env_kwargs,
        agent=args.agent,
        agent_name=args.agent,
        agent_kwargs=agent_kwargs,
        objective=label,
        objective_spec=objective,
        seed=args.seed,
        max_stages=args.stages,
        stage_iters=args.iters,
        image_every=max(1, math.ceil(args.stages / 4)),
    )
    writer = None
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"--out {args.out!r} exists and is not empty. Choose another --out.")
        out.mkdir(parents=True, exist_ok=True)
        from benchmarks.runner import RESULTS, _ResultsWriter

        writer = _ResultsWriter(out / RESULTS)
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=args.stages, unit="stage", desc=f"{args.agent}/{label}", file=sys.stderr)

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        if writer is not None:
            writer.write(row)
        bar.update(1)
        bar.set_postfix_str(f"J={row['objective_value']:.4g} r={row['reward']:+.3g}")

    t0 = time.perf_counter()
    try:
        execute_run(spec, args.out, emit)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    values = [r["objective_value"] for r in rows]
    best = max(range(len(values)), key=values.__getitem__)
    ret = sum(r["reward"] for r in rows)
    diverged = sum(bool(r["diverged"]) for r in rows)
    print(
        f"{args.agent} on {env_id} ({label}), seed {args.seed}: final J {values[-1]:.4g}, "
        f"best {values[best]:.4g} at stage {rows[best]['stage']}, return {ret:+.4g}, "
        f"{diverged} diverged, {time.perf_counter() - t0:.1f} s"
        + (f"; wrote {Path(args.out) / 'results.jsonl'} and {Path(args.out) / 'tb'}" if args.out else "")
    )
    return EXIT_OK


# --------------------------------------------------------------------------- report


def _cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.report import build_report

    paths = build_report(args.out)
    print(f"lossagent report: wrote {paths['summary']}, {paths['report']} and {len(paths) - 2} plots")
    return EXIT_OK


# --------------------------------------------------------------------------- catalogues


def _wrap(text: str, indent: int = 4) -> str:
    return textwrap.fill(
        " ".join(str(text).split()), width=88, initial_indent=" " * indent, subsequent_indent=" " * indent
    )


def _cmd_losses(args: argparse.Namespace) -> int:
    from lossagent_env.losses import loss_catalogue

    catalogue = loss_catalogue()
    if args.json:
        print(json.dumps(catalogue, indent=2, default=str))
        return EXIT_OK
    for entry in catalogue:
        status = "usable now" if entry["usable_now"] else "needs weight files (see `lossagent assets`)"
        scale = "measured when built" if entry["scale"] is None else f"{entry['scale']:g}"
        print(f"{entry['name']}  (scale {scale}; {status})")
        print(_wrap(entry["description"]))
    return EXIT_OK


def _cmd_metrics(args: argparse.Namespace) -> int:
    from lossagent_env.metrics import metric_info, metric_names, usable_metrics

    usable = set(usable_metrics())
    names = [n for n in metric_names() if n in usable or not args.usable]
    infos = {name: _info_dict(metric_info(name)) for name in names}
    for name in names:
        infos[name]["usable_now"] = name in usable
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return EXIT_OK
    for name, info in infos.items():
        direction = "lower is better" if info.get("lower_better") else "higher is better"
        status = "usable now" if info["usable_now"] else "needs weight files (see `lossagent assets`)"
        extra = [direction, f"observation range [{info['low']:g}, {info['high']:g}]"]
        extra.append("full-reference" if info["full_reference"] else "no-reference")
        print(f"{name}  ({'; '.join(extra)}; {status})")
        if info.get("description"):
            print(_wrap(info["description"]))
    return EXIT_OK


def _info_dict(info: Any) -> dict[str, Any]:
    if isinstance(info, dict):
        return dict(info)
    if dataclasses.is_dataclass(info):
        return dataclasses.asdict(info)
    if hasattr(info, "model_dump"):
        return info.model_dump()
    return dict(vars(info))


if __name__ == "__main__":
    sys.exit(main())
