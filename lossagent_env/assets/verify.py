"""Checks that a file is a valid copy of an asset file: size, sha256 and format.

The installer runs :func:`verify` on every file before it moves it into place; a
NIQE parameter file must also hold the standard pristine parameters
(:func:`check_niqe_params`).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from lossagent_env.assets.catalog import AssetFile

__all__ = ["check_niqe_params", "sha256_of", "verify"]

# Statistics of the standard NIQE pristine parameters (mu: 36, cov: 36 x 36), read from
# basicsr 1.4.2's niqe_pris_params.npz; the same numbers as MATLAB's
# modelparameters.mat. A file whose parameters differ is refused.
_NIQE_REFERENCE = {
    "mu_sum": 17.32876552816881,
    "mu_norm": 4.856825967457815,
    "cov_trace": 1.6309188316421013,
    "cov_norm": 1.1974770225375395,
}


def sha256_of(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(file: AssetFile, path: Path, source: str, checksum: bool = True) -> None:
    """Raise ``ValueError`` unless ``path`` holds a valid copy of ``file`` (its sha256
    is compared only when ``checksum``)."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{source} is empty; expected {file.filename} ({file.fmt} format).")
    if checksum and (file.sha256 is not None or file.hash_prefix is not None):
        digest = sha256_of(path)
        if file.sha256 is not None and digest != file.sha256:
            raise ValueError(f"{source} has sha256 {digest}; {file.filename} must have sha256 {file.sha256}.")
        if file.hash_prefix is not None and not digest.startswith(file.hash_prefix):
            raise ValueError(
                f"{source} has sha256 {digest}; {file.filename} must have a sha256 starting with {file.hash_prefix}."
                " (Your own weights of the same format: add --no-checksum.)"
            )
    try:
        _check_format(file, path)
    except ValueError:
        raise
    except Exception as error:  # the readers raise many types on a wrong file
        raise ValueError(f"{source} is not a valid {file.fmt} file for {file.filename}: {error}") from error


def _check_format(file: AssetFile, path: Path) -> None:
    if file.fmt in ("torch", "torchscript"):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
                    raise ValueError(f"zip archive without data.pkl ({len(names)} entries); not a torch file")
                broken = archive.testzip()
                if broken is not None:
                    raise ValueError(f"entry {broken!r} is corrupt (CRC mismatch); the copy is damaged or truncated")
        elif file.fmt == "torchscript":
            raise ValueError("not a zip archive; TorchScript files are zip archives")
        else:
            import torch

            torch.load(path, map_location="cpu", weights_only=True)  # legacy format: tensors only
    elif file.fmt == "mat":
        import scipy.io

        content = scipy.io.loadmat(path)
        absent = [k for k in file.required_keys if k not in content]
        if absent:
            raise ValueError(
                f"MATLAB file without keys {absent}; it has {sorted(k for k in content if not k.startswith('__'))}"
            )
        if file.required_keys == ("mu_prisparam", "cov_prisparam"):
            check_niqe_params(content["mu_prisparam"], content["cov_prisparam"], str(path))
    elif file.fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("safetensors file without tensors")
    else:
        raise ValueError(f"Unknown format {file.fmt!r}. Allowed: 'torch', 'torchscript', 'mat', 'safetensors'.")


def check_niqe_params(mu: np.ndarray, cov: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, cov)`` as float64, ``mu`` flattened to ``(36,)``, if they are the standard NIQE
    pristine parameters (36 means, any shape; 36x36 covariance) read from ``source``.

    Raises:
        ValueError: Wrong shapes, non-finite values, or other statistics than the
            standard parameters'.
    """
    mu = np.asarray(mu, dtype=np.float64).ravel()
    cov = np.asarray(cov, dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(f"{source}: NIQE parameters must have shapes 36 and 36x36; got {mu.shape} and {cov.shape}.")
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise ValueError(f"{source}: NIQE parameters contain non-finite values.")
    stats = {
        "mu_sum": float(mu.sum()),
        "mu_norm": float(np.linalg.norm(mu)),
        "cov_trace": float(np.trace(cov)),
        "cov_norm": float(np.linalg.norm(cov)),
    }
    off = {k: v for k, v in stats.items() if not np.isclose(v, _NIQE_REFERENCE[k], rtol=1e-6, atol=0)}
    if off:
        raise ValueError(
            f"{source}: these are not the standard NIQE pristine parameters "
            f"({', '.join(f'{k}={v:.6g}, expected {_NIQE_REFERENCE[k]:.6g}' for k, v in off.items())})."
        )
    return mu, cov
