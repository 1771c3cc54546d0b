"""``lossagent run``: one episode of one agent, with a live progress bar."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.cli.common import EXIT_OK, UsageError, examples, parse_objective, parse_pairs

__all__ = ["register"]

LIVE_DEFAULTS: dict[str, Any] = {"stages": 5, "iters": 20, "seed": 0, "device": "cpu"}
"""What ``run`` uses on a live env for the flags left out (a table fixes its own)."""

def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    run = sub.add_parser(
        "run",
        help="one episode of one agent",
        description="Run one episode of one agent on one environment, with a live "
        "progress bar and a final summary line; with --out, also results.jsonl and "
        "TensorBoard files.",
        epilog=examples(
            "lossagent run --agent ucb --objective psnr --stages 5 --iters 20",
            "lossagent run --env LossAgent/Denoising-v0 --agent llm --llm openai:gpt-4o-mini",
            "lossagent run --agent random --objective psnr:1,ssim:10 --out runs/one",
            "lossagent run --agent fixed --set patch_size=48 --set 'losses=[\"l1\",\"ssim\"]'",
            "lossagent run --env LossAgent/Tabular-v0 --set table=smoke --agent ucb --stages 4",
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
    run.add_argument(
        "--stages", type=int,
        help=f"stages in the episode [default: {LIVE_DEFAULTS['stages']}; on a table, its depth]",
    )
    run.add_argument(
        "--iters", type=int,
        help=f"training iterations per stage [default: {LIVE_DEFAULTS['iters']}; a table fixes them]",
    )
    run.add_argument(
        "--seed", type=int,
        help=f"episode seed [default: {LIVE_DEFAULTS['seed']}; on a table, its first seed]",
    )
    run.add_argument("--llm", help="model of the llm agent, e.g. openai:gpt-4o-mini")
    run.add_argument("--device", help=f"cpu, cuda or auto [default: {LIVE_DEFAULTS['device']}; a table fixes it]")
    run.add_argument("--out", help="write results.jsonl and TensorBoard files here")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help='another EnvConfig field (VALUE is TOML: 48, 1e-3, true, "edsr", [...])',
    )
    run.add_argument(
        "--agent-arg", action="append", default=[], metavar="KEY=VALUE",
        help="an agent keyword argument (VALUE is TOML)",
    )
    run.set_defaults(func=_cmd_run)


def _one_run_suite(args: argparse.Namespace, env_id: str, objective: Any, env_kwargs: dict[str, Any],
                   agent_kwargs: dict[str, Any]) -> Any:
    """The run as a suite of one agent, one objective and one seed, checked as every
    suite is (names, then values); a refusal names the flag it comes from."""
    from benchmarks.suites.suite import Suite, SuiteError, validate_names, validate_values

    data = {
        "name": "run",
        "env": {"id": env_id, "kwargs": env_kwargs},
        "budget": {"max_stages": args.stages, "stage_iters": args.iters},
        "objectives": [objective],
        "agents": [{"name": args.agent, "kwargs": agent_kwargs}],
        "seeds": [args.seed],
    }
    try:
        suite = Suite.from_dict(data, source="lossagent run")
        validate_names(suite)
        validate_values(suite)
    except SuiteError as e:
        raise UsageError(f"{_flag(args, e.key)}: {e.message}") from None
    return suite


def _flag(args: argparse.Namespace, key: str | None) -> str:
    """The flag (with its value) that set the suite key ``key``, e.g. ``--stages 0``."""
    flags = {
        "env.id": f"--env {args.env}",
        "agents[0].name": f"--agent {args.agent}",
        "agents[0].kwargs": "--agent-arg",
        "objectives[0]": f"--objective {args.objective}",
        "budget.max_stages": f"--stages {args.stages}",
        "budget.stage_iters": f"--iters {args.iters}",
        "seeds": f"--seed {args.seed}",
    }
    if args.device is not None:  # else a table replay's --set device=...
        flags["env.kwargs.device"] = f"--device {args.device}"
    if key in flags:
        return flags[key]
    setting = (key or "").removeprefix("env.kwargs").lstrip(".").split(".")[0].split("[")[0]
    return f"--set {setting}=..." if setting else "--set"


def _table_defaults(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> None:
    """Fill the flags left out with the table's own settings: its depth, its first seed
    and its iterations per stage; a ``--device`` equal to the table's changes nothing.

    What the table fixes or lacks is refused by the suite's check of the one-run suite,
    which also says why a table cannot be read (the flags then stay at
    :data:`LIVE_DEFAULTS`, never used)."""
    from lossagent_env.tabular.replay import live_config, load_table

    name = env_kwargs.get("table")
    try:
        if name is None:
            raise ValueError("no table")
        table = load_table(name)
    except (TypeError, ValueError, OSError):
        own = {flag: LIVE_DEFAULTS[flag] for flag in ("stages", "iters", "seed")}
    else:
        built = live_config(table)
        if args.device is not None and args.device != built.device:
            env_kwargs["device"] = args.device  # refused by the suite's check, with the table's device
        own = {"stages": table.stages, "iters": built.stage_iters, "seed": table.seeds[0]}
    for flag, default in own.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)


def _live_defaults(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> None:
    """Fill the flags left out with :data:`LIVE_DEFAULTS`; check that the device exists."""
    from lossagent_env.device import resolve_device

    for flag, default in LIVE_DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    env_kwargs["device"] = args.device
    try:
        resolve_device(args.device, "--device")
    except ValueError as e:
        raise UsageError(str(e)) from e


def _cmd_run(args: argparse.Namespace) -> int:
    from agents import make_agent
    from benchmarks.execution.results import RESULTS, TENSORBOARD
    from benchmarks.execution.runs import expand, run_one
    from benchmarks.suites.suite import TABULAR_ENV_ID

    env_id = args.env if "/" in args.env else f"LossAgent/{args.env}"
    objective = parse_objective(args.objective)
    for flag, value, low in (("--stages", args.stages, 1), ("--iters", args.iters, 1), ("--seed", args.seed, 0)):
        if value is not None and value < low:
            raise UsageError(f"{flag} {value!r} is not allowed. Allowed: an integer >= {low}")
    env_kwargs = parse_pairs(args.set, "--set")
    agent_kwargs = parse_pairs(args.agent_arg, "--agent-arg")
    if args.llm is not None:
        if args.agent != "llm":
            raise UsageError(f"--llm {args.llm!r} applies to --agent llm only (got --agent {args.agent!r}).")
        agent_kwargs["model"] = args.llm
    for key in ("objective", "max_stages", "stage_iters"):
        if key in env_kwargs:
            raise UsageError(f"--set {key}=...: use --objective, --stages or --iters instead.")
    if env_id == TABULAR_ENV_ID:  # a table replay: its own settings, no training
        _table_defaults(args, env_kwargs)
    else:
        _live_defaults(args, env_kwargs)
    suite = _one_run_suite(args, env_id, objective, env_kwargs, agent_kwargs)
    try:
        make_agent(args.agent, **agent_kwargs)  # builds no model yet: checks the arguments
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from e
    (spec,) = expand(suite)  # the one run, as a bench would run it
    label = spec.objective
    from tqdm import tqdm

    bar = tqdm(total=args.stages, unit="stage", desc=f"{args.agent}/{label}", file=sys.stderr)

    def on_row(row: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix_str(f"J={row['objective_value']:.4g} r={row['reward']:+.3g}")

    t0 = time.perf_counter()
    try:
        rows = run_one(spec, args.out, on_row)
    finally:
        bar.close()
    values = [r["objective_value"] for r in rows]
    best = max(range(len(values)), key=values.__getitem__)
    ret = sum(r["reward"] for r in rows)
    diverged = sum(bool(r["diverged"]) for r in rows)
    print(
        f"{args.agent} on {env_id} ({label}), seed {args.seed}: final J {values[-1]:.4g}, "
        f"best {values[best]:.4g} at stage {rows[best]['stage']}, return {ret:+.4g}, "
        f"{diverged} diverged, {time.perf_counter() - t0:.1f} s"
        + (f"; wrote {Path(args.out) / RESULTS} and {Path(args.out) / TENSORBOARD}" if args.out else "")
    )
    return EXIT_OK
