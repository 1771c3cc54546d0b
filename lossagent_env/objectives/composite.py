"""Composite objectives: a weighted sum of objectives whose weights mean what they say.

Each part enters divided by the span of its ``J`` over its bounds, so every part has the
same leverage over its whole range; the rule, the metric names and the feedback of
the parts: see docs/objectives.md ("Composite objectives").

Example::

    make_objective({"niqe": 0.5, TextObjective("sharp fur", judge=model): 0.5})
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from lossagent_env.metrics import OPEN_BOUND
from lossagent_env.objectives.base import Objective, ObjectiveResult, check_finite_j, check_j_bound, check_weight
from lossagent_env.objectives.metric import MetricObjective

__all__ = ["CompositeObjective", "part_scale"]


def part_scale(objective: Objective) -> float:
    """The span of ``J`` over the objective's bounds (docs/objectives.md).

    For a :class:`MetricObjective` the metric weights are used; for any other objective
    each metric counts with weight 1 (their ``J`` is their single metric).
    """
    weights = getattr(objective, "weights", None)
    total = 0.0
    for name in objective.metric_names:
        low, high = objective.bounds[name]
        w = abs(float(weights[name])) if isinstance(weights, Mapping) and name in weights else 1.0
        total += w * (float(high) - float(low))
    return total


class CompositeObjective(Objective):
    """``J = sum_k w_k * J_k / scale_k`` over parts that are objectives or metric names.

    Args:
        parts: ``{objective or metric name: weight}``, non-empty, weights finite
            ``>= 0`` with one ``> 0``.
        scales: Optional ``{index of the part: scale}`` overriding :func:`part_scale`
            (needed for parts with open-ended bounds).

    Attributes:
        parts: The part objectives, in the given order.
        weights: Their weights.
        scales: Their scales.
        prefixes: Prefix of each part's metric names.

    Raises:
        ValueError: Empty parts, a bad weight or scale, or weights so large that ``J``
            could overflow (checked once the parts' metrics are known: here for metric
            parts, at :meth:`setup` for parts that learn theirs there).
        KeyError: Unknown metric name.
    """

    def __init__(self, parts: Mapping[object, float], scales: Mapping[int, float] | None = None):
        super().__init__()
        if not isinstance(parts, Mapping) or not parts:
            raise ValueError(
                f"CompositeObjective needs a non-empty dict {{objective or metric name: weight}}; got {parts!r}."
            )
        self.parts: list[Objective] = []
        self.weights: list[float] = []
        for key, weight in parts.items():
            if not isinstance(key, (str, Objective)):
                raise ValueError(
                    f"Composite part {key!r} is a {type(key).__name__}. Allowed: a metric name or an Objective."
                )
            self.weights.append(check_weight(key, weight))
            self.parts.append(MetricObjective({key: 1.0}) if isinstance(key, str) else key)
        if not any(w > 0 for w in self.weights):
            raise ValueError(f"All weights are 0 in {parts!r}. Allowed: at least one weight > 0.")
        self._given = {key if isinstance(key, str) else repr(key): w for key, w in parts.items()}
        self._overrides = dict(scales or {})
        for index, scale in self._overrides.items():
            if not (isinstance(index, int) and 0 <= index < len(self.parts)) or not (
                isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0
            ):
                raise ValueError(
                    f"scales[{index!r}] = {scale!r}. Allowed: a part index in [0, {len(self.parts)}) "
                    "and a finite scale > 0."
                )
        self.scales: list[float] = []
        self.prefixes: list[str] = []
        self._names: list[dict[str, str]] = []

    def _build_names(self) -> None:
        """Prefixes, metric names, directions, bounds and scales from the parts."""
        used: set[str] = set()
        self.prefixes, self._names, self.scales = [], [], []
        self.lower_better, self.bounds = {}, {}
        for k, part in enumerate(self.parts):
            base = part.metric_names[0] if len(part.metric_names) == 1 else f"part{k}"
            prefix, n = base, 2
            while prefix in used:
                prefix, n = f"{base}_{n}", n + 1
            used.add(prefix)
            self.prefixes.append(prefix)
            mapping = {m: prefix if len(part.metric_names) == 1 else f"{prefix}/{m}" for m in part.metric_names}
            self._names.append(mapping)
            for m, name in mapping.items():
                self.lower_better[name], self.bounds[name] = part.lower_better[m], part.bounds[m]
            scale = self._overrides.get(k, part_scale(part))
            if not (math.isfinite(scale) and 0 < scale < OPEN_BOUND):
                raise ValueError(
                    f"Part {k} ({part!r}) has scale {scale!r} from its bounds {part.bounds}; "
                    f"give scales={{{k}: <typical span of its J>}}."
                )
            self.scales.append(float(scale))
        self.metric_names = tuple(name for mapping in self._names for name in mapping.values())
        check_j_bound(self, self._given)

    def min_image_size(self) -> tuple[int, str | None]:
        """The largest smallest-size of the parts."""
        return max((part.min_image_size() for part in self.parts), key=lambda x: x[0])

    def setup(self, device: str | torch.device = "cpu") -> None:
        """Set up every part, then fix the metric names (translate parts know theirs only now)."""
        for part in self.parts:
            part.setup(device)
        self._build_names()

    def reset(self, seed: int | None = None) -> None:
        for part in self.parts:
            part.reset(seed)

    def evaluate(
        self, restored: torch.Tensor, target: torch.Tensor, *, degraded: torch.Tensor | None = None,
        stage: int = 0, weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """Evaluate every part; ``J`` is the normalised weighted sum (NaN if a part is NaN)."""
        if not self.scales:
            self.setup(restored.device)
        metrics: dict[str, float] = {}
        value = 0.0
        feedback: list[str] = []
        invalid: list[str] = []
        for k, part in enumerate(self.parts):
            result = part.evaluate(restored, target, degraded=degraded, stage=stage, weights=weights)
            for m, v in result.metrics.items():
                metrics[self._names[k][m]] = float(v)
            value += self.weights[k] * float(result.value) / self.scales[k]
            if result.feedback:
                feedback.append(f"[{self.prefixes[k]}] {result.feedback}")
            invalid.extend(self._names[k][m] for m in result.invalid)
        return ObjectiveResult(
            metrics=metrics,
            value=check_finite_j(float(value), self, metrics),
            feedback="\n".join(feedback) if feedback else None,
            invalid=tuple(invalid),
        )

    def metric_layout(self) -> list[dict[str, str]]:
        """For each part, ``{the part's metric name: its name in this objective}``.

        Fixes the names as :meth:`setup` does, without setting the parts up (this works
        for parts that know their metrics before setup: metric names, metric objectives
        and composites of them).
        """
        if not self.scales:
            self._build_names()
        return [dict(names) for names in self._names]

    def combine(self, values: Mapping[str, float]) -> float:
        """``J`` from raw metric values, computed as :meth:`evaluate` computes it.

        Args:
            values: One raw value per name in ``metric_names`` (prefixed as
                ``evaluate`` reports them).

        Raises:
            TypeError: A part has no ``combine`` (a judge's or a person's score cannot
                be computed from metric values).
            KeyError: A metric of the objective has no value.
        """
        value = 0.0
        for k, (part, names) in enumerate(zip(self.parts, self.metric_layout())):
            if not callable(getattr(part, "combine", None)):
                raise TypeError(
                    f"Part {k} ({part!r}) has no combine(); only metric parts (and composites "
                    "of them) can be combined from metric values."
                )
            missing = [name for name in names.values() if name not in values]
            if missing:
                raise KeyError(f"No value for metrics {missing}; the objective needs {list(self.metric_names)}.")
            part_value = part.combine({m: values[name] for m, name in names.items()})
            value += self.weights[k] * float(part_value) / self.scales[k]
        return check_finite_j(float(value), self, values)

    def j_bound(self) -> float:
        """``sum_k w_k * J_bound_k / scale_k``: the largest ``|J|`` over the parts' bounds."""
        return float(sum(w * part.j_bound() / s for w, part, s in zip(self.weights, self.parts, self.scales)))

    def describe(self) -> str:
        if not self.scales:
            self._build_names()
        terms = " + ".join(f"{w:g}*J_{p}/{s:g}" for w, p, s in zip(self.weights, self.prefixes, self.scales))
        lines = [
            (
                "The objective J combines several objectives; each part's J is divided by the span "
                f"of its range so the weights compare like with like: J = {terms}. Higher is better."
            )
        ]
        for prefix, part in zip(self.prefixes, self.parts):
            lines.append(f"Part {prefix}: {part.describe()}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"CompositeObjective({dict(zip(map(repr, self.parts), self.weights))})"
