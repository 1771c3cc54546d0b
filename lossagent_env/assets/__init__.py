"""Weight files of learned metrics and losses: where they go, how to install them offline.

This project never downloads at run time. A metric or loss that needs a weight file
finds it where its library looks (:class:`AssetFile`), or raises
:class:`~lossagent_env.errors.MissingWeightsError` with the command that installs it
from a local copy (``lossagent assets install NAME --from PATH``; docs/objectives.md,
"Learned metrics with managed weights").

Modules, each importing only ones listed before it:

* :mod:`~lossagent_env.assets.catalog`: the asset catalogue (:data:`ASSETS`), the basicsr
  sdist and its download command, :func:`install_command`;
* :mod:`~lossagent_env.assets.guard`: :func:`no_downloads` and the errors it raises;
* :mod:`~lossagent_env.assets.verify`: checksum and format checks;
* :mod:`~lossagent_env.assets.niqe`: NIQE's parameters, from the sdist to pyiqa's file;
* :mod:`~lossagent_env.assets.installer`: :func:`install` and :func:`status`.

The command line (``lossagent assets``) is :mod:`benchmarks.cli.assets`.
"""

from __future__ import annotations

from lossagent_env.assets.catalog import (
    ASSETS,
    BASICSR_SDIST,
    BASICSR_SDIST_SHA256,
    BASICSR_VERSION,
    Asset,
    AssetFile,
    basicsr_download_command,
    basicsr_download_shell,
    install_command,
)
from lossagent_env.assets.guard import no_downloads
from lossagent_env.assets.installer import install, status
from lossagent_env.assets.niqe import fetch_basicsr_sdist

__all__ = [
    "ASSETS",
    "BASICSR_SDIST",
    "BASICSR_SDIST_SHA256",
    "BASICSR_VERSION",
    "Asset",
    "AssetFile",
    "basicsr_download_command",
    "basicsr_download_shell",
    "fetch_basicsr_sdist",
    "install",
    "install_command",
    "no_downloads",
    "status",
]
