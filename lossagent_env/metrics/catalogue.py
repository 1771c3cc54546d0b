"""The metric catalogue: every pyiqa metric with its direction, bounds and description.

Everything the project knows about a metric sits in this module, next to the one
function that builds the catalogue from pyiqa's ``DEFAULT_CONFIGS``: direction,
reference and score range come from pyiqa's configuration; which types need no weight
file, their smallest input side and the descriptions of common metrics are the tables
below. How a score range becomes finite bounds: docs/objectives.md ("Metric bounds").
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

__all__ = [
    "OPEN_BOUND",
    "SET_LEVEL_TYPES",
    "WEIGHT_FREE_TYPES",
    "MetricInfo",
    "catalogue",
    "metric_info",
    "metric_names",
    "parse_score_range",
]

OPEN_BOUND = 1e6
"""Magnitude used for an open end of a score range (``"0, ~"``)."""

# pyiqa metric types (``metric_opts["type"]``) that compute from the formula alone and
# need no weight file. Measured here: constructing every pyiqa metric with downloads
# refused succeeds for exactly these types.
WEIGHT_FREE_TYPES: frozenset[str] = frozenset(
    {"PSNR", "SSIM", "MS_SSIM", "CW_SSIM", "FSIM", "VIF", "GMSD", "NLPD", "VSI", "MAD", "PIQE", "Entropy"}
)

# Types that score a *set* of images against another set (FID, Inception Score), not one
# image: they cannot be an objective measured per evaluation image.
SET_LEVEL_TYPES: frozenset[str] = frozenset({"FID", "InceptionScore"})

# Smallest image side (pixels) each type accepts, measured on CPU with RGB inputs by
# scanning sizes 4 to 69 and 150 to 169 (4 was the smallest size tried), and for NIQE
# (parameters installed) 8 to 128. A smaller input raises a clear ValueError instead of
# pyiqa's error deep inside. Types not listed: no check (most learned ones resize).
_MIN_SIZE: dict[str, int] = {
    "PSNR": 4,
    "SSIM": 11,
    "MS_SSIM": 161,  # five scales, an 11 px window at the coarsest (161 / 2**4 > 10)
    "CW_SSIM": 64,  # four pyramid levels need log2(side) - 2 >= 4
    "FSIM": 4,
    "VIF": 33,
    "GMSD": 4,
    "NLPD": 4,
    "VSI": 4,
    "MAD": 16,
    "PIQE": 8,
    "Entropy": 4,
    "NIQE": 96,  # one 96 x 96 block at least
}

# One line per metric for a person or an LLM deciding what to optimise. Metrics not
# listed get a line built from pyiqa's configuration.
_DESCRIPTIONS: dict[str, str] = {
    "psnr": "Peak signal-to-noise ratio in dB on RGB against the target; pixel fidelity, favours smooth outputs. Higher is better.",
    "psnry": "PSNR in dB on the luma (Y) channel against the target; pixel fidelity. Higher is better.",
    "ssim": "Structural similarity (luma) with the target: local luminance, contrast and structure, 0 to 1. Higher is better.",
    "ssimc": "Structural similarity on the RGB channels with the target, 0 to 1. Higher is better.",
    "ms_ssim": "Multi-scale SSIM with the target (needs images of at least 161 px): structure across scales, 0 to 1. Higher is better.",
    "cw_ssim": "Complex-wavelet SSIM with the target: structure, tolerant of small shifts, 0 to 1. Higher is better.",
    "fsim": "Feature similarity with the target: phase congruency and gradient magnitude (edges), 0 to 1. Higher is better.",
    "vif": "Visual information fidelity: how much of the target's information survives, about 0 to 1. Higher is better.",
    "gmsd": "Gradient magnitude similarity deviation from the target: edge distortion, about 0 to 0.35. Lower is better.",
    "nlpd": "Normalised Laplacian pyramid distance to the target: perceptual distortion across scales. Lower is better.",
    "vsi": "Visual saliency-induced similarity with the target: saliency, edges and colour, about 0 to 1. Higher is better.",
    "mad": "Most apparent distortion from the target: visible artefacts plus appearance change, 0 to a few hundred. Lower is better.",
    "piqe": "Perception-based no-reference score of blockiness and noise in image blocks, 0 to 100. Lower is better.",
    "entropy": "Shannon entropy of the grey-level histogram (no reference): amount of texture/detail, 0 to 8 bits. Higher means more detail.",
    "niqe": "Naturalness (no reference, images of at least 96 px): distance of local statistics from those of pristine photos; penalises blur, noise and ringing. Lower is better.",
    "niqe_matlab": "NIQE with MATLAB's parameters (no reference): naturalness of local statistics. Lower is better.",
    "ilniqe": "Integrated local NIQE (no reference): naturalness from richer local features. Lower is better.",
    "brisque": "Blind/referenceless spatial quality (no reference): natural-scene statistics scored by an SVM, about 0 to 150. Lower is better.",
    "pi": "Perceptual index (no reference): mix of NIQE and Ma's score used for super-resolution. Lower is better.",
    "nrqm": "Ma's no-reference quality for super-resolution, about 0 to 10. Higher is better.",
    "lpips": "Learned perceptual distance to the target (AlexNet features), 0 to 1; matches human judgement of texture. Lower is better.",
    "lpips-vgg": "Learned perceptual distance to the target (VGG features), 0 to 1. Lower is better.",
    "dists": "Deep structure and texture similarity distance to the target, 0 to 1; tolerant of texture resampling. Lower is better.",
    "pieapp": "Perceptual image-error assessment from pairwise preference, distance to the target. Lower is better.",
    "musiq": "Multi-scale image-quality transformer trained on KonIQ (no reference), about 0 to 100. Higher is better.",
    "clipiqa": "CLIP-based quality from 'good' versus 'bad' photo prompts (no reference), 0 to 1. Higher is better.",
    "clipiqa+": "CLIP-IQA with learned prompts (no reference), 0 to 1. Higher is better.",
    "topiq_nr": "Top-down attention quality network trained on KonIQ (no reference), about 0 to 1. Higher is better.",
    "topiq_fr": "Top-down attention quality network trained on KADID, compared with the target, about 0 to 1. Higher is better.",
    "nima": "Neural image assessment of aesthetics trained on AVA (no reference), 0 to 10. Higher is better.",
    "maniqa": "Multi-dimension attention quality network trained on KonIQ (no reference), about 0 to 1. Higher is better.",
    "hyperiqa": "Hyper-network quality predictor (no reference), about 0 to 1. Higher is better.",
    "dbcnn": "Deep bilinear CNN quality predictor (no reference), about 0 to 1. Higher is better.",
}


@dataclass(frozen=True)
class MetricInfo:
    """What the project knows about one metric.

    Attributes:
        name: pyiqa metric name, e.g. ``"psnr"``.
        lower_better: True if a lower score is better (niqe, lpips); the objective
            negates such metrics so that a higher ``J`` is always better.
        low: Finite lower bound for the observation ``Box`` (:func:`parse_score_range`).
            Values are clipped into ``[low, high]`` in observations only.
        high: Finite upper bound for the observation ``Box``.
        full_reference: True if the metric compares the restored image with the target;
            False for no-reference metrics, which ignore the target.
        needs_weights: True if building the metric needs a weight file.
        description: One line for a person or an LLM: what it measures and which way
            is better.
        min_size: Smallest image side in pixels the metric accepts; smaller inputs
            raise ``ValueError``.
        set_level: True for metrics that compare image *sets* (FID); they cannot score
            single images and ``create_metric`` refuses them.
    """

    name: str
    lower_better: bool
    low: float
    high: float
    full_reference: bool
    needs_weights: bool
    description: str
    min_size: int = 1
    set_level: bool = False


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _parse_end(text: str, what: str) -> tuple[float | None, bool]:
    """``"~40"`` -> ``(40.0, True)``; ``"~"`` -> ``(None, True)``; ``"0"`` -> ``(0.0, False)``."""
    text = text.strip()
    approximate = text.startswith("~")
    number = text.lstrip("~").strip()
    if not number:
        if not approximate:
            raise ValueError(f"Empty end in score range {what!r}. Allowed: a number, '~number' or '~'.")
        return None, True
    if not _NUMBER.match(number):
        raise ValueError(f"Cannot read {text!r} in score range {what!r}. Allowed: a number, '~number' or '~'.")
    return float(number), approximate


def _bound(end: float | None, approximate: bool, span: float | None, outward: float) -> float:
    """One end of a range as a finite bound, moved ``outward`` (-1 or +1) if approximate."""
    if end is None:
        return outward * OPEN_BOUND
    if not approximate:
        return end
    return end + outward * (span if span is not None else max(abs(end), 1.0))


def parse_score_range(score_range: str | None) -> tuple[float, float]:
    """Turn a pyiqa score range into finite observation bounds (rule: docs/objectives.md).

    Args:
        score_range: pyiqa's string, e.g. ``"~0, ~40"``, ``"0, 1"``, ``"0, ~"``, or
            ``"quality: 0, 1; rank: 0, 2"``. ``None`` means unknown: both ends open.

    Returns:
        ``(low, high)``, finite, ``low < high``.

    Raises:
        ValueError: The string cannot be read.
    """
    if score_range is None:
        return -OPEN_BOUND, OPEN_BOUND
    lows: list[float] = []
    highs: list[float] = []
    for part in score_range.split(";"):
        part = part.split(":", 1)[-1]
        ends = part.split(",")
        if len(ends) != 2:
            raise ValueError(
                f"Score range {score_range!r} has a part {part!r} without two ends. "
                "Allowed: 'low, high' parts separated by ';'."
            )
        (lo, lo_approx), (hi, hi_approx) = (_parse_end(e, score_range) for e in ends)
        span = max(hi - lo, 1.0) if lo is not None and hi is not None else None
        lows.append(_bound(lo, lo_approx, span, -1.0))
        highs.append(_bound(hi, hi_approx, span, 1.0))
    low, high = min(lows), max(highs)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"Score range {score_range!r} gives bounds ({low}, {high}); expected finite low < high.")
    return float(low), float(high)


def _describe_generic(name: str, cfg: dict, lower_better: bool) -> str:
    mode = "compared with the target" if cfg["metric_mode"] == "FR" else "no reference"
    direction = "Lower is better" if lower_better else "Higher is better"
    score_range = cfg.get("score_range")
    typical = f", typical range {score_range}" if score_range else ""
    return f"pyiqa metric {name} ({cfg['metric_opts']['type']}, {mode}{typical}). {direction}."


@functools.cache
def catalogue() -> dict[str, MetricInfo]:
    """Every pyiqa metric, keyed by name, built once from pyiqa's ``DEFAULT_CONFIGS``.

    Importing pyiqa takes a few seconds, so this runs on first use, not at import.
    """
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    infos: dict[str, MetricInfo] = {}
    for name, cfg in DEFAULT_CONFIGS.items():
        metric_type = cfg["metric_opts"]["type"]
        lower_better = bool(cfg.get("lower_better") or False)
        low, high = parse_score_range(cfg.get("score_range"))
        infos[name] = MetricInfo(
            name=name,
            lower_better=lower_better,
            low=low,
            high=high,
            full_reference=cfg["metric_mode"] == "FR",
            needs_weights=metric_type not in WEIGHT_FREE_TYPES,
            description=_DESCRIPTIONS.get(name) or _describe_generic(name, cfg, lower_better),
            min_size=_MIN_SIZE.get(metric_type, 1),
            set_level=metric_type in SET_LEVEL_TYPES,
        )
    return infos


def metric_names() -> list[str]:
    """Every pyiqa metric name (pyiqa's ``DEFAULT_CONFIGS``), sorted: the catalogue."""
    return sorted(catalogue())


def metric_info(name: str) -> MetricInfo:
    """The catalogue entry of metric ``name``.

    Raises:
        KeyError: ``name`` is not a pyiqa metric; the message suggests the closest names.
    """
    from lossagent_env.registry import unknown_name_message

    infos = catalogue()
    if not isinstance(name, str) or name not in infos:
        raise KeyError(unknown_name_message("metric", name, infos))
    return infos[name]
