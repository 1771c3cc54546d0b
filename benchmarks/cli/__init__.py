"""The ``lossagent`` command line: one module per subcommand (the table of them is in
docs/benchmarks.md, "The command line").

Exit codes: 0 success; 1 a run or benchmark failed (message on stderr); 2 bad input
(unknown names get a "Did you mean" hint; no traceback). ``-v`` shows progress logs,
``--debug`` also shows tracebacks of expected errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from benchmarks.cli import assets, bench, catalogues, report, run, tabulate
from benchmarks.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Formatter, UsageError, examples

__all__ = ["UsageError", "build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The ``lossagent`` argument parser (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog="lossagent",
        description="LossAgent Gym: agents choose loss weights for image restoration.",
        formatter_class=Formatter,
        epilog=examples(
            "lossagent bench --suite smoke",
            "lossagent run --agent ucb --objective psnr --stages 5 --iters 20",
            "lossagent losses",
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show progress logs")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of all errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (bench, run, report, tabulate, catalogues, assets):
        module.register(sub)
    for name, action in sub.choices.items():
        if not action.epilog:  # every subcommand's --help shows an example
            action.epilog = f"example:\n  lossagent {name} --help\n"
        if action.formatter_class is argparse.HelpFormatter:  # not named by the subcommand
            action.formatter_class = Formatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossagent``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from benchmarks.errors import BenchmarkError, RunsFailedError
    from benchmarks.suites.suite import SuiteError
    from lossagent_env.chat.local.lifetime import stop_servers_on_signals
    from lossagent_env.errors import MissingWeightsError

    try:
        # SIGTERM, SIGINT or SIGHUP first stops the embedded model's server and removes its folder
        with stop_servers_on_signals():
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
    except (ValueError, TypeError, OSError) as e:  # a value refused where it was used
        return _fail(args, e, EXIT_USAGE)
    except KeyboardInterrupt:
        print("lossagent: interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, error: BaseException, code: int) -> int:
    if args.debug:
        logger.exception("lossagent %s failed", args.command)
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in message:
        message = f"{message}: {error.filename}"
    print(f"lossagent {args.command}: error: {message}", file=sys.stderr)
    return code
