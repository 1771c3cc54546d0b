"""An RL policy for the weights: stable-baselines3 PPO trained on the env itself.

Each env step is one training stage, so PPO learns a schedule ``observation -> weights``
from many episodes. The Dict observation (metrics, weights, loss values, progress) is
flattened into one vector and rescaled from each entry's finite bounds to ``[-1, 1]``
(:func:`scaled_flat_observations`), the same transform at training and acting time.

stable-baselines3 is an optional dependency (the ``rl`` extra) imported only when an
agent is trained or loaded.

Example:
    >>> agent = PPOAgent(train_steps=256, n_steps=32).train(lambda: gym.make(...))
    >>> traj = run_episode(env, agent, seed=0)      # acts deterministically
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import logging
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.wrappers import TransformObservation
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator, model_validator

from agents.arguments import TrainSteps
from agents.base import BaseAgent
from agents.tuning import training_env
from lossagent_env.arguments import Finite, Positive, check_arguments
from lossagent_env.device import check_device
from lossagent_env.registry import unknown_name_message
from lossagent_env.tabular import TabularEnv

logger = logging.getLogger(__name__)

__all__ = ["PPOAgent", "scaled_flat_observations"]


def _import_sb3() -> Any:
    try:
        import stable_baselines3
    except ImportError as e:
        raise ImportError("PPOAgent needs stable-baselines3, the 'rl' extra: pip install 'lossagent-env[rl]'") from e
    return stable_baselines3


def _without_metrics(space: spaces.Space) -> tuple[spaces.Space, Callable[[Any], Any]]:
    """The observation space without its ``metrics``, and the map to it."""
    assert isinstance(space, spaces.Dict)
    keys = [k for k in space.spaces if k != "metrics"]
    return spaces.Dict({k: space.spaces[k] for k in keys}), lambda observation: {k: observation[k] for k in keys}


def _scaled_flat(space: spaces.Space, without_metrics: bool = False) -> Callable[[Any], np.ndarray]:
    """The map from an observation of ``space`` to the vector PPO sees (without the
    ``metrics`` entry where ``without_metrics``): Gymnasium's flat vector, each entry
    mapped from its bounds to ``[-1, 1]`` as ``2 * (x - low) / (high - low) - 1`` in
    float64, clipped and cast to ``float32``; an entry with equal bounds maps to 0.
    (Gymnasium's ``RescaleObservation`` computes in float32 in another order, which moves
    some entries by one float32 step, and divides by zero on equal bounds.)"""
    if without_metrics:
        inner, pick = _without_metrics(space)
        scale_inner = _scaled_flat(inner)
        return lambda observation: scale_inner(pick(observation))
    flat_space = spaces.flatten_space(space)
    low = np.asarray(getattr(flat_space, "low", np.inf), dtype=np.float64)
    high = np.asarray(getattr(flat_space, "high", np.inf), dtype=np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(
            "PPOAgent needs finite observation bounds; "
            f"got low={low.tolist()!r}, high={high.tolist()!r}. Allowed: finite boxes."
        )
    span = high - low
    wide = span > 0
    divisor = np.where(wide, span, 1.0)

    def scale(observation: Any) -> np.ndarray:
        flat = np.asarray(spaces.flatten(space, observation), dtype=np.float64)
        scaled = np.where(wide, 2.0 * (flat - low) / divisor - 1.0, 0.0)
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)

    return scale


def scaled_flat_observations(env: gym.Env, without_metrics: bool = False) -> gym.Env:
    """``env`` with the observations PPO sees: flat ``float32`` vectors in ``[-1, 1]``.

    Args:
        env: An env whose observation space (a Dict of Boxes) has finite bounds.
        without_metrics: Leave out the ``metrics`` entry (see :class:`PPOAgent`).

    Returns:
        A ``TransformObservation`` of ``env`` (the map of :func:`_scaled_flat`), with
        observation space ``Box(-1, 1, (flatdim,), float32)``.

    Raises:
        ValueError: The observation space has an infinite bound.
    """
    space = env.observation_space
    size = spaces.flatdim(_without_metrics(space)[0] if without_metrics else space)
    box = spaces.Box(-1.0, 1.0, (size,), np.float32)
    return TransformObservation(env, _scaled_flat(space, without_metrics), box)


@contextlib.contextmanager
def _global_rngs_restored(device: torch.device) -> Iterator[None]:
    """Leave Python's, NumPy's and torch's global RNGs, CUDA's included, as they were
    (stable-baselines3 draws from them all while it trains). A policy on a GPU starts
    CUDA first, so that its generators are restored too; while CUDA has not started,
    nothing in the block may seed it (see :func:`_seed_globals`)."""
    if device.type == "cuda":
        torch.cuda.init()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _seed_globals(seed: int, device: torch.device) -> None:
    """Seed the global RNGs as ``stable_baselines3.PPO(seed=seed)`` does, except CUDA
    before it has started: ``torch.manual_seed`` would queue that seeding until CUDA
    starts, outside :func:`_global_rngs_restored`. So PPO is built with ``seed=None`` and
    seeded here (its env and action space in :meth:`PPOAgent._new_model`)."""
    random.seed(seed)
    np.random.seed(seed)
    if torch.cuda.is_initialized():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


Count = Annotated[int, Field(strict=True, ge=1)]
Fraction = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]

_SET_BY_THE_AGENT = ("policy", "env", "verbose", "_init_setup_model")
"""stable-baselines3 ``PPO`` arguments that the agent itself passes."""


class _PPOOptions(BaseModel):
    """``ppo_kwargs``: further ``stable_baselines3.PPO`` arguments. The ones checked
    here fail inside stable-baselines3 (or silently train nonsense) when wrong; any
    other name must be an argument of ``PPO`` that the agent does not set itself."""

    model_config = ConfigDict(strict=True, extra="allow", arbitrary_types_allowed=True)

    normalize_advantage: StrictBool = True
    gae_lambda: Fraction = 0.95
    clip_range: Any = 0.2
    clip_range_vf: Any = None
    ent_coef: Finite = 0.0
    vf_coef: Finite = 0.5
    max_grad_norm: Positive = 0.5
    target_kl: Positive | None = None

    @field_validator("clip_range", "clip_range_vf")
    @classmethod
    def _number_or_schedule(cls, value: Any, info: ValidationInfo) -> Any:
        if callable(value) or (value is None and info.field_name == "clip_range_vf"):
            return value
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and math.isfinite(value) and value > 0:
            return float(value)
        raise ValueError("should be a finite number > 0, or a schedule (a callable of the remaining progress)")

    @model_validator(mode="after")
    def _names_are_ppo_arguments(self) -> _PPOOptions:
        extra = sorted(self.model_extra or {})
        if not extra:
            return self
        explicit = [k for k in extra if k in PPO_ARGUMENTS or k in _SET_BY_THE_AGENT]
        if explicit:
            raise ValueError(
                f"ppo_kwargs sets {explicit[0]!r}, which PPOAgent sets itself"
                + ("" if explicit[0] in _SET_BY_THE_AGENT else f"; give PPOAgent({explicit[0]}=...) instead")
            )
        known = _sb3_ppo_arguments()
        if known is not None:
            unknown = [k for k in extra if k not in known]
            if unknown:
                raise ValueError(unknown_name_message("argument of stable_baselines3.PPO", unknown[0], known))
        return self


def _sb3_ppo_arguments() -> list[str] | None:
    """The ``stable_baselines3.PPO`` arguments that ``ppo_kwargs`` may set, or None
    without stable-baselines3."""
    if importlib.util.find_spec("stable_baselines3") is None:
        return None
    parameters = inspect.signature(_import_sb3().PPO).parameters
    return sorted(k for k in parameters if k not in _SET_BY_THE_AGENT and k not in PPO_ARGUMENTS)


class _PPOArguments(BaseModel):
    """What :class:`PPOAgent`'s arguments may be."""

    model_config = ConfigDict(strict=True, extra="forbid")

    train_steps: TrainSteps
    n_steps: Count
    batch_size: Count | None
    n_epochs: Count
    learning_rate: Positive
    gamma: Fraction
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]
    device: Any
    train_seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(strict=False, min_length=1)] | None
    ppo_kwargs: _PPOOptions

    @field_validator("device")
    @classmethod
    def _device_is_spelled_right(cls, device: Any) -> str:
        return check_device(device, "device")

    @model_validator(mode="after")
    def _advantages_can_be_normalized(self) -> _PPOArguments:
        # PPO trains on one env: a rollout holds n_steps transitions, and normalizing
        # the advantages of a rollout, or of a minibatch, of one transition divides by 0.
        if not self.ppo_kwargs.normalize_advantage:
            return self
        batch = self.n_steps if self.batch_size is None else self.batch_size
        for name, value in (("n_steps", self.n_steps), ("batch_size", batch)):
            if value < 2:
                raise ValueError(
                    f"{name}={value}: PPO normalizes the advantages of each rollout and minibatch, "
                    f"which needs {name} >= 2 (PPOAgent trains on one env). Allowed: {name} >= 2, "
                    "or ppo_kwargs={'normalize_advantage': False}"
                )
        return self


