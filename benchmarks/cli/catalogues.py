"""``lossagent losses`` and ``lossagent metrics``: the loss repository and the metrics."""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap

from benchmarks.cli.common import EXIT_OK

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``losses`` and ``metrics`` subcommands."""
    losses = sub.add_parser(
        "losses",
        help="list the loss repository",
        description="Every loss of the repository: scale, whether it needs weight files "
        "and whether it works offline now, and its description.",
        epilog="examples:\n  lossagent losses\n  lossagent losses --json\n",
    )
    losses.add_argument("--json", action="store_true", help="print JSON instead of text")
    losses.set_defaults(func=_cmd_losses)

    metrics = sub.add_parser(
        "metrics",
        help="list the objective metrics",
        description="Every metric usable in an objective: direction, range, whether it "
        "needs a reference image and whether it works offline now.",
        epilog="examples:\n  lossagent metrics\n  lossagent metrics --usable\n",
    )
    metrics.add_argument("--usable", action="store_true", help="only metrics usable offline now")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of text")
    metrics.set_defaults(func=_cmd_metrics)


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
    infos = {name: dataclasses.asdict(metric_info(name)) for name in names}
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
