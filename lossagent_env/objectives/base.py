"""The objective interface (see :mod:`lossagent_env.objectives`): the base class, its result and its checks."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from lossagent_env.errors import ConfigError

__all__ = [
    "MAX_ABS_J",
    "Objective",
    "ObjectiveResult",
    "check_finite_j",
    "check_j_bound",
    "check_weight",
    "format_weight",
]

MAX_ABS_J = 1e300
"""The largest ``|J|`` an objective may reach over its metrics' bounds. Far above any
useful weighting, and far enough below the largest float (1.8e308) that ``J``, rewards
(differences of ``J``), returns and normalised scores stay finite."""


@dataclass
class ObjectiveResult:
    """The outcome of one evaluation.

    Attributes:
        metrics: Raw value of each metric of the objective (means over the evaluation
            images), keyed and ordered as ``Objective.metric_names``.
        value: ``J``, higher is better (lower-is-better metrics enter negated).
        feedback: Text for the agent (a judge's critique, a person's comment), or None.
        invalid: Metrics that gave a non-number for some image (a collapsed output,
            e.g. PIQE of a flat image): there the value was counted at the metric's
            worst bound (infinities at the bound of their sign). The env reports them
            as ``info["invalid_metrics"]``.
    """

    metrics: dict[str, float]
    value: float
    feedback: str | None = None
    invalid: tuple[str, ...] = ()


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
        self, restored: torch.Tensor, target: torch.Tensor, *, degraded: torch.Tensor | None = None,
        stage: int = 0, weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """Measure the objective on the evaluation images: the contract of every objective.

        The env calls it after reset and after every stage, with the arguments below;
        subclasses override it, and their docstrings say only what they add (how ``J``
        is made, what they raise). An objective that needs :meth:`setup` and has not had
        it sets itself up on ``restored.device``. A call that raises leaves the env as
        it was, so the step can be retried.

        Args:
            restored: ``(N, C, H, W)`` network outputs, values in ``[0, 1]``.
            target: ``(N, C, H, W)`` ground truth in ``[0, 1]``.
            degraded: ``(N, C, h, w)`` network inputs, for objectives that show them.
            stage: Index of the stage just trained (0 after reset).
            weights: Effective loss weights used in the stage (loss name -> weight), for
                objectives that report them.

        Returns:
            An :class:`ObjectiveResult`.
        """
        raise NotImplementedError

    def min_image_size(self) -> tuple[int, str | None]:
        """The smallest image side the objective can measure, and the metric that
        needs it (``(1, None)`` when any size works)."""
        return 1, None

    def combine(self, values: Mapping[str, float]) -> float:
        """``J`` from raw metric values, for objectives that are a function of their
        metrics alone (metric mixes and composites of them); replaying a precomputed
        table uses it.

        Raises:
            NotImplementedError: ``J`` depends on more than the metric values (a judge,
                a person, a function of the images).
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot compute J from metric values alone; it needs the images."
        )

    def j_bound(self) -> float:
        """The largest ``|J|`` over the metrics' bounds: ``sum_i max(|low_i|, |high_i|)``
        for an objective whose ``J`` is its metrics' sum (weighted objectives override it)."""
        return float(sum(max(abs(low), abs(high)) for low, high in self.bounds.values()))

    def describe(self) -> str:
        """A paragraph for the LLM prompt: each metric, its weight, meaning, direction, and ``J``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.metric_names)})"


def check_weight(metric: str | Objective, weight: object) -> float:
    """``weight`` as a float if it is finite and ``>= 0``.

    Args:
        metric: The metric name (or the part of a composite) that ``weight`` belongs to.
        weight: The weight to check.

    Raises:
        ConfigError: Any other weight; ``loc`` is ``("objective", metric)`` for a metric
            name, ``("objective",)`` for an objective.
    """
    loc: tuple[str, ...] = ("objective", metric) if isinstance(metric, str) else ("objective",)
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(float(weight)):
        raise ConfigError(loc, f"Weight of metric {metric!r} is {weight!r}. Allowed: a finite number >= 0.")
    if weight < 0:
        why = " (the direction of each metric is known; lower-is-better metrics are negated automatically)"
        raise ConfigError(loc, f"Weight of metric {metric!r} is {weight!r}. Allowed: a finite number >= 0{why}.")
    return float(weight)


def check_j_bound(objective: Objective, weights: object) -> None:
    """Refuse weights for which ``J`` can overflow over the metrics' bounds.

    Args:
        objective: An objective whose ``bounds`` (and weights) are set.
        weights: What the message shows as the weights at fault.

    Raises:
        ValueError: ``objective.j_bound()`` is not finite or above :data:`MAX_ABS_J`.
    """
    bound = objective.j_bound()
    if not bound <= MAX_ABS_J:  # also catches inf and NaN
        raise ValueError(
            f"Weights {weights!r} let |J| reach {bound:g} within the metrics' bounds "
            f"{objective.bounds}, so J, rewards and returns could overflow to infinity. "
            f"Allowed: weights for which |J| stays at most {MAX_ABS_J:g} there."
        )


def check_finite_j(value: float, objective: Objective, values: Mapping[str, float]) -> float:
    """``J`` as computed, unless it overflowed (NaN passes: a metric not measured).

    Raises:
        ValueError: ``value`` is infinite; the message names the objective and the values.
    """
    if math.isinf(value):
        raise ValueError(
            f"{objective!r} gives J = {value} from the metric values {dict(values)}: the "
            "weights are too large for them. Allowed: weights for which J stays finite."
        )
    return value


def format_weight(weight: float) -> str:
    return f"{weight:g}"
