"""The loss repository: named, described, scaled losses for image restoration.

Every loss maps ``pred`` and ``target`` ``(N, C, H, W)`` in ``[0, 1]`` to its *unweighted*
value (lower is better). The offline set, in the fixed order of :func:`offline_losses`,
with value ranges, scales and how they were measured, and the losses that need weight
files: see docs/env.md ("The loss repository").

Example:
    >>> from lossagent_env.losses import build_loss
    >>> loss = build_loss({"type": "charbonnier", "eps": 1e-3})
    >>> loss.name, loss.scale > 0
    ('charbonnier', True)
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from lossagent_env.errors import MissingWeightsError
from lossagent_env.losses import gan, learned, pixel, structure  # noqa: F401  (registers)
from lossagent_env.losses.base import LOSSES, Loss
from lossagent_env.losses.learned import IQALoss
from lossagent_env.metrics import metric_info

__all__ = ["IQA_PREFIX", "LOSSES", "Loss", "build_loss", "loss_catalogue", "offline_losses"]

IQA_PREFIX = "iqa:"

_OFFLINE_LOSSES = ("l1", "mse", "charbonnier", "ssim", "ms_ssim", "gradient", "fft", "tv", "gan")


def offline_losses() -> tuple[str, ...]:
    """The default loss repository: every loss that needs no downloaded weights.

    The order is fixed (it is the order of the env's action vector by default): pixel
    losses, structural losses, the smoothness prior, the adversarial loss —
    ``("l1", "mse", "charbonnier", "ssim", "ms_ssim", "gradient", "fft", "tv", "gan")``.
    """
    return _OFFLINE_LOSSES


def _parse_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        kwargs = dict(spec)
        if "type" not in kwargs or not isinstance(kwargs["type"], str):
            raise ValueError(
                f"A loss spec dict needs a string 'type'; got {spec!r}. Allowed: "
                "{'type': name, **options}, e.g. {'type': 'charbonnier', 'eps': 1e-3}."
            )
        return kwargs.pop("type"), kwargs
    raise TypeError(
        f"A loss spec must be a name or a dict; got {type(spec).__name__} {spec!r}. "
        "Allowed: 'l1', 'iqa:<metric>', or {'type': name, **options}."
    )


def build_loss(spec: str | Mapping[str, Any]) -> Loss:
    """Build one loss from its spec.

    Args:
        spec: a registered name (``"l1"``), ``"iqa:<pyiqa metric>"``, or a dict
            ``{"type": name, **options}`` whose options go to the loss's constructor
            (``{"type": "charbonnier", "eps": 1e-3}``, ``{"type": "iqa:dists",
            "scale": 0.5}``).

    Returns:
        A new :class:`Loss` on the CPU (move it with ``.to(device)``).

    Raises:
        KeyError: unknown loss name or pyiqa metric; the message suggests the closest.
        ValueError: malformed spec or options the loss does not accept.
        TypeError: a spec that is neither a string nor a dict.
        MissingWeightsError: the loss needs a weight file that is not installed.
    """
    name, kwargs = _parse_spec(spec)
    if name.startswith(IQA_PREFIX):
        metric = name[len(IQA_PREFIX) :]
        if not metric or "metric" in kwargs:
            raise ValueError(
                f"Loss spec {spec!r}: name the pyiqa metric once, after {IQA_PREFIX!r}. "
                "Allowed: 'iqa:<metric>' or {'type': 'iqa:<metric>', **options}."
            )
        return IQALoss(metric=metric, **kwargs)
    cls = LOSSES.get(name)
    if cls is IQALoss and "metric" not in kwargs:
        raise ValueError(
            f"Loss spec {spec!r} names the pyiqa family without a metric. Allowed: 'iqa:<metric>', e.g. 'iqa:dists'."
        )
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as error:
        allowed = [p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")]
        raise ValueError(
            f"Loss {name!r} does not accept the options {sorted(kwargs)!r} ({error}). Allowed: {allowed}."
        ) from error
    return cls(**kwargs)


def loss_catalogue(iqa_metrics: Iterable[str] = ()) -> list[dict[str, Any]]:
    """What the loss repository holds, for ``lossagent losses`` and documentation.

    Args:
        iqa_metrics: pyiqa metrics to list as ``iqa:<metric>`` too.

    Returns:
        One dict per loss — the offline losses in :func:`offline_losses` order, then the
        other registered losses by name (``lpips``, ``perceptual``), then the requested
        ``iqa:`` entries — with keys ``name``, ``description``, ``scale`` (``None`` where
        it is measured when the loss is built, because it depends on the weights),
        ``value_range``, ``needs_weights`` and ``usable_now`` (True if it can be built
        now, offline: its weight files are installed).

    Raises:
        KeyError: an unknown metric in ``iqa_metrics``, with the closest names.
    """
    names = [*offline_losses(), *(n for n in sorted(LOSSES) if n not in offline_losses())]
    rows = []
    for name in names:
        cls = LOSSES.get(name)
        if cls is IQALoss:
            continue  # a family, listed through ``iqa_metrics``
        rows.append(
            {
                "name": name,
                "description": cls.description,
                "scale": None if cls.needs_weights else cls.scale,
                "value_range": cls.value_range,
                "needs_weights": cls.needs_weights,
                "usable_now": bool(cls.weights_installed()),  # True for losses without files
            }
        )
    rows.extend(_iqa_row(metric) for metric in iqa_metrics)
    return rows


def _iqa_row(metric: str) -> dict[str, Any]:
    """A catalogue row for ``iqa:<metric>``.

    Whether it is usable now comes from the asset catalogue when the metric is listed
    there; otherwise the loss is built (without measuring its scale) to find out.
    """
    value_range = IQALoss.value_range_for(metric)  # KeyError with suggestions if unknown
    installed = IQALoss.weights_installed(metric)
    if installed is None:
        try:
            IQALoss(metric=metric, scale=1.0)
        except MissingWeightsError:
            installed = False
        else:
            installed = True
    needs_weights = metric_info(metric).needs_weights
    return {
        "name": f"{IQA_PREFIX}{metric}",
        "description": IQALoss.describe_metric(metric),
        "scale": None,
        "value_range": value_range,
        "needs_weights": needs_weights,
        "usable_now": installed,
    }
