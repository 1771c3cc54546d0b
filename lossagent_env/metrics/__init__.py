"""Objective metrics: the catalogue of pyiqa metrics and cached metric objects.

Each metric declares its direction (``lower_better``), finite observation bounds, whether
it needs the target (full reference) and whether it needs a weight file; see
:mod:`lossagent_env.metrics.catalogue` for the bounds rule. Example::

    from lossagent_env.metrics import create_metric, metric_info, usable_metrics
    psnr = create_metric("psnr")               # cached per (name, device)
    scores = psnr(restored, target)            # (N,) float32 on CPU, higher is better
    metric_info("niqe").lower_better           # True
"""

from __future__ import annotations

from lossagent_env.metrics.catalogue import OPEN_BOUND, MetricInfo, metric_info, metric_names
from lossagent_env.metrics.pyiqa_metric import Metric, clear_cache, create_metric, usable_metrics

__all__ = [
    "OPEN_BOUND",
    "Metric",
    "MetricInfo",
    "clear_cache",
    "create_metric",
    "metric_info",
    "metric_names",
    "usable_metrics",
]
