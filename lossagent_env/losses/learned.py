"""Losses that need downloaded weight files: ``perceptual``, ``lpips`` and ``iqa:<metric>``.

Building one first checks that its files in the asset catalogue
(:data:`lossagent_env.assets.ASSETS`) are installed, else raises
:class:`lossagent_env.errors.MissingWeightsError` with the command that installs them;
pyiqa metrics are built inside :func:`lossagent_env.assets.no_downloads`, so nothing is
downloaded at run time. Their ``scale`` depends on the weights, so it is measured when
the loss is built (:func:`lossagent_env.losses.calibration.measure_scale`) unless given
as ``scale=``.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from lossagent_env.errors import MissingWeightsError
from lossagent_env.losses._util import float32_forward
from lossagent_env.losses.base import LOSSES, Loss

if TYPE_CHECKING:
    from lossagent_env.metrics import MetricInfo

__all__ = ["IQALoss", "LPIPSLoss", "PerceptualLoss", "require_asset"]

logger = logging.getLogger(__name__)


def _asset(name: str):
    from lossagent_env.assets import ASSETS

    return ASSETS.get(name)


def require_asset(what: str, asset: str) -> list[Path]:
    """The paths of asset ``asset``'s files, all installed; else ``MissingWeightsError``.

    Args:
        what: the component that needs them, e.g. ``"loss 'perceptual'"``.
        asset: a name in :data:`lossagent_env.assets.ASSETS`.

    Raises:
        MissingWeightsError: for the first file that is not installed; nothing is
            written and no library code runs.
    """
    from lossagent_env.assets import install_command

    entry = _asset(asset)
    missing = entry.missing()
    if missing:
        file = missing[0]
        raise MissingWeightsError(what, file.filename, file.path(), install_command(asset))
    return [file.path() for file in entry.files]


# -- perceptual (VGG19 features) ---------------------------------------------------------

_VGG19_BLOCKS = (2, 2, 4, 4, 4)  # convolutions per block


def _vgg19_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` in order: conv1_1, relu1_1, ..."""
    names = []
    for block, convs in enumerate(_VGG19_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return names


@LOSSES.register("perceptual")
class PerceptualLoss(Loss):
    """L1 distance between VGG19 features of ``pred`` and ``target`` (ESRGAN's loss).

    Inputs are normalised with the ImageNet mean and std and passed through the
    convolutional part of torchvision's VGG19 (``VGG19_Weights.IMAGENET1K_V1``, file
    ``vgg19-dcbb9e9d.pth`` in ``$TORCH_HOME/hub/checkpoints/``), truncated after the
    deepest requested layer; ReLUs run out of place so earlier features stay intact.

    Args:
        layers: ``{layer name: weight}``; names like ``"conv5_4"`` or ``"relu3_4"``.
            Default ``{"conv5_4": 1.0}`` (before activation, as in ESRGAN).
        scale: the loss's scale; measured when built if None.

    Inputs need ``H, W >= 2**(block - 1)`` of the deepest layer.

    Raises:
        MissingWeightsError: the VGG19 weight file is not installed.
    """

    name = "perceptual"
    role = "perceptual"
    autocast_safe = True
    description = (
        "Perceptual (VGG) loss: L1 distance between deep VGG19 features (conv5_4, as in "
        "ESRGAN) of the restored image and the target. Compares what the image shows "
        "(textures, edges, patterns) rather than exact pixels, so it gives sharper, more "
        "natural texture than pixel losses and better perceptual scores (LPIPS, NIQE), "
        "at a small cost in PSNR. Weighted high alone it leaves colour shifts and "
        "checkerboard or grid artefacts; pair it with L1 and optionally a small GAN "
        "weight."
    )
    scale = 1.0  # placeholder: measured when built (depends on the weights)
    # Typical values are 0.5-5 for conv5_4 on [0, 1] images; no useful analytic bound
    # exists, so the bound leaves a wide margin.
    value_range = (0.0, 100.0)
    needs_weights = True

    mean: torch.Tensor  # buffer (1, 3, 1, 1), ImageNet normalisation
    std: torch.Tensor  # buffer (1, 3, 1, 1)

    def __init__(self, layers: Mapping[str, float] | None = None, scale: float | None = None):
        super().__init__()
        from torchvision.models import VGG19_Weights, vgg19

        layers = dict(layers) if layers is not None else {"conv5_4": 1.0}
        names = _vgg19_layer_names()
        unknown = [layer for layer in layers if layer not in names]
        if unknown or not layers:
            raise ValueError(
                f"perceptual layers {list(layers)!r} are not VGG19 layers. Allowed: a "
                f"non-empty dict whose keys are among {names}."
            )
        (path,) = require_asset(f"loss {self.name!r}", self.name)
        last = max(names.index(layer) for layer in layers)
        with torch.device("meta"):  # no memory and no random draws for the unused init
            features = vgg19().features[: last + 1]
        features.to_empty(device="cpu")
        # The file is read directly from where torchvision keeps it (nothing to download).
        # weights_only: it holds plain tensors. mmap (zip-format files only): the 0.5 GB
        # classifier is never read into memory.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        prefix = "features."
        features.load_state_dict(
            {
                key[len(prefix) :]: value
                for key, value in state.items()
                if key.startswith(prefix) and int(key[len(prefix) :].split(".")[0]) <= last
            }
        )
        self.features = features
        for module in self.features:
            if isinstance(module, nn.ReLU):
                module.inplace = False
        self.features.requires_grad_(False).eval()
        self.layer_weights = {names.index(layer): float(w) for layer, w in layers.items()}
        self.layer_names = dict(layers)
        mean = torch.tensor(VGG19_Weights.IMAGENET1K_V1.transforms().mean)
        std = torch.tensor(VGG19_Weights.IMAGENET1K_V1.transforms().std)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.scale = _scale_or_measure(self, scale)

    @classmethod
    def weights_installed(cls) -> bool:
        """True if the VGG19 weight file is where torchvision looks for it."""
        return _asset(cls.name).installed()

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()  # fixed feature extractor
        return self

    def _features(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        x = (images - self.mean) / self.std
        out = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.layer_weights:
                out[index] = x
        return out

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_features = self._features(pred)
        with torch.no_grad():
            target_features = self._features(target)
        total = pred.new_zeros(())
        for index, weight in self.layer_weights.items():
            total = total + weight * (pred_features[index] - target_features[index]).abs().mean()
        return total

    def extra_repr(self) -> str:
        return f"layers={self.layer_names}, scale={self.scale:.4g}"


# -- pyiqa metrics as losses -------------------------------------------------------------


@LOSSES.register("iqa")
class IQALoss(Loss):
    """Any differentiable pyiqa metric as a loss: ``build_loss("iqa:<metric>")``.

    Built with ``pyiqa.create_metric(metric, as_loss=True)`` on the CPU (move it with
    ``.to()``), inside :func:`lossagent_env.assets.no_downloads`. Lower-is-better
    metrics are returned as they are; higher-is-better ones are negated, so the value is
    always something to minimise. No-reference metrics ignore ``target``. Each instance
    sets its ``name`` (``"iqa:<metric>"``), ``description``, ``needs_weights`` and
    ``value_range`` (:meth:`value_range_for`) from the metric catalogue.

    Args:
        metric: a pyiqa metric name (``lossagent_env.metrics.metric_names()``).
        scale: the loss's scale; measured when built if None.
        **metric_kwargs: options passed on to ``pyiqa.create_metric``.

    Raises:
        KeyError: unknown metric (with the closest names).
        MissingWeightsError: a weight file of the metric is not installed.
        ValueError: the metric gives no usable gradient (when the scale is measured).
    """

    name = "iqa"
    role = "perceptual"
    autocast_safe = True
    description = (
        "Used directly as a loss (lower-is-better metrics as they are, higher-is-better "
        "ones negated), it optimises exactly what the metric measures, blind spots "
        "included: deep no-reference metrics can be gamed by adversarial texture or "
        "artefacts, so pair it with a pixel loss."
    )
    scale = 1.0  # placeholder: measured when built
    value_range = (-1e6, 1e6)  # placeholder: set from the metric catalogue when built
    needs_weights = True  # as a family; each instance sets its metric's own flag
    metric_name: ClassVar[str | None] = None  # fixed by subclasses such as ``lpips``

    def __init__(self, metric: str | None = None, scale: float | None = None, **metric_kwargs: Any):
        super().__init__()
        import pyiqa

        # KeyError with suggestions for unknown names (None included)
        info = _metric_info(metric if metric is not None else self.metric_name)
        metric = info.name
        if self.metric_name is None:
            self.name = f"iqa:{metric}"
            self.description = self.describe_metric(metric)
            self.needs_weights = info.needs_weights
        what = f"loss {self.name!r}"
        if _has_asset(metric):
            require_asset(what, metric)
        from lossagent_env.assets import no_downloads

        with no_downloads(what, asset=metric):
            self.metric = pyiqa.create_metric(metric, as_loss=True, device="cpu", **metric_kwargs)
        self.metric.requires_grad_(False)
        self.metric.eval()
        self.metric_id = metric
        self.lower_better = info.lower_better
        self.full_reference = info.full_reference
        self.value_range = self.value_range_for(metric)
        self.scale = _scale_or_measure(self, scale)

    @classmethod
    def value_range_for(cls, metric: str) -> tuple[float, float]:
        """Bounds of the value of ``iqa:<metric>``: the metric's, negated if higher is better.

        Raises:
            KeyError: unknown metric, with the closest names.
        """
        info = _metric_info(metric)
        return (info.low, info.high) if info.lower_better else (-info.high, -info.low)

    @classmethod
    def describe_metric(cls, metric: str) -> str:
        """The description of ``iqa:<metric>``: the catalogue's text, then the generic one."""
        return f"pyiqa metric {metric!r}: {_metric_info(metric).description} {IQALoss.description}"

    @classmethod
    def weights_installed(cls, metric: str | None = None) -> bool | None:
        """True/False if the metric's files are known and (not) installed, None if unknown."""
        metric = metric if metric is not None else cls.metric_name
        if metric is None:
            return None
        if not _metric_info(metric).needs_weights:
            return True
        return _asset(metric).installed() if _has_asset(metric) else None

    def train(self, mode: bool = True) -> IQALoss:
        super().train(mode)
        self.metric.eval()  # a fixed measuring instrument (no dropout)
        return self

    @float32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        score = self.metric(pred, target) if self.full_reference else self.metric(pred)
        score = score.float().mean()
        return score if self.lower_better else -score

    def extra_repr(self) -> str:
        return f"metric={self.metric_id!r}, scale={self.scale:.4g}"


def _metric_info(metric: Any) -> MetricInfo:
    from lossagent_env.metrics import metric_info

    return metric_info(metric)


def _has_asset(name: str) -> bool:
    from lossagent_env.assets import ASSETS

    return name in ASSETS


@LOSSES.register("lpips")
class LPIPSLoss(IQALoss):
    """LPIPS (AlexNet, v0.1) through pyiqa: a learned perceptual distance, lower is better.

    Needs ``alexnet-owt-7be5be79.pth`` (torchvision, ``$TORCH_HOME/hub/checkpoints/``)
    and ``LPIPS_v0.1_alex-df73285e.pth`` (``$TORCH_HOME/hub/pyiqa/``): the asset
    ``lpips``. ``value_range`` is the largest possible value for the installed weights:
    per layer, unit-normalised features differ by at most 2 in norm, so a layer adds at
    most ``4 * max(linear weight)``.

    Args:
        scale: the loss's scale; measured when built if None.
    """

    name = "lpips"
    role = "perceptual"
    autocast_safe = True
    description = (
        "LPIPS: a learned perceptual distance (deep AlexNet features weighted to match "
        "human similarity judgements) between restored image and target. Rewards images "
        "that look like the target to a person: sharper edges and more natural texture "
        "than pixel losses, lower (better) LPIPS and often better no-reference scores, at "
        "some cost in PSNR. Weighted high alone it can leave high-frequency artefacts and "
        "slight colour shifts; pair it with L1."
    )
    value_range = (0.0, 1.0)  # replaced by the exact bound when built
    metric_name = "lpips"

    def __init__(self, scale: float | None = None):
        super().__init__(metric=None, scale=scale)
        bound = 0.0
        for lin in self.metric.net.lins:
            weights = [m.weight for m in lin.modules() if isinstance(m, nn.Conv2d)]
            bound += 4.0 * float(max(w.clamp(min=0).max() for w in weights))
        self.value_range = (0.0, bound)


def _scale_or_measure(loss: Loss, scale: float | None) -> float:
    """``scale`` if given (checked), else the measured gradient ratio against ``l1``."""
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale of {loss.name!r} must be a finite number > 0; got {scale!r}.")
        return float(scale)
    from lossagent_env.losses.calibration import measure_scale

    with torch.random.fork_rng(devices=[]):  # leave the global RNG as it was
        measured = measure_scale(loss)
    logger.info("measured scale of %s: %.4g", loss.name, measured)
    return measured
