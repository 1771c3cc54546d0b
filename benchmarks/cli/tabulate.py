"""``lossagent tabulate``: build a table for ``LossAgent/Tabular-v0`` from a suite."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import textwrap

from benchmarks.cli.common import EXIT_OK, Formatter, UsageError

__all__ = ["register"]


class _HelpFormatter(Formatter):
    """Fills ``{ray_timeout}`` in when help is shown, so the executor loads only then."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text is not None and "{ray_timeout}" in text:
            from benchmarks.executor import RAY_CONNECT_TIMEOUT_S

            text = text.replace("{ray_timeout}", f"{RAY_CONNECT_TIMEOUT_S:g}")
        return text


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tabulate`` subcommand."""
    parser = sub.add_parser(
        "tabulate",
        help="build a table of every preset sequence (for LossAgent/Tabular-v0)",
        description="Train every node of the preset tree of a suite's [table] section, for "
        "real, and store the panel metrics of each node in one SQLite file. Subtrees are "
        "independent: --workers N processes or --backend ray; --resume finishes an "
        "interrupted build, giving the same table.",
        formatter_class=_HelpFormatter,
        epilog=textwrap.dedent(
            """\
            examples:
              lossagent tabulate --suite tabular --out smoke.sqlite --workers 2
              lossagent tabulate --suite tabular --out smoke.sqlite --resume
              lossagent tabulate --suite my_table.toml --out t.sqlite --backend ray --ray-address auto
            """
        ),
    )
    parser.add_argument("--suite", required=True, help="suite name or .toml file with a [table] section")
    parser.add_argument("--out", required=True, help="the table file to write (.sqlite)")
    parser.add_argument("--workers", type=int, default=1, help="units computed at once [default: 1]")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="[default: local]")
    parser.add_argument(
        "--ray-address", default=None,
        help="Ray cluster address, with --backend ray only [default: start a local cluster]",
    )
    parser.add_argument(
        "--ray-timeout", type=float, default=None, metavar="SECONDS",
        help="give up on a --ray-address that does not answer within SECONDS [default: {ray_timeout}]",
    )
    parser.add_argument(
        "--max-nodes", type=int, default=None, metavar="N",
        help="allow tables of up to N nodes; a larger table is refused before anything is "
        "created, with its size and an estimated build time [default: "
        "benchmarks.tabulate.MAX_NODES, about 11 hours of building with 2 workers]",
    )
    parser.add_argument("--resume", action="store_true", help="finish the table in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_cmd_tabulate)


def _cmd_tabulate(args: argparse.Namespace) -> int:
    from benchmarks.executor import RAY_CONNECT_TIMEOUT_S, check_backend
    from benchmarks.tabulate import load_table_spec, tabulate

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not allowed. Allowed: an integer >= 1")
    if args.max_nodes is not None and args.max_nodes < 1:
        raise UsageError(f"--max-nodes {args.max_nodes} is not allowed. Allowed: an integer >= 1")
    if args.ray_timeout is not None and not 0 < args.ray_timeout < math.inf:
        raise UsageError(f"--ray-timeout {args.ray_timeout} is not allowed. Allowed: seconds > 0")
    if args.ray_timeout is not None and args.ray_address is None:
        raise UsageError("--ray-timeout is the wait for a --ray-address; give one, or leave out --ray-timeout.")
    check_backend(args.backend, args.ray_address)
    spec = load_table_spec(args.suite)
    spec.command = shlex.join(["lossagent", *sys.argv[1:]]) if sys.argv[1:2] == ["tabulate"] else (
        f"lossagent tabulate --suite {args.suite} --out {args.out}"
    )
    result = tabulate(
        spec, args.out, workers=args.workers, backend=args.backend, resume=args.resume,
        progress=not args.no_progress, ray_address=args.ray_address,
        ray_timeout=RAY_CONNECT_TIMEOUT_S if args.ray_timeout is None else args.ray_timeout,
        **({} if args.max_nodes is None else {"max_nodes": args.max_nodes}),
    )
    print(
        f"{result.out}: {result.units} units ({result.skipped} already stored, "
        f"{result.computed} computed, {result.nodes} nodes) in {result.wall_s:.1f} s"
    )
    return EXIT_OK
