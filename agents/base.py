"""The agent protocol and the plumbing the agents of this package share.

Every agent family (fixed weights, random, bandits, DWA, PPO, PBT, the LLM agent)
implements :class:`Agent`; :func:`agents.episode.run_episode` drives any of them on a
LossAgent env. :class:`BaseAgent` keeps the spec, the agent's own generator and the
stage counter; :func:`resolve_weights` turns weight arguments into action vectors.
:class:`~agents.spec.AgentSpec`, :class:`~agents.trajectory.Stage` and
:class:`~agents.trajectory.Trajectory` are importable from here too. An example of
:func:`~agents.episode.run_episode` is in :mod:`agents`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from agents.spec import AgentSpec, preset_choice
from agents.trajectory import Stage, Trajectory
from lossagent_env.actions import check_weights
from lossagent_env.registry import unknown_name_message

__all__ = [
    "Agent",
    "AgentSpec",
    "BaseAgent",
    "InvalidActionError",
    "Stage",
    "Trajectory",
    "agent_name",
    "preset_choice",
    "resolve_action",
    "resolve_weights",
]


@runtime_checkable
class Agent(Protocol):
    """What :func:`run_episode` needs from an agent.

    Optional methods, used when present:

    * ``notes() -> dict``: what the agent wants recorded for its last decision
      (rationale, retries, corrections, fallbacks, tokens, latency, chosen arm, ...).
      Values must be JSON types (numbers, strings, bools, None, lists, dicts).
    * ``prepare(env)``: called once by :func:`run_episode` before ``env.reset``, for
      agents that need the env itself (PPO trains on it if untrained; PBT time-shares it
      between the members of its population through ``get_state``/``set_state``).
    """

    def reset(self, spec: AgentSpec, seed: int | None) -> None:
        """Start a new episode: forget the last one, seed the agent's own RNG."""

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        """Return the next action: ``float32`` of shape ``(n_losses,)`` in ``[0, 1]``, or
        on a preset env the index of a preset."""

    def observe(
        self, action: np.ndarray | int, reward: float, observation: Mapping[str, Any], info: Mapping[str, Any],
        terminated: bool, truncated: bool,
    ) -> None:
        """Learn from the outcome of ``action`` (reward: higher is better)."""


class InvalidActionError(ValueError):
    """An agent returned an action outside the env's action space."""


def agent_name(agent: Any) -> str:
    """The agent's ``name`` attribute, else its class name."""
    return str(getattr(agent, "name", None) or type(agent).__name__)


def resolve_weights(
    spec: AgentSpec, weights: Mapping[str, float] | Sequence[float] | np.ndarray, *, what: str = "weights"
) -> np.ndarray:
    """Turn a weight dict or vector into an action vector.

    Args:
        spec: The env's spec (gives the loss order).
        weights: ``{loss name: weight}`` (missing losses get 0) or a sequence of
            ``n_losses`` weights in the order of ``spec.loss_names``. Weights are in
            action units, ``[0, 1]``.
        what: Name used in error messages.

    Returns:
        ``float32`` array of shape ``(n_losses,)``.

    Raises:
        KeyError: A dict names an unknown loss (the message suggests the closest).
        ValueError: Wrong length, or a weight outside ``[0, 1]`` or not finite.
    """
    names = spec.loss_names
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise KeyError(unknown_name_message("loss", unknown[0], names))
        weights = [weights.get(n, 0.0) for n in names]
    return check_weights(weights, names, what)


def resolve_action(spec: AgentSpec, value: Any, *, what: str) -> np.ndarray | int | None:
    """``value`` as an action: on a preset env a preset's index (``value`` a name or an
    index), else weights (:func:`resolve_weights`); None stays None."""
    if value is None:
        return None
    if spec.discrete:
        return preset_choice(value, spec.preset_names)
    return resolve_weights(spec, value, what=what)


