"""``lossagent assets``: list and install the weight files of learned metrics and losses.

Nothing is downloaded: every file is installed once from a local copy (see
:mod:`lossagent_env.assets`).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]

_EPILOG = """\
Assets are weight files that learned metrics and some losses need. This project never
downloads them at run time: install each once from a local copy.

examples:
  lossagent assets list
  lossagent assets install perceptual --from /media/usb/vgg19-dcbb9e9d.pth
  lossagent assets install lpips --from ~/weights/          # a folder: searched by file name
  {download}
  lossagent assets install niqe --from ~/assets/{sdist}
"""
"""The help's closing text; :class:`_HelpFormatter` fills ``{download}`` and ``{sdist}``."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Fills the basicsr download hints in when help is shown, so the asset catalogue (and
    the libraries it imports) loads only then."""

    def _format_text(self, text: str) -> str:
        if "{" in text:
            from lossagent_env.assets import BASICSR_SDIST, basicsr_download_shell

            text = text.format(download=basicsr_download_shell("~/assets"), sdist=BASICSR_SDIST)
        return super()._format_text(text)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``assets`` command (``list``, ``install NAME --from PATH``); every leaf parser
    sets ``func``, which returns the exit status (0 ok, 2 bad input)."""
    parser = subparsers.add_parser(
        "assets",
        help="list and install weight files of learned metrics and losses (offline)",
        description="List and install the weight files of learned metrics and losses.",
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    commands = parser.add_subparsers(dest="assets_command", metavar="{list,install}", required=True)
    list_parser = commands.add_parser(
        "list",
        help="show every asset, its files, and whether it is installed",
        description="Show every asset, its files and where they go, and whether it is installed.",
        epilog="example:\n  lossagent assets list",
        formatter_class=_HelpFormatter,
    )
    list_parser.set_defaults(func=_cmd_list)
    install_parser = commands.add_parser(
        "install",
        help="install an asset's files from a local file or folder",
        description="Copy (or, for niqe, convert) an asset's files from a local file or folder to where "
        "its library looks, after checking format and checksum. A wrong file is refused and nothing is left behind.",
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    install_parser.add_argument("name", help="asset name, as in 'lossagent assets list'")
    install_parser.add_argument("--from", dest="source", required=True, metavar="PATH", help="local file or folder")
    install_parser.add_argument(
        "--no-checksum",
        dest="checksum",
        action="store_false",
        help="install weights whose sha256 differs from the official file's (e.g. your own "
        "fine-tuned weights of the same format); the format is still checked",
    )
    install_parser.set_defaults(func=_cmd_install)
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    from lossagent_env.assets import status

    for row in status():
        state = "installed" if row["installed"] else "missing"
        if row["installed"] and not row["usable_offline"]:
            state = "installed (a Python module it needs is missing)"
        print(f"{row['name']:<12} {row['kind']:<7} {state:<10} {row['summary']}")
        for file in row["files"]:
            mark = "ok" if file["installed"] else "--"
            print(f"    [{mark}] {file['filename']}  ->  {file['path']}")
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    from lossagent_env.assets import ASSETS, install

    try:
        paths = install(args.name, args.source, checksum=args.checksum)
    except (KeyError, FileNotFoundError, ValueError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"installed {path}")
    missing = ASSETS.get(args.name).missing()
    if missing:
        print(
            f"still missing for {args.name}: {', '.join(f.filename for f in missing)}; run the command again with them"
        )
    return 0
