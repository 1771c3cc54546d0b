"""The asset catalogue: which weight files each learned metric or loss needs, and where.

:data:`ASSETS` maps a metric or loss name to an :class:`Asset`, the files it needs
(:class:`AssetFile`), the folder its library looks in and the format the installer
checks. pyiqa's file names come from pyiqa's own ``default_model_urls`` and
``DEFAULT_CONFIGS``, torchvision's from its weight enums and timm's from its
pretrained configs, so they follow the installed library versions.

NIQE's parameters come from the ``basicsr`` source distribution on PyPI; its name,
checksum and the pip command that downloads it are declared here, once, and every
message, help text and the fetcher read them from here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lossagent_env.registry import Registry

__all__ = [
    "ASSETS",
    "BASICSR_SDIST",
    "BASICSR_SDIST_SHA256",
    "BASICSR_VERSION",
    "NIQE_SOURCES",
    "Asset",
    "AssetFile",
    "basicsr_download_command",
    "basicsr_download_shell",
    "hf_repo_cache",
    "install_command",
    "url_basename",
]

# ------------------------------------------------------------------ basicsr sdist
BASICSR_VERSION = "1.4.2"
BASICSR_SDIST = f"basicsr-{BASICSR_VERSION}.tar.gz"
"""File name of the basicsr source distribution that carries NIQE's parameters."""
BASICSR_SDIST_SHA256 = "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87"
"""sha256 of ``basicsr-1.4.2.tar.gz`` as served by PyPI."""


def basicsr_download_command(dest: str | os.PathLike[str], *options: str) -> list[str]:
    """The pip command (a list starting with ``"pip"``; further pip ``options`` go before
    ``-d``) that downloads :data:`BASICSR_SDIST`, and only it, into ``dest``.

    ``--no-binary basicsr`` asks for the source distribution (the wheel does not carry
    the ``.npz``), and ``--no-build-isolation`` lets pip read its metadata with the
    installed setuptools instead of building numpy from source (``--no-binary :all:``
    would).
    """
    return [
        "pip", "download", f"basicsr=={BASICSR_VERSION}",
        "--no-deps", "--no-binary", "basicsr", "--no-build-isolation", *options,
        "-d", os.fspath(dest),
    ]  # fmt: skip


def basicsr_download_shell(dest: str = "DIR") -> str:
    """:func:`basicsr_download_command` as one shell line, for messages and help texts."""
    return " ".join(basicsr_download_command(dest))


NIQE_SOURCES = (
    f"the basicsr source distribution ({BASICSR_SDIST}; get it with: "
    f"{basicsr_download_shell()}), "
    "its niqe_pris_params.npz, pyiqa's niqe_modelparameters.mat, or a folder holding one of them"
)
"""What ``install("niqe", source)`` accepts, for its messages."""

_HASH_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention: name-<sha256 prefix>.ext


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
            repo_cache = hf_repo_cache(self.hf_repo)
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


def hf_repo_cache(repo_id: str) -> Path:
    """The Hugging Face cache folder of model repository ``repo_id``."""
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
def url_basename(url: str) -> str:
    """The file name at the end of ``url``'s path."""
    return os.path.basename(urllib.parse.urlparse(url).path)


def _pyiqa_opts(metric: str) -> dict:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return dict(DEFAULT_CONFIGS[metric]["metric_opts"])


def _pyiqa_file(arch_module: str, key: str, fmt: str = "torch", required_keys: tuple[str, ...] = ()) -> AssetFile:
    """A file named in ``pyiqa.archs.<arch_module>.default_model_urls[key]``."""
    urls = importlib.import_module(f"pyiqa.archs.{arch_module}").default_model_urls
    return AssetFile(url_basename(urls[key]), "pyiqa", fmt, required_keys=required_keys)


def _torchvision_file(enum_name: str, member: str = "IMAGENET1K_V1") -> AssetFile:
    """The file of a torchvision weight enum, e.g. ``VGG19_Weights.IMAGENET1K_V1``."""
    import torchvision.models

    url = getattr(getattr(torchvision.models, enum_name), member).url
    return AssetFile(url_basename(url), "checkpoints", "torch")