class BaseAgent:
    """Shared plumbing for the agents in this package.

    Subclasses implement :meth:`_act` (and optionally :meth:`_reset`,
    :meth:`_observe`). This class keeps the spec, the agent's own
    ``np.random.Generator`` (seeded in :meth:`reset`; global RNGs are never touched),
    the stage counter and the notes of the last decision, and plays ``initial_weights``
    at the first stage when given.

    Args:
        initial_weights: Weights (action units) of the first stage, as a dict or a
            vector; ``None`` lets the agent decide from the start.
    """

    name: ClassVar[str] = "agent"

    def __init__(self, *, initial_weights: Mapping[str, float] | Sequence[float] | None = None) -> None:
        self.initial_weights = initial_weights
        self.spec: AgentSpec | None = None
        self.rng = np.random.default_rng()
        self.t = 0
        self._notes: dict[str, Any] = {}
        self._initial: np.ndarray | int | None = None

    def reset(self, spec: AgentSpec, seed: int | None) -> None:
        """Start an episode on an env described by ``spec``, with ``seed``."""
        self.spec = spec
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self._notes = {}
        self._initial = resolve_action(spec, self.initial_weights, what="initial_weights")
        self._reset()

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        """See :meth:`Agent.act`; plays ``initial_weights`` first where given."""
        if self.spec is None:
            raise RuntimeError(f"{type(self).__name__}.act() was called before reset(spec, seed).")
        self._notes = {}
        if self.t == 0 and self._initial is not None:
            self._notes = {"source": "initial_weights"}
            self._on_initial(observation, info)
            return np.copy(self._initial)
        action = self._act(observation, info)
        if self.spec.discrete:
            return int(action)
        return np.asarray(action, dtype=np.float32)

    def observe(
        self, action: np.ndarray | int, reward: float, observation: Mapping[str, Any], info: Mapping[str, Any],
        terminated: bool, truncated: bool,
    ) -> None:
        """Record the outcome of ``action`` and advance the stage counter."""
        if self.spec is not None and self.spec.discrete:
            played: Any = int(np.asarray(action).reshape(()))
        else:
            played = np.asarray(action, dtype=np.float32)
        self._observe(played, float(reward), observation, info)
        self.t += 1

    def notes(self) -> dict[str, Any]:
        """What this agent wants recorded for its last decision."""
        return dict(self._notes)

    # ------------------------------------------------------------ for runners
    @classmethod
    def uses_embedded_model(cls, kwargs: Mapping[str, Any]) -> bool:
        """Whether an agent of this class built with ``kwargs`` asks the embedded chat model.

        That model's server runs in the agent's process, on that process's cores, and is
        shared by every agent there; a runner with a pool of processes therefore runs
        such agents in its main process, one after another, with every core. False here.
        """
        return False

    @classmethod
    def start_embedded_model(cls, kwargs: Mapping[str, Any]) -> None:
        """Start, in this process, the embedded model that an agent built with ``kwargs``
        will ask, so that its first decision does not wait for it to load; nothing where
        :meth:`uses_embedded_model` is False (here, always)."""

    # ------------------------------------------------------------ for subclasses
    def _reset(self) -> None:
        """Per-episode state of the subclass."""

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        raise NotImplementedError

    def _on_initial(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        """Called instead of :meth:`_act` when ``initial_weights`` are played."""

    def _observe(
        self, action: np.ndarray, reward: float, observation: Mapping[str, Any], info: Mapping[str, Any]
    ) -> None:
        """Learn from the outcome of ``action``."""

    def _needs_continuous_weights(self, why: str) -> None:
        """Refuse a preset env, saying why this agent needs a weight vector."""
        assert self.spec is not None
        if self.spec.discrete:
            raise ValueError(
                f"{type(self).__name__} needs continuous weights (a Box action space): {why}. "
                f"This env plays one of the presets {list(self.spec.preset_names)}; use fixed, "
                "random, egreedy, ucb, thompson, ppo or llm on it."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
