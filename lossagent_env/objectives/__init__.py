"""Objectives: what a stage is judged by, as one number ``J`` (higher is better).

An objective is measured on the evaluation images after every stage. It returns the raw
value of each of its metrics (the observation's ``"metrics"``) and ``J``, where every
lower-is-better metric is negated so that a higher ``J`` is always better; the env's
reward is ``J_t - J_{t-1}``. One module per kind (``base``, ``metric``, ``function``,
``composite``, ``text``, ``human``); which objective gives which ``J``: docs/objectives.md.

:func:`make_objective` turns the env's ``objective=`` argument into an objective::

    make_objective("psnr")                       # one metric, weight 1
    make_objective({"psnr": 1.0, "niqe": 0.5})   # J = psnr - 0.5 * niqe
    make_objective(lambda restored, target: -float((restored - target).abs().mean()))
    make_objective(MyObjective())                # any Objective subclass, as is
    make_objective({"niqe": 0.5, TextObjective("sharp fur", judge=m): 0.5})  # composite
"""

from __future__ import annotations

from collections.abc import Mapping

from lossagent_env.errors import ConfigError, UnknownNameError
from lossagent_env.objectives.base import Objective, ObjectiveResult
from lossagent_env.objectives.composite import CompositeObjective
from lossagent_env.objectives.function import CallableObjective
from lossagent_env.objectives.human import FileRater, HumanObjective, TerminalRater
from lossagent_env.objectives.metric import MetricObjective
from lossagent_env.objectives.text import JudgeObjective, TextObjective, TranslateObjective

__all__ = [
    "CallableObjective",
    "CompositeObjective",
    "FileRater",
    "HumanObjective",
    "JudgeObjective",
    "MetricObjective",
    "Objective",
    "ObjectiveResult",
    "TerminalRater",
    "TextObjective",
    "TranslateObjective",
    "make_objective",
]


def make_objective(spec: object) -> Objective:
    """Build an objective from the env's ``objective=`` argument.

    Args:
        spec: One of

            * a metric name (``"psnr"``, ``"niqe"``, any pyiqa name): that metric, weight 1;
            * a dict ``{metric: weight}`` (weights finite, ``>= 0``, one ``> 0``);
            * a dict whose keys are metric names or :class:`Objective` instances, at least
              one an objective: a :class:`CompositeObjective`, each part normalised by the
              span of its ``J``;
            * an :class:`Objective` (returned as is);
            * a callable ``fn(restored, target) -> float``, higher is better.

    Returns:
        The objective.

    Raises:
        UnknownNameError: Unknown metric name (a ``KeyError`` with a "Did you mean"
            hint).
        ConfigError: Anything else (a ``ValueError``); the message says what is
            allowed.

        Both carry ``loc``: ``("objective", metric)`` where one metric is at fault
        (unknown, set-level, a bad weight), else ``("objective",)``.
    """
    try:
        return _make_objective(spec)
    except ConfigError:
        raise
    except KeyError as e:
        raise UnknownNameError(("objective",), e.args[0] if e.args else str(e)) from None
    except ValueError as e:
        raise ConfigError(("objective",), str(e)) from None


def _make_objective(spec: object) -> Objective:
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, str):
        return MetricObjective({spec: 1.0})
    if isinstance(spec, Mapping):
        if any(isinstance(key, Objective) for key in spec):
            return CompositeObjective(spec)
        return MetricObjective(spec)
    if callable(spec):
        name = getattr(spec, "__name__", "")
        return CallableObjective(spec, name=name if name.isidentifier() else "custom")
    raise ValueError(
        f"Cannot build an objective from {spec!r} ({type(spec).__name__}). Allowed: a metric name such as 'psnr', "
        "a dict {metric: weight} (keys may also be Objectives), an Objective, or a callable fn(restored, target) -> float (higher is better)."
    )
