"""Objectives over a table's panel: from stored metric values to ``J``.

A table stores metric values, not images, so an objective is replayed from the panel
(:func:`panel_objective_of` says which objectives can be); the replay and the analysis
compute ``J`` the same way, here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossagent_env.objectives import (
    CallableObjective,
    CompositeObjective,
    MetricObjective,
    Objective,
    make_objective,
)

__all__ = ["PanelObjective", "panel_objective_of"]


@dataclass(frozen=True)
class PanelObjective:
    """An objective computed from panel values.

    Attributes:
        objective: The objective (its ``bounds``, ``describe()``, ``metric_names``).
        metric_names: The metrics it reports, in order (a callable reports one, named
            after the function, ``"custom"`` for a lambda).
        panel_columns: For each of them, the panel columns it reads.
        compute: ``values (..., P) -> (metrics (..., M), J (...))``.
    """

    objective: Objective
    metric_names: tuple[str, ...]
    panel_columns: tuple[tuple[int, ...], ...]
    compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def panel_objective_of(spec: Any, panel: Sequence[str]) -> PanelObjective:
    """The objective ``spec`` over the panel metrics ``panel``.

    Raises:
        ValueError: A metric outside the panel, or an objective that needs images (the
            message lists what is allowed).
    """
    panel = tuple(panel)
    allowed = (
        f"Allowed: a panel metric name (one of {list(panel)}), a {{metric: weight}} dict of "
        "them, a MetricObjective or a CompositeObjective of panel metrics, or a callable "
        "f(metrics: dict[str, float]) -> float over the panel metrics (a table stores "
        "metric values, not images)."
    )
    if not isinstance(spec, (str, Mapping, Objective)) and not callable(spec):
        raise ValueError(
            f"objective={spec!r} ({type(spec).__name__}) cannot be replayed from a table. {allowed}"
        )
    if callable(spec) and not isinstance(spec, Objective):
        name = getattr(spec, "__name__", "")
        name = name if name.isidentifier() else "custom"
        objective: Objective = CallableObjective(
            spec, name=name,
            description=f"a user-supplied function {name}(metrics) of the metrics {list(panel)}",
        )

        def compute_callable(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            j = np.empty(values.shape[:-1])
            for at in np.ndindex(*j.shape):
                j[at] = _finite(spec(dict(zip(panel, values[at].tolist()))), name)
            return j[..., None], j

        return PanelObjective(objective, (name,), (tuple(range(len(panel))),), compute_callable)

    if isinstance(spec, str):
        _check_panel([spec], panel)
    elif isinstance(spec, Mapping):
        _check_panel([k for k in spec if isinstance(k, str)], panel)
    objective = make_objective(spec)
    sources = _panel_sources(objective, allowed)
    _check_panel(list(sources.values()), panel)
    names = tuple(objective.metric_names)
    columns = [panel.index(sources[name]) for name in names]

    def compute(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chosen = values[..., columns]
        j = np.empty(values.shape[:-1])
        for at in np.ndindex(*j.shape):
            j[at] = objective.combine(dict(zip(names, chosen[at].tolist())))
        return chosen, j

    return PanelObjective(objective, names, tuple((c,) for c in columns), compute)


def _panel_sources(objective: Objective, allowed: str) -> dict[str, str]:
    """``{objective metric name: panel metric it reads}``."""
    if isinstance(objective, MetricObjective):
        return {name: name for name in objective.metric_names}
    if isinstance(objective, CompositeObjective):
        sources = {}
        for part, layout in zip(objective.parts, objective.metric_layout()):
            inner = _panel_sources(part, allowed)
            sources.update({layout[m]: inner[m] for m in part.metric_names})
        return sources
    raise ValueError(
        f"Objective {objective!r} cannot be computed from a table's metric values. {allowed}"
    )


def _check_panel(names: Sequence[str], panel: tuple[str, ...]) -> None:
    missing = [name for name in names if name not in panel]
    if missing:
        raise ValueError(
            f"Metric {missing[0]!r} is not in the table's panel. Allowed: the panel "
            f"metrics {list(panel)}."
        )


def _finite(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Objective function {name!r} returned {value!r}; it must return one number.") from None
    if not math.isfinite(number):
        raise ValueError(f"Objective function {name!r} returned {number!r}; it must return a finite number.")
    return number
