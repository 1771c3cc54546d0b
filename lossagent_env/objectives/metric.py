"""Objectives made of image-quality metrics: ``J`` is a weighted sum of metric values."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lossagent_env.errors import ConfigError, UnknownNameError
from lossagent_env.metrics import Metric, create_metric, metric_info
from lossagent_env.objectives.base import (
    Objective,
    ObjectiveResult,
    check_finite_j,
    check_j_bound,
    check_weight,
    format_weight,
)

__all__ = ["MetricObjective"]


class MetricObjective(Objective):
    """A weighted sum of image-quality metrics.

    ``J = sum_i w_i * s_i * m_i`` with ``m_i`` the mean of metric ``i`` over the
    evaluation images and ``s_i = -1`` for lower-is-better metrics (niqe, lpips),
    ``+1`` otherwise. Example: psnr 30 and niqe 5 with weights 1 and 0.5 give
    ``J = 30 - 2.5 = 27.5``.

    Args:
        weights: ``{metric name: weight}``, non-empty; names from pyiqa's catalogue
            (:func:`lossagent_env.metrics.metric_names`), weights finite and ``>= 0``,
            at least one ``> 0``. A weight of 0 reports the metric without scoring it.

    Raises:
        UnknownNameError: Unknown metric name (a ``KeyError`` with a "Did you mean"
            hint); its ``loc`` is ``("objective", name)``.
        ConfigError: Empty dict, bad weight, weights so large that ``J`` could overflow
            (``|J|`` above :data:`~lossagent_env.objectives.base.MAX_ABS_J` over the
            metrics' bounds), or a metric that cannot score single images; its ``loc`` is
            ``("objective", name)`` where one metric is at fault, else ``("objective",)``.
    """

    def __init__(self, weights: Mapping[str, float]):
        super().__init__()
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigError(
                ("objective",),
                f"MetricObjective needs a non-empty dict {{metric: weight}}; got {weights!r}. "
                "Example: {'psnr': 1.0, 'niqe': 0.5}."
            )
        checked: dict[str, float] = {}
        for name, weight in weights.items():
            try:
                info = metric_info(name)
            except KeyError as e:
                raise UnknownNameError(("objective", name), e.args[0]) from None
            if info.set_level:
                raise ConfigError(
                    ("objective", name), f"Metric {name!r} compares sets of images and cannot score a stage."
                )
            checked[name] = check_weight(name, weight)
        if not any(w > 0 for w in checked.values()):
            raise ConfigError(("objective",), f"All weights are 0 in {weights!r}. Allowed: at least one weight > 0.")
        self.weights = checked
        self.infos = {name: metric_info(name) for name in checked}
        self.metric_names = tuple(checked)
        self.lower_better = {name: info.lower_better for name, info in self.infos.items()}
        self.bounds = {name: (info.low, info.high) for name, info in self.infos.items()}
        check_j_bound(self, self.weights)
        self._metrics: dict[str, Metric] | None = None
        self._device: torch.device | None = None

    def min_image_size(self) -> tuple[int, str | None]:
        """The largest ``min_size`` of the metrics (ms_ssim: 161, niqe: 96)."""
        return max(((info.min_size, name) for name, info in self.infos.items()), default=(1, None))

    def setup(self, device: str | torch.device = "cpu") -> None:
        """Create (or fetch from the cache) every metric on ``device``.

        Raises:
            MissingWeightsError: A metric's weight file is not installed.
        """
        self._metrics = {name: create_metric(name, device) for name in self.metric_names}
        self._device = next(iter(self._metrics.values())).device

    def evaluate(
        self, restored: torch.Tensor, target: torch.Tensor, *, degraded: torch.Tensor | None = None,
        stage: int = 0, weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """Mean of each metric over the images, and ``J`` (non-numbers as :attr:`ObjectiveResult.invalid` says)."""
        if self._metrics is None:
            self.setup(restored.device)
        assert self._metrics is not None  # set by setup()
        values: dict[str, float] = {}
        invalid: list[str] = []
        for name, metric in self._metrics.items():
            scores = metric(restored, target).double().reshape(-1)
            if not bool(torch.isfinite(scores).all()):
                invalid.append(name)
                scores = self._worst_for_nan(name, scores)
            values[name] = float(scores.mean().item())
        return ObjectiveResult(metrics=values, value=self.combine(values), invalid=tuple(invalid))

    def _worst_for_nan(self, name: str, scores: torch.Tensor) -> torch.Tensor:
        low, high = self.bounds[name]
        worst = high if self.lower_better[name] else low
        scores = torch.where(torch.isnan(scores), torch.full_like(scores, worst), scores)
        scores = torch.where(torch.isposinf(scores), torch.full_like(scores, high), scores)
        return torch.where(torch.isneginf(scores), torch.full_like(scores, low), scores)

    def combine(self, values: Mapping[str, float]) -> float:
        """``J`` from raw metric values: ``sum_i w_i * (-m_i if lower_better else m_i)``.

        Args:
            values: One raw value per name in ``metric_names``.

        Raises:
            KeyError: A metric of the objective has no value.
            ValueError: ``J`` overflows (values far outside the metrics' bounds).
        """
        missing = [name for name in self.metric_names if name not in values]
        if missing:
            raise KeyError(f"No value for metrics {missing}; the objective needs {list(self.metric_names)}.")
        value = sum(
            self.weights[name] * (-values[name] if self.lower_better[name] else values[name])
            for name in self.metric_names
        )
        return check_finite_j(float(value), self, values)

    def j_bound(self) -> float:
        """``sum_i w_i * max(|low_i|, |high_i|)``: the largest ``|J|`` over the bounds."""
        return float(sum(self.weights[name] * max(abs(low), abs(high)) for name, (low, high) in self.bounds.items()))

    def formula(self) -> str:
        """``J`` in symbols, e.g. ``"J = 1*psnr - 0.5*niqe"``."""
        text = " ".join(
            f"{'-' if self.lower_better[name] else '+'} {format_weight(self.weights[name])}*{name}"
            for name in self.metric_names
        )
        return "J = " + (text[2:] if text.startswith("+ ") else "-" + text[2:])

    def describe(self) -> str:
        count = len(self.metric_names)
        plural = "s" if count > 1 else ""
        lines = [
            (
                f"The objective J is a weighted sum of {count} image-quality metric{plural}, "
                "each averaged over the evaluation images after every stage; a higher J is better."
            )
        ]
        for name in self.metric_names:
            info = self.infos[name]
            direction = "lower is better, so it enters J negated" if info.lower_better else "higher is better"
            lines.append(f"- {name} (weight {format_weight(self.weights[name])}; {direction}): {info.description}")
        lines.append(f"{self.formula()}. The reward of a stage is the change of J from the previous stage.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"MetricObjective({self.weights!r})"
