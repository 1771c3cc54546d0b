"""The installer: puts asset files in place from local copies (:func:`install`), and
reports what is there (:func:`status`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lossagent_env.assets.catalog import ASSETS, Asset, AssetFile, hf_repo_cache, install_command
from lossagent_env.assets.niqe import find_niqe_source, read_niqe_params, write_niqe_mat
from lossagent_env.assets.verify import check_niqe_params, verify

__all__ = ["install", "status"]

logger = logging.getLogger(__name__)

# A writer fills a temporary path with the content of one asset file.
_Writer = Callable[[Path], None]
# A plan lists, for each file a source provides: the file, its writer, and where it
# comes from (for messages).
_Plan = list[tuple[AssetFile, _Writer, str]]


def install(name: str, source: str | os.PathLike[str], *, checksum: bool = True) -> list[Path]:
    """Install the weight files of asset ``name`` from a local file or folder.

    Each file is written to a temporary file in its destination folder, checked (format,
    and sha256 when known), and only when every file of the call passed, moved into
    place with ``os.replace``. A wrong file is refused and nothing is left behind.
    Files of the asset that the source does not hold are reported as still missing
    (install them with another call).

    Args:
        name: Asset name, see :data:`~lossagent_env.assets.ASSETS`
            (``lossagent assets list``).
        source: A file, or a folder searched recursively for the asset's file names.
            For ``niqe``: the basicsr sdist, its ``.npz``, or pyiqa's ``.mat``.
        checksum: Compare the sha256 with the official file's. ``False`` installs other
            weights of the same format (fine-tuned ones, say) under the expected name;
            the format is still checked and a warning is logged.

    Returns:
        The installed paths.

    Raises:
        KeyError: Unknown asset name (with a "Did you mean" hint).
        FileNotFoundError: ``source`` does not exist.
        ValueError: The source is not a right file for the asset.
    """
    asset = ASSETS.get(name)
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"Source {str(source)!r} does not exist. For {name!r} give {asset.sources_hint}.")
    plan = _PLANNERS.get(name, _generic_plan)(asset, source)

    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []
    try:
        for file, write, origin in plan:
            folder = file.folder()
            created.extend(_make_dirs(folder))
            handle, temp_name = tempfile.mkstemp(prefix=f".{file.filename}.", suffix=".part", dir=folder)
            os.close(handle)
            temp = Path(temp_name)
            staged.append((temp, folder / file.filename))
            write(temp)
            verify(file, temp, origin, checksum=checksum)
        for temp, dest in staged:
            os.chmod(temp, 0o644)
            os.replace(temp, dest)
        for file, _, _ in plan:
            if file.hf_repo is not None:
                _write_hf_ref(file.hf_repo, file.folder().name)
    except BaseException:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):  # only empty folders we made are removed
                folder.rmdir()
        raise
    installed = [dest for _, dest in staged]
    for path in installed:
        logger.info("Installed %s", path)
    if not checksum:
        logger.warning("Installed %s without comparing checksums (--no-checksum).", name)
    still_missing = asset.missing()
    if still_missing:
        logger.warning(
            "Asset %r still misses %s; install them with: %s",
            name,
            [f.filename for f in still_missing],
            install_command(name),
        )
    return installed


def status() -> list[dict]:
    """One row per asset, for ``lossagent assets list``.

    Returns:
        Dicts with ``name``, ``kind`` (``"metric"``/``"loss"``), ``summary``, ``files``
        (each: ``filename``, ``path``, ``installed``, ``sha256``), ``installed``
        (every file in place) and ``usable_offline`` (installed and its Python
        modules import).
    """
    rows = []
    for name in ASSETS.names():
        asset = ASSETS.get(name)
        files = [
            {"filename": f.filename, "path": str(f.path()), "installed": f.installed(), "sha256": f.sha256}
            for f in asset.files
        ]
        rows.append(
            {
                "name": name,
                "kind": asset.kind,
                "summary": asset.summary,
                "files": files,
                "installed": all(f["installed"] for f in files),
                "usable_offline": asset.usable_offline(),
            }
        )
    return rows


# -------------------------------------------------------------------------- plans
def _generic_plan(asset: Asset, source: Path) -> _Plan:
    """Copy the files a source provides: a file by its name, or a folder's matches."""
    files = asset.files
    if source.is_dir():
        plan: _Plan = []
        for file in files:
            matches = sorted(p for p in source.rglob(file.filename) if p.is_file())
            if matches:
                plan.append((file, functools.partial(shutil.copyfile, matches[0]), str(matches[0])))
        if not plan:
            raise ValueError(
                f"No file of asset {asset.name!r} in folder {source}. Expected any of: {[f.filename for f in files]}."
            )
        return plan
    for file in files:
        if source.name == file.filename:
            return [(file, functools.partial(shutil.copyfile, source), str(source))]
    if len(files) == 1:
        return [(files[0], functools.partial(shutil.copyfile, source), str(source))]
    raise ValueError(
        f"{source.name!r} is not a file of asset {asset.name!r}. "
        f"Allowed: {[f.filename for f in files]}, or a folder holding them."
    )


def _niqe_plan(asset: Asset, source: Path) -> _Plan:
    """Convert NIQE's parameters from the basicsr sdist (or its ``.npz``) to pyiqa's file."""
    (file,) = asset.files
    if source.is_dir():
        source = find_niqe_source(source, file.filename)
    mu, cov = check_niqe_params(*read_niqe_params(source), str(source))
    return [(file, functools.partial(write_niqe_mat, mu=mu, cov=cov), str(source))]


_PLANNERS: dict[str, Callable[[Asset, Path], _Plan]] = {"niqe": _niqe_plan}


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and return the folders that did not exist, outermost first."""
    new = []
    current = folder
    while not current.exists():
        new.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(new))


def _write_hf_ref(repo_id: str, snapshot: str) -> None:
    """Point the Hugging Face cache's ``main`` ref of ``repo_id`` at ``snapshot`` (the
    snapshot folder a file went to)."""
    ref = hf_repo_cache(repo_id) / "refs" / "main"
    if not ref.is_file():
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(snapshot)
