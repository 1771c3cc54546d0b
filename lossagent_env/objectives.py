"""Objectives: what a stage is judged by, as one number ``J`` (higher is better).

An objective is measured on the evaluation images after every stage. It returns the raw
value of each of its metrics (the observation's ``"metrics"``) and ``J``, where every
lower-is-better metric is negated so that a higher ``J`` is always better; the env's
reward is ``J_t - J_{t-1}``.

``make_objective`` turns the env's ``objective=`` argument into an :class:`Objective`::

    make_objective("psnr")                       # one metric, weight 1
    make_objective({"psnr": 1.0, "niqe": 0.5})   # J = psnr - 0.5 * niqe
    make_objective(lambda restored, target: -float((restored - target).abs().mean()))
    make_objective(MyObjective())                # any Objective subclass, as is
    make_objective({"niqe": 0.5, TextObjective("sharp fur", judge=m): 0.5})  # composite

``TextObjective`` (:mod:`lossagent_env.text_objective`), ``HumanObjective``
(:mod:`lossagent_env.human_objective`) and ``CompositeObjective``
(:mod:`lossagent_env.composite`) are importable from here; they are loaded on first use.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lossagent_env.metrics import OPEN_BOUND, Metric, create_metric, metric_info

__all__ = [
    "CallableObjective",
    "CompositeObjective",
    "HumanObjective",
    "MetricObjective",
    "Objective",
    "ObjectiveResult",
    "TextObjective",
    "make_objective",
]

if TYPE_CHECKING:
    from lossagent_env.composite import CompositeObjective
    from lossagent_env.human_objective import HumanObjective
    from lossagent_env.text_objective import TextObjective

logger = logging.getLogger(__name__)

_LAZY = {
    "TextObjective": "lossagent_env.text_objective",
    "HumanObjective": "lossagent_env.human_objective",
    "CompositeObjective": "lossagent_env.composite",
}


def __getattr__(name: str) -> object:
    """Load the text, human and composite objectives on first use (they import more)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class ObjectiveResult:
    """The outcome of one evaluation.

    Attributes:
        metrics: Raw value of each metric of the objective (means over the evaluation
            images), keyed and ordered as ``Objective.metric_names``.
        value: ``J``, higher is better (lower-is-better metrics enter negated).
        feedback: Text for the agent (a judge's critique, a person's comment), or None.
    """

    metrics: dict[str, float]
    value: float
    feedback: str | None = None


