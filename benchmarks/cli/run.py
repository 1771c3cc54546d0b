"""``lossagent run``: one episode of one agent, with a live progress bar."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.cli.common import EXIT_OK, Formatter, UsageError, parse_objective, parse_pairs

__all__ = ["register"]

LIVE_DEFAULTS: dict[str, Any] = {"stages": 5, "iters": 20, "seed": 0, "device": "cpu"}
"""What ``run`` uses on a live env for the flags left out (a table fixes its own)."""

TABLE_ARGUMENTS = ("table", "seeds")
"""The ``--set`` keys of a table replay; every other env setting is the table's."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    run = sub.add_parser(
        "run",
        help="one episode of one agent",
        description="Run one episode of one agent on one environment, with a live "
        "progress bar and a final summary line; with --out, also results.jsonl and "
        "TensorBoard files.",
        formatter_class=Formatter,
        epilog=textwrap.dedent(
            """\
            examples:
              lossagent run --agent ucb --objective psnr --stages 5 --iters 20
              lossagent run --env LossAgent/Denoising-v0 --agent llm --llm openai:gpt-4o-mini
              lossagent run --agent random --objective psnr:1,ssim:10 --out runs/one
              lossagent run --agent fixed --set patch_size=48 --set 'losses=["l1","ssim"]'
              lossagent run --env LossAgent/Tabular-v0 --set table=smoke --agent ucb --stages 4
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
    run.add_argument(
        "--stages",
        type=int,
        default=None,
        help=f"stages in the episode [default: {LIVE_DEFAULTS['stages']}; on a table, its depth]",
    )
    run.add_argument(
        "--iters",
        type=int,
        default=None,
        help=f"training iterations per stage [default: {LIVE_DEFAULTS['iters']}; a table fixes them]",
    )
    run.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"episode seed [default: {LIVE_DEFAULTS['seed']}; on a table, its first seed]",
    )
    run.add_argument("--llm", default=None, help="model of the llm agent, e.g. openai:gpt-4o-mini")
    run.add_argument(
        "--device",
        default=None,
        help=f"cpu, cuda or auto [default: {LIVE_DEFAULTS['device']}; a table fixes it]",
    )
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



def _check_env_id(env_id: str) -> str:
    import gymnasium as gym

    import lossagent_env
    from lossagent_env.registry import unknown_name_message

    if env_id in gym.registry:
        return env_id
    if f"LossAgent/{env_id}" in gym.registry:
        return f"LossAgent/{env_id}"
    raise KeyError(unknown_name_message("env id", env_id, lossagent_env.ALL_ENV_IDS))


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


def _load_run_table(env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """The table that ``--set table=...`` names."""
    from lossagent_env.tabular.replay import load_table, shipped_tables

    if "table" not in env_kwargs:
        raise UsageError(f"--env {env_id} needs --set table=NAME_OR_PATH. Shipped tables: {shipped_tables()}.")
    try:
        return load_table(env_kwargs["table"])
    except (TypeError, ValueError, OSError) as e:
        raise UsageError(str(e)) from e


def _refuse_what_the_table_fixes(args: argparse.Namespace, env_kwargs: dict[str, Any], built: dict[str, Any]) -> None:
    """An env setting, ``--iters`` or ``--device`` other than the table's is refused:
    a replay trains nothing, so it could only be ignored."""
    from lossagent_env.config import EnvConfig
    from lossagent_env.registry import unknown_name_message

    fields = {f.name for f in dataclasses.fields(EnvConfig)}
    for key in env_kwargs:
        if key in fields:
            raise UsageError(
                f"--set {key}=...: the table fixes {key} at {built.get(key)!r} (it was built so). "
                f"Allowed on a table replay: --set {', --set '.join(f'{k}=...' for k in TABLE_ARGUMENTS)}"
            )
        if key not in TABLE_ARGUMENTS:
            raise KeyError(unknown_name_message("argument of the tabular env", key, TABLE_ARGUMENTS))
    for flag, given, key in (("--iters", args.iters, "stage_iters"), ("--device", args.device, "device")):
        if given is not None and given != built.get(key):
            raise UsageError(
                f"{flag} {given}: the table fixes it at {built.get(key)!r} (its {key}; a replay "
                f"trains nothing). Leave {flag} out on a table replay."
            )


def _check_table_run(args: argparse.Namespace, env_id: str, env_kwargs: dict[str, Any], objective: Any) -> None:
    """Fill ``args.stages`` (the table's depth), ``args.seed`` (its first seed) and
    ``args.iters`` from the table; refuse what the table fixes or lacks."""
    import gymnasium as gym

    table = _load_run_table(env_id, env_kwargs)
    built = {**table.header.get("env_config", {}), **table.header.get("env_kwargs", {})}
    _refuse_what_the_table_fixes(args, env_kwargs, built)
    if args.stages is not None and not 1 <= args.stages <= table.stages:
        raise UsageError(
            f"--stages {args.stages} is not allowed. Allowed: an integer in [1, {table.stages}] (the table's depth)."
        )
    if args.seed is not None and args.seed not in table.seeds:
        raise UsageError(f"--seed {args.seed} is not in the table. Allowed: its seeds {list(table.seeds)}.")
    args.stages = table.stages if args.stages is None else args.stages
    args.seed = table.seeds[0] if args.seed is None else args.seed
    args.iters = built.get("stage_iters", 0)
    try:
        gym.make(env_id, **env_kwargs, objective=objective, max_stages=args.stages)
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e


def _check_live_run(args: argparse.Namespace, env_id: str, env_kwargs: dict[str, Any], objective: Any) -> None:
    """Fill the flags left out with :data:`LIVE_DEFAULTS` and check the env's settings
    before anything heavy is built or written."""
    import gymnasium as gym

    from lossagent_env.config import EnvConfig
    from lossagent_env.device import resolve_device
    from lossagent_env.env import check_settings
    from lossagent_env.registry import unknown_name_message

    for flag, default in LIVE_DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    fields = {f.name for f in dataclasses.fields(EnvConfig)} - {"task"}
    for key in env_kwargs:
        if key in ("objective", "max_stages", "stage_iters"):
            raise UsageError(f"--set {key}=...: use --objective, --stages or --iters instead.")
        if key not in fields:
            raise KeyError(unknown_name_message("EnvConfig field", key, fields))
    _check_losses(env_kwargs.get("losses"))
    env_kwargs["device"] = args.device
    task = gym.registry[env_id].kwargs.get("task", "sr")
    try:
        check_settings(task=task, objective=objective, max_stages=args.stages, stage_iters=args.iters, **env_kwargs)
        resolve_device(args.device, "--device")
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from e


def _cmd_run(args: argparse.Namespace) -> int:
    from agents import make_agent
    from benchmarks.results import RESULTS, TENSORBOARD
    from benchmarks.runs import RunSpec, run_name, run_one
    from benchmarks.suite import TABULAR_ENV_ID, objective_label

    env_id = _check_env_id(args.env)
    _check_agent(args.agent)
    objective = parse_objective(args.objective)
    _check_metrics(objective)
    for flag, value, low in (("--stages", args.stages, 1), ("--iters", args.iters, 1), ("--seed", args.seed, 0)):
        if value is not None and value < low:
            raise UsageError(f"{flag} {value!r} is not allowed. Allowed: an integer >= {low}")
    env_kwargs = parse_pairs(args.set, "--set")
    agent_kwargs = parse_pairs(args.agent_arg, "--agent-arg")
    if args.llm is not None:
        if args.agent != "llm":
            raise UsageError(f"--llm {args.llm!r} applies to --agent llm only (got --agent {args.agent!r}).")
        agent_kwargs["model"] = args.llm
    if env_id == TABULAR_ENV_ID:  # a table replay: its own arguments, no training
        _check_table_run(args, env_id, env_kwargs, objective)
    else:
        _check_live_run(args, env_id, env_kwargs, objective)
    try:
        make_agent(args.agent, **agent_kwargs)  # builds no model yet: checks the arguments
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
