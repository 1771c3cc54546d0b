"""The download guard: inside :func:`no_downloads`, fetching a weight file raises.

A library's real constructor runs inside the block; the functions through which it
would download a missing file are replaced by ones that raise
:class:`~lossagent_env.errors.MissingWeightsError`, naming the file, where it belongs
and the command from the asset catalogue that installs it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import urllib.request
from collections.abc import Iterator

from lossagent_env.assets.catalog import ASSETS, AssetFile, hf_repo_cache, install_command, url_basename
from lossagent_env.errors import MissingWeightsError

__all__ = ["no_downloads"]

_GUARD_LOCK = threading.RLock()
# Module attributes through which the libraries download a file by URL. Each is the
# function torch.hub defines, imported under the same name.
_URL_DOWNLOADERS = (
    ("torch.hub", "download_url_to_file"),
    ("pyiqa.utils.download_util", "download_url_to_file"),
    ("timm.models._hub", "download_url_to_file"),
)


@contextlib.contextmanager
def no_downloads(what: str, asset: str | None = None) -> Iterator[None]:
    """Within the block, an attempt to fetch a weight file raises ``MissingWeightsError``,
    before any connection is made. Replaced for the block:

    * ``torch.hub.download_url_to_file`` and the copies pyiqa and timm import
      (torchvision weights, pyiqa's ``load_file_from_url``, timm URLs);
    * ``urllib.request.urlopen`` (OpenAI CLIP's downloader);
    * Hugging Face Hub: offline mode is forced on, and its "not in the local cache"
      error becomes ``MissingWeightsError``.

    pyiqa looks for its files in ``os.path.join(torch.hub.get_dir(), "pyiqa")``,
    resolved when the block starts (so a changed ``TORCH_HOME`` is honoured). Only
    files get refused; nothing is written (pyiqa may create its empty cache folder).

    Args:
        what: Who needs the file, for the message, e.g. ``"metric 'niqe'"``.
        asset: Name in :data:`~lossagent_env.assets.ASSETS` whose install command the
            message gives.

    Raises:
        MissingWeightsError: A needed file is not installed.
    """
    import torch.hub
    from huggingface_hub import constants as hf_constants

    with _GUARD_LOCK:
        real_downloader = torch.hub.download_url_to_file

        def refuse_download(url, dst, *args, **kwargs):
            raise _missing_error(what, asset, url, dst)

        def refuse_urlopen(url, *args, **kwargs):
            raise _missing_error(what, asset, getattr(url, "full_url", url), None)

        saved: list[tuple[object, str, object]] = []

        def patch(obj: object, attr: str, value: object) -> None:
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)

        for module_name, attr in _URL_DOWNLOADERS:
            module = sys.modules.get(module_name)
            if module is not None:
                patch(module, attr, refuse_download)
        patch(urllib.request, "urlopen", refuse_urlopen)
        patch(hf_constants, "HF_HUB_OFFLINE", True)
        pyiqa_download = sys.modules.get("pyiqa.utils.download_util")
        if pyiqa_download is not None:
            patch(pyiqa_download, "DEFAULT_CACHE_DIR", os.path.join(torch.hub.get_dir(), "pyiqa"))
        try:
            yield
        except MissingWeightsError:
            raise
        except Exception as error:
            cause = _hf_offline_cause(error)
            if cause is None:
                raise
            raise _missing_hf_error(what, asset, cause) from error
        finally:
            for obj, attr, value in reversed(saved):
                setattr(obj, attr, value)
            # A module first imported inside the block bound the refusing function.
            for module_name, attr in _URL_DOWNLOADERS:
                module = sys.modules.get(module_name)
                if module is not None and getattr(module, attr) is refuse_download:
                    setattr(module, attr, real_downloader)


# --------------------------------------------------------------- missing-file errors
def _find_asset_file(
    asset: str | None, filename: str | None, hf_repo: str | None = None
) -> tuple[str, AssetFile] | None:
    """The (asset, file) of the catalogue that matches; ``asset`` is looked at first."""
    names = ([asset] if asset is not None and asset in ASSETS else []) + [n for n in ASSETS.names() if n != asset]
    for name in names:
        for file in ASSETS.get(name).files:
            if filename is not None and file.filename == filename:
                return name, file
            if hf_repo is not None and file.hf_repo == hf_repo:
                return name, file
    return None


def _missing_error(what: str, asset: str | None, url: str, dst: str | os.PathLike | None) -> MissingWeightsError:
    """The error for a refused download of ``url`` to ``dst`` (None: not known)."""
    filename = url_basename(url) or url
    found = _find_asset_file(asset, filename)
    # ``dst`` is exactly where the library looks; the catalogue says it when ``dst`` is not known.
    expected: str | os.PathLike
    if dst is not None:
        expected = dst
    elif found is not None:
        expected = found[1].path()
    else:
        expected = f"(a cache folder of the library that asked for {url})"
    if found is not None:
        hint = install_command(found[0])
    elif dst is not None:
        hint = f"cp /path/to/{filename} {dst}"
    else:
        hint = f"place {filename} where the library looks"
    return MissingWeightsError(what, filename, expected, hint)


def _hf_request(error: BaseException) -> tuple[str | None, str | None]:
    """``(repo_id, filename)`` of the ``hf_hub_download`` call that raised ``error``."""
    tb = error.__traceback__
    repo_id = filename = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "hf_hub_download":
            repo_id = frame.f_locals.get("repo_id", repo_id)
            filename = frame.f_locals.get("filename", filename)
        tb = tb.tb_next
    return repo_id, filename


def _hf_offline_cause(error: BaseException) -> BaseException | None:
    """The Hugging Face "not in the local cache / offline" error in ``error``'s chain."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _missing_hf_error(what: str, asset: str | None, cause: BaseException) -> MissingWeightsError:
    """The error for a Hugging Face file that is not in the local cache."""
    if asset is not None and asset in ASSETS:
        missing = [f for f in ASSETS.get(asset).missing() if f.hf_repo is not None]
        if missing:
            return MissingWeightsError(what, missing[0].filename, missing[0].path(), install_command(asset))
    repo_id, filename = _hf_request(cause)
    found = _find_asset_file(asset, None, hf_repo=repo_id)
    if found is not None:
        found_asset, file = found
        return MissingWeightsError(what, file.filename, file.path(), install_command(found_asset))
    if repo_id is None:
        return MissingWeightsError(
            what, "a Hugging Face Hub file", "the Hugging Face cache", "place the file in the Hugging Face cache"
        )
    expected = hf_repo_cache(repo_id) / "snapshots" / "<revision>" / str(filename)
    return MissingWeightsError(
        what, str(filename), expected, f"copy a Hugging Face cache that holds {repo_id} to {expected.parents[2]}"
    )