class Objective:
    """Base class of objectives.

    Subclasses set the three attributes below in ``__init__`` and implement
    :meth:`evaluate` and :meth:`describe`.

    Attributes:
        metric_names: Keys of the observation's ``"metrics"`` dict, in a fixed order.
        lower_better: For each metric name, True if lower raw values are better.
        bounds: For each metric name, finite ``(low, high)`` for the observation
            ``Box``; raw values are clipped into them in observations only.
    """

    metric_names: tuple[str, ...] = ()
    lower_better: dict[str, bool]
    bounds: dict[str, tuple[float, float]]

    def __init__(self) -> None:
        self.lower_better = {}
        self.bounds = {}

    def setup(self, device: str | torch.device = "cpu") -> None:
        """Create what evaluation needs (metric networks). Called once by the env.

        Raises:
            MissingWeightsError: A metric's weight file is not installed.
        """

    def reset(self, seed: int | None = None) -> None:
        """Called at every ``env.reset``; stateful objectives re-seed here. Default: nothing."""

    def evaluate(
        self,
        restored: torch.Tensor,
        target: torch.Tensor,
        *,
        degraded: torch.Tensor | None = None,
        stage: int = 0,
        weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """Measure the objective on the evaluation images.

        Args:
            restored: ``(N, C, H, W)`` network outputs, values in ``[0, 1]``.
            target: ``(N, C, H, W)`` ground truth in ``[0, 1]``.
            degraded: ``(N, C, h, w)`` network inputs, for objectives that show them.
            stage: Index of the stage just trained (0 after reset).
            weights: Effective loss weights used in the stage, for objectives that
                report them.

        Returns:
            The raw metrics and ``J`` (higher is better).
        """
        raise NotImplementedError

    def describe(self) -> str:
        """A paragraph for the LLM prompt: each metric, its weight, meaning, direction, and ``J``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.metric_names)})"


def _check_weight(metric: object, weight: object) -> float:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, numbers.Real)
        or not math.isfinite(float(weight))
    ):
        raise ValueError(
            f"Weight of metric {metric!r} is {weight!r}. Allowed: a finite number >= 0."
        )
    if weight < 0:
        raise ValueError(
            f"Weight of metric {metric!r} is {weight!r}. Allowed: a finite number >= 0 "
            "(the direction of each metric is known; lower-is-better metrics are negated automatically)."
        )
    return float(weight)


def _format_weight(weight: float) -> str:
    return f"{weight:g}"


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
        KeyError: Unknown metric name (with a "Did you mean" hint).
        ValueError: Empty dict, bad weight, or a metric that cannot score single images.
    """

    def __init__(self, weights: Mapping[str, float]):
        super().__init__()
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError(
                f"MetricObjective needs a non-empty dict {{metric: weight}}; got {weights!r}. "
                "Example: {'psnr': 1.0, 'niqe': 0.5}."
            )
        checked: dict[str, float] = {}
        for name, weight in weights.items():
            info = metric_info(name)
            if info.set_level:
                raise ValueError(
                    f"Metric {name!r} compares sets of images and cannot score a stage."
                )
            checked[name] = _check_weight(name, weight)
        if not any(w > 0 for w in checked.values()):
            raise ValueError(
                f"All weights are 0 in {weights!r}. Allowed: at least one weight > 0."
            )
        self.weights = checked
        self.infos = {name: metric_info(name) for name in checked}
        self.metric_names = tuple(checked)
        self.lower_better = {
            name: info.lower_better for name, info in self.infos.items()
        }
        self.bounds = {name: (info.low, info.high) for name, info in self.infos.items()}
        self._metrics: dict[str, Metric] | None = None
        self._device: torch.device | None = None

    def setup(self, device: str | torch.device = "cpu") -> None:
        """Create (or fetch from the cache) every metric on ``device``.

        Raises:
            MissingWeightsError: A metric's weight file is not installed.
        """
        self._metrics = {
            name: create_metric(name, device) for name in self.metric_names
        }
        self._device = next(iter(self._metrics.values())).device

    def evaluate(
        self,
        restored: torch.Tensor,
        target: torch.Tensor,
        *,
        degraded: torch.Tensor | None = None,
        stage: int = 0,
        weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """Mean of each metric over the images, and ``J``. Deterministic on CPU.

        Sets itself up on ``restored.device`` if :meth:`setup` was not called.
        """
        if self._metrics is None:
            self.setup(restored.device)
        values: dict[str, float] = {}
        for name, metric in self._metrics.items():
            values[name] = float(metric(restored, target).double().mean().item())
        return ObjectiveResult(metrics=values, value=self.combine(values))

    def combine(self, values: Mapping[str, float]) -> float:
        """``J`` from raw metric values: ``sum_i w_i * (-m_i if lower_better else m_i)``.

        Args:
            values: One raw value per name in ``metric_names``.

        Raises:
            KeyError: A metric of the objective has no value.
        """
        missing = [name for name in self.metric_names if name not in values]
        if missing:
            raise KeyError(
                f"No value for metrics {missing}; the objective needs {list(self.metric_names)}."
            )
        return float(
            sum(
                self.weights[name]
                * (-values[name] if self.lower_better[name] else values[name])
                for name in self.metric_names
            )
        )

    def formula(self) -> str:
        """``J`` in symbols, e.g. ``"J = 1*psnr - 0.5*niqe"``."""
        terms = []
        for name in self.metric_names:
            sign = "-" if self.lower_better[name] else "+"
            terms.append(f"{sign} {_format_weight(self.weights[name])}*{name}")
        text = " ".join(terms)
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
            direction = (
                "lower is better, so it enters J negated"
                if info.lower_better
                else "higher is better"
            )
            lines.append(
                f"- {name} (weight {_format_weight(self.weights[name])}; {direction}): {info.description}"
            )
        lines.append(
            f"{self.formula()}. The reward of a stage is the change of J from the previous stage."
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"MetricObjective({self.weights!r})"


class CallableObjective(Objective):
    """An objective given by a function ``fn(restored, target) -> float``, higher is better.

    Args:
        fn: Called with the ``(N, C, H, W)`` restored and target batches in ``[0, 1]``;
            returns one finite number (a float, or a one-element tensor/array).
        name: Key of the value in the observation's ``"metrics"`` (default ``"custom"``).
        bounds: Finite ``(low, high)`` for the observation ``Box``; default
            ``(-1e6, 1e6)``. Values outside are clipped in observations only.
        description: One line for the LLM prompt on what ``fn`` measures.

    Raises:
        ValueError: ``fn`` not callable, empty name, or bad bounds.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor], float],
        name: str = "custom",
        *,
        bounds: tuple[float, float] = (-OPEN_BOUND, OPEN_BOUND),
        description: str | None = None,
    ):
        super().__init__()
        if not callable(fn):
            raise ValueError(
                f"CallableObjective needs a callable fn(restored, target) -> float; got {fn!r}."
            )
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"CallableObjective name must be a non-empty string; got {name!r}."
            )
        low, high = (float(b) for b in bounds)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"bounds must be finite with low < high; got {bounds!r}.")
        self.fn = fn
        self.name = name
        self.description = (
            description or f"a user-supplied function {name}(restored, target)"
        )
        self.metric_names = (name,)
        self.lower_better = {name: False}
        self.bounds = {name: (low, high)}

    def evaluate(
        self,
        restored: torch.Tensor,
        target: torch.Tensor,
        *,
        degraded: torch.Tensor | None = None,
        stage: int = 0,
        weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """Call ``fn(restored, target)``; its value is both the metric and ``J``.

        Raises:
            ValueError: ``fn`` returned something that is not one finite number.
        """
        raw = self.fn(restored, target)
        try:
            value = float(raw.item() if hasattr(raw, "item") else raw)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"Objective function {self.name!r} returned {raw!r}; it must return one number."
            ) from error
        if not math.isfinite(value):
            raise ValueError(
                f"Objective function {self.name!r} returned {value!r}; it must return a finite number."
            )
        return ObjectiveResult(metrics={self.name: value}, value=value)

    def describe(self) -> str:
        return (
            f"The objective J is {self.description}, measured on the evaluation images after every stage; "
            f"a higher J is better. J = {self.name}. The reward of a stage is the change of J from the previous stage."
        )

    def __repr__(self) -> str:
        return f"CallableObjective({self.fn!r}, name={self.name!r})"


def make_objective(spec: object) -> Objective:
    """Build an objective from the env's ``objective=`` argument.

    Args:
        spec: One of

            * a metric name (``"psnr"``, ``"niqe"``, any pyiqa name): that metric,
              weight 1;
            * a dict ``{metric: weight}`` (weights finite, ``>= 0``, one ``> 0``);
            * a dict whose keys are metric names or :class:`Objective` instances, at
              least one an objective: a
              :class:`~lossagent_env.composite.CompositeObjective`, each part
              normalised by the span of its ``J``;
            * an :class:`Objective` (returned as is);
            * a callable ``fn(restored, target) -> float``, higher is better.

    Returns:
        The objective.

    Raises:
        KeyError: Unknown metric name (with a "Did you mean" hint).
        ValueError: Anything else; the message says what is allowed.
    """
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, str):
        return MetricObjective({spec: 1.0})
    if isinstance(spec, Mapping):
        if any(isinstance(key, Objective) for key in spec):
            from lossagent_env.composite import CompositeObjective

            return CompositeObjective(spec)
        return MetricObjective(spec)
    if callable(spec):
        name = getattr(spec, "__name__", "")
        return CallableObjective(spec, name=name if name.isidentifier() else "custom")
    raise ValueError(
        f"Cannot build an objective from {spec!r} ({type(spec).__name__}). Allowed: a metric name such as 'psnr', "
        "a dict {metric: weight} (keys may also be Objectives), an Objective, or a callable fn(restored, target) -> float (higher is better)."
    )