PPO_ARGUMENTS = tuple(k for k in _PPOArguments.model_fields if k not in ("train_steps", "train_seeds", "ppo_kwargs"))
"""The ``stable_baselines3.PPO`` arguments that PPOAgent takes itself."""


class _TrainArguments(BaseModel):
    """What :meth:`PPOAgent.train` takes."""

    model_config = ConfigDict(strict=True, extra="forbid")

    steps: TrainSteps


_TRAINED: dict[str, tuple[Any, int, list[str] | None, int | None, bool]] = {}
"""Policies trained on designated seeds, by settings and env configuration (see PPOAgent)."""


def _on_instances(env: Any) -> bool:
    """Whether ``env`` replays a table whose instances are split into train and test."""
    splits = getattr(getattr(env, "unwrapped", env), "splits", None)
    return isinstance(splits, dict) and any(splits.values())


class _SeedsInTurn(gym.Wrapper):
    """Every reset starts from one of ``seeds``, drawn by its own generator."""

    def __init__(self, env: gym.Env, seeds: Sequence[int], seed: int):
        super().__init__(env)
        self._seeds = list(seeds)
        self._draw = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        chosen = self._seeds[int(self._draw.integers(len(self._seeds)))]
        return self.env.reset(seed=chosen, options=options)


class PPOAgent(BaseAgent):
    """stable-baselines3 PPO (``MlpPolicy``) over the flattened, rescaled observation.

    Train it with :meth:`train` (or let :func:`agents.run_episode` do it through
    :meth:`prepare`, on the episode's env, if it is not trained yet); it then acts
    deterministically (the policy's mean, clipped to ``[0, 1]``; on a preset env, a
    discrete policy over the presets and its most likely preset).

    With ``train_seeds``, training episodes start from those seeds only (drawn in turn
    by the agent's own generator), so that the policy is scored on other, held-out
    seeds; the split is in the agent's notes. Training then does not depend on the
    episode, and the trained policy is kept for the process: another ``PPOAgent`` with
    the same settings on an env of the same configuration (a table replay for every
    seed and objective of a suite) reuses it instead of training again.

    Args:
        train_steps: Env steps (stages) of training, at most
            :data:`~agents.arguments.MAX_TRAIN_STEPS` (a larger budget is refused).
        n_steps: Steps per rollout (per PPO update).
        batch_size: Minibatch size (default: ``n_steps``).
        n_epochs: Optimisation epochs per update.
        learning_rate: Adam learning rate of the policy.
        gamma: Discount of future rewards.
        seed: Seed of PPO's training (its global seeding is undone afterwards).
        device: Torch device of the policy (``"cpu"`` suits a small MLP).
        train_seeds: Seeds of the training episodes (None: the env's own resets). On a
            table of problem instances (format 2) PPO trains on the table's training
            instances (:func:`agents.tuning.training_env`) whatever the episode's env
            plays, and ``train_seeds`` must be None. Where those replay another
            objective than the episode's (a benchmark's new-objective track), the
            policy observes everything but the metrics (the weights, the loss values,
            the progress): the only observations that mean the same under both.
        ppo_kwargs: Further ``stable_baselines3.PPO`` arguments.
        initial_weights: Weights of the first stage (see :class:`BaseAgent`).

    Raises:
        ValueError: An argument of the wrong type or range (``n_steps`` and
            ``batch_size`` need ``>= 2`` while advantages are normalized, as
            stable-baselines3 does by default), or a ``ppo_kwargs`` name that is not an
            argument of ``stable_baselines3.PPO`` or that PPOAgent sets itself.
        ImportError: stable-baselines3 is missing (install the ``rl`` extra).
    """

    name = "ppo"

    def __init__(
        self,
        train_steps: int = 256,
        *,
        n_steps: int = 32,
        batch_size: int | None = None,
        n_epochs: int = 4,
        learning_rate: float = 3e-4,
        gamma: float = 0.99,
        seed: int = 0,
        device: str = "cpu",
        train_seeds: Sequence[int] | None = None,
        ppo_kwargs: Mapping[str, Any] | None = None,
        initial_weights: Mapping[str, float] | Sequence[float] | None = None,
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        if ppo_kwargs is not None and not isinstance(ppo_kwargs, Mapping):
            raise ValueError(f"PPOAgent(ppo_kwargs={ppo_kwargs!r}): not a mapping. Allowed: {{name: value}}.")
        checked = check_arguments(_PPOArguments, "PPOAgent", {
            "train_steps": train_steps, "n_steps": n_steps, "batch_size": batch_size, "n_epochs": n_epochs,
            "learning_rate": learning_rate, "gamma": gamma, "seed": seed, "device": device,
            "train_seeds": train_seeds, "ppo_kwargs": dict(ppo_kwargs or {}),
        })
        self.train_steps = checked.train_steps
        self.n_steps = checked.n_steps
        self.batch_size = checked.batch_size if checked.batch_size is not None else self.n_steps
        self.n_epochs = checked.n_epochs
        self.learning_rate = checked.learning_rate
        self.gamma = checked.gamma
        self.seed = checked.seed
        self.device = checked.device
        self.ppo_kwargs = dict(ppo_kwargs or {})
        self.train_seeds = checked.train_seeds
        self.model: Any = None
        self.trained_steps = 0
        self.without_metrics = False
        """The policy observes everything but the metrics (trained under another objective)."""
        self._train_instances: list[str] | None = None
        self._stages: int | None = None

    @property
    def is_trained(self) -> bool:
        """True once :meth:`train` or :meth:`load` has given the agent a policy."""
        return self.model is not None

    def train(self, env: gym.Env | Callable[[], gym.Env], *, steps: int | None = None) -> PPOAgent:
        """Train PPO on ``env`` (or a fresh env from the factory ``env``).

        Args:
            env: A LossAgent env, or a zero-argument callable returning one.
            steps: Env steps to train (default: ``train_steps``), at most
                :data:`~agents.arguments.MAX_TRAIN_STEPS`.

        Returns:
            ``self``, trained.
        """
        if steps is not None:
            check_arguments(_TrainArguments, "PPOAgent.train", {"steps": steps})
        steps = steps or self.train_steps
        sb3 = _import_sb3()
        made: gym.Env | None = None
        if isinstance(env, gym.Env) or not callable(env):
            base_env = env
        else:
            base_env = made = env()
        if _on_instances(base_env):
            if self.train_seeds is not None:
                raise ValueError(
                    f"PPOAgent(train_seeds={self.train_seeds!r}) on a table of problem instances: it "
                    "trains on the table's training instances. Allowed: train_seeds=None."
                )
            view = training_env(base_env, "PPOAgent")
            scored = cast(TabularEnv, base_env.unwrapped).objective.describe()
            base_env = view
            self._train_instances = [i.name for i in base_env.instances]
            self._stages = base_env.max_stages
            self.without_metrics = base_env.objective.describe() != scored
        wrapped = scaled_flat_observations(
            base_env if self.train_seeds is None else _SeedsInTurn(base_env, self.train_seeds, self.seed),
            self.without_metrics,
        )
        device = sb3.common.utils.get_device(self.device)
        try:
            with _global_rngs_restored(device):
                if self.model is None:
                    self.model = self._new_model(sb3, wrapped, device)
                else:
                    self.model.set_env(wrapped)
                self.model.learn(total_timesteps=steps, reset_num_timesteps=False)
        finally:
            if made is not None:
                made.close()  # the env made here, not the training view that replaced it
        self.trained_steps += steps
        logger.info("PPOAgent trained for %d env steps (%d in all).", steps, self.trained_steps)
        return self

    def _new_model(self, sb3: Any, env: gym.Env, device: torch.device) -> Any:
        """A stable-baselines3 PPO on ``env``, seeded with ``seed`` as ``PPO(seed=seed)``
        would be (see :func:`_seed_globals`); what it refuses is a ``ValueError`` here."""
        _seed_globals(self.seed, device)
        try:
            model = sb3.PPO(
                "MlpPolicy",
                env,
                n_steps=self.n_steps,
                batch_size=self.batch_size,
                n_epochs=self.n_epochs,
                learning_rate=self.learning_rate,
                gamma=self.gamma,
                seed=None,
                device=device,
                verbose=0,
                **self.ppo_kwargs,
            )
        except AssertionError as e:  # stable-baselines3 checks its arguments with assert
            raise ValueError(f"stable-baselines3 refused the settings of {self!r}: {e}") from e
        model.action_space.seed(self.seed)
        model.env.seed(self.seed)
        return model

    def prepare(self, env: gym.Env) -> None:
        """Train on ``env`` for ``train_steps`` if not trained yet (called by run_episode),
        or reuse a policy trained in this process (see the class docstring)."""
        if self.is_trained:
            return
        key = self._cache_key(env) if self.train_seeds is not None or _on_instances(env) else None
        if key is not None and key in _TRAINED:
            self.model, self.trained_steps, self._train_instances, self._stages, self.without_metrics = _TRAINED[key]
            logger.info("PPOAgent reuses a policy trained for %d steps on this configuration.", self.trained_steps)
            return
        logger.info(
            "PPOAgent is untrained: training it on the episode's env for %d steps first%s.",
            self.train_steps,
            "" if self.train_seeds is None else f" (seeds {self.train_seeds})",
        )
        self.train(env)
        if key is not None:
            _TRAINED[key] = (self.model, self.trained_steps, self._train_instances, self._stages, self.without_metrics)

    def budget(self) -> dict[str, Any] | None:
        """The training budget: env steps (and episodes) before the episode, and where."""
        if not self.trained_steps:
            return None
        out: dict[str, Any] = {"train_steps": self.trained_steps}
        if self._stages:
            out["train_episodes"] = self.trained_steps // self._stages
        if self._train_instances is not None:
            out["train_instances"] = list(self._train_instances)
        elif self.train_seeds is not None:
            out["train_seeds"] = list(self.train_seeds)
        return out

    def _cache_key(self, env: gym.Env) -> str:
        """The settings and the env's configuration, as one string."""
        u = env.unwrapped
        table = getattr(u, "table", None)
        settings = {
            "agent": {k: v for k, v in vars(self).items() if k not in ("model", "trained_steps", "spec", "rng", "_notes", "t", "_train_instances", "_stages", "without_metrics")},
            "env": [type(u).__name__, getattr(getattr(env, "spec", None), "id", None)],
            # on a table of instances the config follows the episode's instance; the table says it all
            "config": u.config.to_dict() if hasattr(u, "config") and not _on_instances(env) else None,
            "objective": u.objective.describe() if hasattr(u, "objective") else None,
            "table": getattr(table, "header", None),
            "presets": getattr(env.action_space, "n", None),
            "max_stages": getattr(u, "max_stages", None),
        }
        return json.dumps(settings, sort_keys=True, default=repr)

    def save(self, path: str | Path) -> None:
        """Save the policy (a stable-baselines3 zip)."""
        if self.model is None:
            raise RuntimeError("PPOAgent.save(): nothing to save; call train() first.")
        self.model.save(str(path))

    def load(self, path: str | Path) -> PPOAgent:
        """Load a policy saved by :meth:`save`; returns ``self``."""
        sb3 = _import_sb3()
        device = sb3.common.utils.get_device(self.device)
        with _global_rngs_restored(device):
            # seed=None: stable-baselines3 would seed the global RNGs with the saved seed
            self.model = sb3.PPO.load(str(path), device=device, seed=None)
        return self

    def _reset(self) -> None:
        if self.model is None:
            raise RuntimeError(
                "PPOAgent has no policy: call agent.train(env_or_env_fn) or agent.load(path) "
                "first (run_episode trains it on the episode's env through prepare())."
            )
        assert self.spec is not None
        expected = self.model.observation_space.shape
        space = self.spec.observation_space
        got = (spaces.flatdim(_without_metrics(space)[0] if self.without_metrics else space),)
        if expected != got:
            raise ValueError(
                f"The PPO policy was trained on observations of shape {expected}; this env gives {got}. "
                "Allowed: an env with the same losses and metrics."
            )

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        assert self.spec is not None
        flat = _scaled_flat(self.spec.observation_space, self.without_metrics)(observation)
        action, _ = self.model.predict(flat, deterministic=True)
        self._notes = {"trained_steps": self.trained_steps}
        if self.train_seeds is not None:
            self._notes["train_seeds"] = list(self.train_seeds)
        if self.spec.discrete:
            return int(np.asarray(action).reshape(()))
        return np.clip(np.asarray(action, dtype=np.float32), 0.0, 1.0)

    def __repr__(self) -> str:
        return f"PPOAgent(train_steps={self.train_steps}, n_steps={self.n_steps})"
