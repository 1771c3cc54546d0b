"""``lossagent tabulate``: build a table for ``LossAgent/Tabular-v0`` from a suite."""

from __future__ import annotations

import argparse
import math
import shlex
import sys

from benchmarks.cli.common import EXIT_FAILED, EXIT_OK, Formatter, UsageError, examples

__all__ = ["register"]


class _HelpFormatter(Formatter):
    """Fills ``{ray_timeout}`` in when help is shown, so the executor loads only then."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text is not None and "{ray_timeout}" in text:
            from benchmarks.execution.executor import RAY_CONNECT_TIMEOUT_S

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
        epilog=examples(
            "lossagent tabulate --suite tabular --out lossbench.sqlite --workers 2",
            "lossagent tabulate --suite tabular --out lossbench.sqlite --resume",
            "lossagent tabulate --suite my_table.toml --out t.sqlite --backend ray --ray-address auto",
            "lossagent tabulate --verify lossbench --samples 5     # does live training here agree?",
        ),
    )
    parser.add_argument("--suite", help="suite name or .toml file with a [table] section (to build)")
    parser.add_argument("--out", help="the table file to write (.sqlite) (to build)")
    parser.add_argument(
        "--verify", metavar="TABLE",
        help="instead of building: train --samples random preset sequences of TABLE (a shipped "
        "name or a file) live here and print each one's distance from the table, in units of "
        "the difference between two of its replicates (sqrt(2) x their standard deviation); exit 1 "
        "if any value lies beyond the band: Student's t on replicates - 1 degrees of freedom, "
        "0.27%% false alarms per value (6.6 with 5 replicates)",
    )
    parser.add_argument("--samples", type=int, default=3, help="sequences trained by --verify [default: 3]")
    parser.add_argument("--stages", type=int, help="length of each --verify sequence [default: the table's depth]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --verify draw [default: 0]")
    parser.add_argument("--workers", type=int, default=1,
                        help="units computed at once, at most one process per core [default: 1]")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="[default: local]")
    parser.add_argument(
        "--ray-address",
        help="Ray cluster address, with --backend ray only [default: start a local cluster]",
    )
    parser.add_argument(
        "--ray-timeout", type=float, metavar="SECONDS",
        help="give up on a --ray-address that does not answer within SECONDS [default: {ray_timeout}]",
    )
    parser.add_argument(
        "--max-nodes", type=int, metavar="N",
        help="allow tables of up to N nodes; a larger table is refused before anything is "
        "created, with its size and an estimated build time [default: "
        "benchmarks.execution.tabulate.MAX_NODES, about 11 hours of building with 2 workers]",
    )
    parser.add_argument("--resume", action="store_true", help="finish the table in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_cmd_tabulate)


def _cmd_verify(args: argparse.Namespace) -> int:
    from lossagent_env.tabular.check import check_against_live, summary

    building = [f"--{name.replace('_', '-')}" for name in ("suite", "out", "ray_address", "ray_timeout", "max_nodes")
                if getattr(args, name) is not None]
    building += [flag for flag, on in (("--resume", args.resume), ("--backend", args.backend != "local"),
                                       ("--workers", args.workers != 1)) if on]
    if building:
        raise UsageError(f"--verify trains a few sequences and builds nothing; leave out {', '.join(building)}.")
    from lossagent_env.errors import ConfigError

    try:  # check_against_live refuses a bad --samples, --stages or --seed (loc names it)
        checks = check_against_live(args.verify, samples=args.samples, stages=args.stages, seed=args.seed)
    except ConfigError as e:
        raise UsageError(f"--{e.field}: {e}" if e.field in ("samples", "stages", "seed") else str(e)) from e
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(summary(checks))
    return EXIT_OK if all(c.inside for c in checks) else EXIT_FAILED


def _cmd_tabulate(args: argparse.Namespace) -> int:
    from benchmarks.execution.executor import RAY_CONNECT_TIMEOUT_S, check_backend
    from benchmarks.execution.tabulate import MAX_NODES, load_table_spec, tabulate
    from lossagent_env.cpus import available_cpus

    if args.verify is not None:
        return _cmd_verify(args)
    if args.suite is None or args.out is None:
        raise UsageError("tabulate builds a table from --suite into --out (both needed), or checks one with --verify TABLE.")
    if (args.samples, args.stages, args.seed) != (3, None, 0):
        raise UsageError("--samples, --stages and --seed go with --verify TABLE.")

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not allowed. Allowed: an integer >= 1")
    if args.max_nodes is not None and args.max_nodes < 1:
        raise UsageError(f"--max-nodes {args.max_nodes} is not allowed. Allowed: an integer >= 1")
    if args.ray_timeout is not None and not 0 < args.ray_timeout < math.inf:
        raise UsageError(f"--ray-timeout {args.ray_timeout} is not allowed. Allowed: seconds > 0")
    if args.ray_timeout is not None and args.ray_address is None:
        raise UsageError("--ray-timeout is the wait for a --ray-address; give one, or leave out --ray-timeout.")
    check_backend(args.backend, args.ray_address)
    workers, cores = args.workers, available_cpus()
    if args.ray_address is None and workers > cores:  # processes (or a local Ray cluster) of this machine
        print(f"lossagent tabulate: --workers {workers} is more than the {cores} cores here; using {cores} "
              "processes.", file=sys.stderr)
        workers = cores
    max_nodes = MAX_NODES if args.max_nodes is None else args.max_nodes
    spec = load_table_spec(args.suite, max_nodes=max_nodes, workers=workers)  # size counted, nothing listed
    spec.command = shlex.join(["lossagent", *sys.argv[1:]]) if sys.argv[1:2] == ["tabulate"] else (
        f"lossagent tabulate --suite {args.suite} --out {args.out}"
    )
    result = tabulate(
        spec, args.out, workers=workers, backend=args.backend, resume=args.resume,
        progress=not args.no_progress, ray_address=args.ray_address,
        ray_timeout=RAY_CONNECT_TIMEOUT_S if args.ray_timeout is None else args.ray_timeout,
        max_nodes=None,  # checked against --max-nodes as the suite was read
    )
    print(
        f"{result.out}: {result.units} units ({result.skipped} already stored, "
        f"{result.computed} computed, {result.nodes} nodes) in {result.wall_s:.1f} s"
    )
    return EXIT_OK