def _clip_file(backbone: str) -> AssetFile:
    """An OpenAI CLIP model as pyiqa loads it; its URL carries the file's sha256."""
    from pyiqa.archs.clip_model import _MODELS

    url = _MODELS[backbone]
    digest = urllib.parse.urlparse(url).path.split("/")[-2]
    return AssetFile(url_basename(url), "clip", "torchscript", sha256=digest if len(digest) == 64 else None)


def _timm_file(model_name: str) -> AssetFile:
    """The safetensors weights timm fetches from the Hugging Face Hub for ``model_name``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm has no Hugging Face weights for {model_name!r}.")
    return AssetFile(cfg.hf_hub_filename or "model.safetensors", f"hf:{cfg.hf_hub_id}", "safetensors")


def _lpips_files(metric: str) -> tuple[AssetFile, ...]:
    opts = _pyiqa_opts(metric)
    trunk = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}[opts["net"]]
    return (_torchvision_file(trunk), _pyiqa_file("lpips_arch", f"{opts['version']}_{opts['net']}"))


def _topiq_files(metric: str) -> tuple[AssetFile, ...]:
    opts = _pyiqa_opts(metric)
    return (_timm_file(opts["semantic_model_name"]), _pyiqa_file("topiq_arch", opts["model_name"]))


def _nima_files(metric: str) -> tuple[AssetFile, ...]:
    opts = _pyiqa_opts(metric)
    base = opts["base_model_name"]
    return (_timm_file(base), _pyiqa_file("nima_arch", f"{base}-{opts.get('train_dataset', 'ava')}"))


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
        return self.installed() and all(importlib.util.find_spec(m) is not None for m in self.requires)


_BOTH_FILES = "a folder holding both files, or one file at a time"
_TIMM = ("timm", "safetensors")

ASSETS: Registry[Asset] = Registry("asset")
"""Asset name -> :class:`Asset`; the only list of weight files."""

for _asset in (
    Asset("niqe", "metric", "pyiqa NIQE: pristine natural-scene statistics (mu 36, cov 36x36)",
          lambda: (_pyiqa_file("niqe_arch", "url", "mat", ("mu_prisparam", "cov_prisparam")),),
          sources_hint=NIQE_SOURCES),
    Asset("brisque", "metric", "pyiqa BRISQUE: SVM weights", lambda: (_pyiqa_file("brisque_arch", "url"),)),
    Asset("lpips", "metric", "pyiqa LPIPS (AlexNet trunk and linear heads); also the 'lpips' loss",
          lambda: _lpips_files("lpips"), sources_hint=_BOTH_FILES),
    Asset("lpips-vgg", "metric", "pyiqa LPIPS with a VGG16 trunk", lambda: _lpips_files("lpips-vgg"),
          sources_hint=_BOTH_FILES),
    Asset("dists", "metric", "pyiqa DISTS (VGG16 trunk and learned weights)",
          lambda: (_torchvision_file("VGG16_Weights"), _pyiqa_file("dists_arch", "url")), sources_hint=_BOTH_FILES),
    Asset("musiq", "metric", "pyiqa MUSIQ trained on KonIQ-10k",
          lambda: (_pyiqa_file("musiq_arch", _pyiqa_opts("musiq")["pretrained"]),)),
    Asset("clipiqa", "metric", "pyiqa CLIP-IQA (OpenAI CLIP RN50)", lambda: (_clip_file("RN50"),)),
    Asset("topiq_nr", "metric", "pyiqa TOPIQ no-reference (timm ResNet-50 backbone and TOPIQ heads)",
          lambda: _topiq_files("topiq_nr"), requires=_TIMM, sources_hint=_BOTH_FILES),
    Asset("nima", "metric", "pyiqa NIMA on AVA (timm Inception-ResNet-v2 backbone and NIMA head)",
          lambda: _nima_files("nima"), requires=_TIMM, sources_hint=_BOTH_FILES),
    Asset("perceptual", "loss", "perceptual loss: torchvision VGG19 ImageNet features",
          lambda: (_torchvision_file("VGG19_Weights"),)),
):  # fmt: skip
    ASSETS.register(_asset.name, _asset)


def install_command(name: str) -> str:
    """The command that installs asset ``name`` from a local copy."""
    if name == "niqe":
        return f"lossagent assets install niqe --from {BASICSR_SDIST} (get that file with: {basicsr_download_shell()})"
    return f"lossagent assets install {name} --from PATH"
