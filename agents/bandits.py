"""Multi-armed bandits over weight presets: epsilon-greedy, UCB1 and Gaussian Thompson.

Each arm is a preset of :func:`agents.presets.weight_presets` (each single loss, pixel
mixes, ESRGAN's mix, uniform). A stage's reward is the objective's improvement, which
shrinks as training goes on (the problem is non-stationary), so every bandit can forget:
``discount=g`` weighs a reward seen ``k`` pulls ago by ``g**k`` (discounted UCB,
Garivier & Moulines 2011), ``window=w`` keeps only the last ``w`` pulls (sliding-window
UCB). Both off by default.

The bandit cores (:class:`EpsilonGreedy`, :class:`UCB1`, :class:`GaussianThompson`) work
without an env: ``select_arm()`` / ``update(arm, reward)``.

Example:
    >>> core = UCB1(3, rng=np.random.default_rng(0))
    >>> arm = core.select_arm(); core.update(arm, 0.7)
"""

from __future__ import annotations

import copy
import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from agents.arguments import TrainEpisodes
from agents.base import BaseAgent, resolve_weights
from agents.presets import weight_presets
from agents.spec import AgentSpec
from agents.tuning import play, training_env
from lossagent_env.arguments import Positive, check_arguments
from lossagent_env.registry import unknown_name_message

__all__ = ["UCB1", "BanditCore", "EpsilonGreedy", "EpsilonGreedyAgent", "GaussianThompson", "ThompsonAgent", "UCBAgent"]


class _CoreArguments(BaseModel):
    """What every bandit core's arguments may be (see :class:`BanditCore`)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    n_arms: Annotated[int, Field(ge=1)]
    discount: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None
    window: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_way_to_forget(self) -> _CoreArguments:
        if self.discount is not None and self.window is not None:
            raise ValueError(
                f"give discount={self.discount!r} or window={self.window!r}, not both. Allowed: one or neither"
            )
        return self


class _NoOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _EpsilonOptions(_NoOptions):
    epsilon: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.1


class _UCBOptions(_NoOptions):
    c: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1.0
    normalize: StrictBool = True


class _ThompsonOptions(_NoOptions):
    prior_strength: Positive = 1.0
    prior_variance: Positive = 1.0


class BanditCore:
    """Reward statistics of ``n_arms`` arms, with optional forgetting.

    Args:
        n_arms: Number of arms (``>= 1``).
        discount: ``g`` in ``(0, 1]``: before each update every statistic is multiplied
            by ``g`` (1 or None = no forgetting).
        window: Keep only the last ``window`` pulls (None = all). Exclusive with
            ``discount``.
        rng: The bandit's own generator (a new unseeded one if None).
        **options: The subclass's own options (:attr:`options`, with their defaults),
            checked here.

    Raises:
        ValueError: ``n_arms`` not an integer ``>= 1``, ``discount`` outside
            ``(0, 1]``, ``window`` not an integer ``>= 1``, both ``discount`` and
            ``window`` given, or (subclasses) an option of the wrong type or range.
    """

    options: ClassVar[type[BaseModel]] = _NoOptions
    """The schema of the subclass's own options (``epsilon``, ``c``, ...)."""

    def __init__(
        self, n_arms: int, *, discount: float | None = None, window: int | None = None,
        rng: np.random.Generator | None = None, **options: Any,
    ) -> None:
        owner = type(self).__name__
        checked = check_arguments(_CoreArguments, owner, {"n_arms": n_arms, "discount": discount, "window": window})
        for name, value in check_arguments(self.options, owner, options):
            setattr(self, name, value)
        self.n_arms = checked.n_arms
        self.discount = checked.discount
        self.window = checked.window
        self.rng = rng if rng is not None else np.random.default_rng()
        self._n = np.zeros(self.n_arms)
        self._s = np.zeros(self.n_arms)
        self._ss = np.zeros(self.n_arms)
        self._recent: deque[tuple[int, float]] = deque(maxlen=window)
        self._low, self._high = math.inf, -math.inf
        self.pulls = np.zeros(self.n_arms, dtype=np.int64)
        """Total pulls of each arm (never forgotten)."""

    # ------------------------------------------------------------ statistics
    def update(self, arm: int, reward: float) -> None:
        """Record ``reward`` (higher is better) for ``arm``.

        Raises:
            ValueError: ``arm`` out of range or ``reward`` not finite.
        """
        if not 0 <= arm < self.n_arms:
            raise ValueError(f"arm={arm!r} is out of range. Allowed: 0 to {self.n_arms - 1}.")
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward={reward!r} must be finite.")
        self.pulls[arm] += 1
        self._low, self._high = min(self._low, reward), max(self._high, reward)
        if self.window is not None:
            self._recent.append((arm, reward))
            return
        if self.discount is not None:
            self._n *= self.discount
            self._s *= self.discount
            self._ss *= self.discount
        self._n[arm] += 1.0
        self._s[arm] += reward
        self._ss[arm] += reward * reward

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Effective) count, sum and sum of squares of every arm, each ``(n_arms,)``."""
        if self.window is None:
            return self._n.copy(), self._s.copy(), self._ss.copy()
        n, s, ss = np.zeros(self.n_arms), np.zeros(self.n_arms), np.zeros(self.n_arms)
        for arm, reward in self._recent:
            n[arm] += 1.0
            s[arm] += reward
            ss[arm] += reward * reward
        return n, s, ss

    @property
    def means(self) -> np.ndarray:
        """Mean reward of every arm (NaN for arms with no data)."""
        n, s, _ = self.stats()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / np.maximum(n, 1e-300), np.nan)

    def noise_variance(self, prior_variance: float = 1.0) -> float:
        """Reward noise variance, pooled over arms from within-arm deviations.

        The variance of all rewards while no arm has two pulls; ``prior_variance``
        before two rewards.
        """
        n, s, ss = self.stats()
        total = n.sum()
        if total < 2:
            return prior_variance
        with np.errstate(invalid="ignore", divide="ignore"):
            within = np.where(n > 0, ss - s * s / np.maximum(n, 1e-300), 0.0)
        dof = total - np.count_nonzero(n > 0)
        if dof >= 1:
            value = float(np.clip(within, 0.0, None).sum() / dof)
        else:
            value = float(max(ss.sum() / total - (s.sum() / total) ** 2, 0.0))
        return max(value, 1e-12)

    def best_arm(self) -> int | None:
        """The arm with the best mean reward (ties broken at random), None while no arm
        has a reward: what a bandit frozen after training plays."""
        means = self.means
        if np.isnan(means).all():
            return None
        return self._argmax(np.nan_to_num(means, nan=-np.inf))

    def _argmax(self, values: np.ndarray) -> int:
        best = np.flatnonzero(values == values.max())
        return int(self.rng.choice(best))

    def _untried(self, n: np.ndarray) -> int | None:
        untried = np.flatnonzero(n <= 0)
        return int(self.rng.choice(untried)) if untried.size else None

    def select_arm(self) -> int:
        """Index of the arm to pull next."""
        raise NotImplementedError


class EpsilonGreedy(BanditCore):
    """Untried arms first; then a random arm with probability ``epsilon``, else the best mean.

    Its option (besides the arguments of :class:`BanditCore`): ``epsilon``, the
    exploration probability in ``[0, 1]`` (default 0.1).
    """

    options = _EpsilonOptions

    epsilon: float

    def select_arm(self) -> int:
        n, s, _ = self.stats()
        untried = self._untried(n)
        if untried is not None:
            return untried
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.n_arms))
        return self._argmax(s / n)


class UCB1(BanditCore):
    """UCB1 (Auer et al. 2002): ``mean_i + c * scale * sqrt(2 ln n / n_i)``.

    Untried arms are pulled first (in random order). With ``discount``/``window`` the
    counts are the effective ones (D-UCB / SW-UCB).

    Options (besides the arguments of :class:`BanditCore`):
        c: Exploration strength (default 1 = UCB1).
        normalize: UCB1 assumes rewards in ``[0, 1]``, but an objective's improvements
            may be of any size. If True (default), ``scale`` is the estimated standard
            deviation of the reward noise (:meth:`BanditCore.noise_variance`; the bound
            of UCB1 for sub-Gaussian rewards), or the range of the rewards seen while
            that is not yet known; if False, ``scale = 1``.
    """

    options = _UCBOptions

    c: float
    normalize: bool

    def indices(self) -> np.ndarray:
        """Upper confidence bound of every arm (inf for untried arms)."""
        n, s, _ = self.stats()
        scale = 1.0
        if self.normalize:
            spread = self._high - self._low
            scale = spread if math.isfinite(spread) and spread > 0 else 1.0
            if n.sum() >= 2:
                scale = math.sqrt(self.noise_variance(prior_variance=scale**2))
        total = max(n.sum(), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            bonus = self.c * scale * np.sqrt(2.0 * math.log(max(total, 1.0)) / n)
            return np.where(n > 0, s / np.maximum(n, 1e-300) + bonus, np.inf)

    def select_arm(self) -> int:
        n, _, _ = self.stats()
        untried = self._untried(n)
        if untried is not None:
            return untried
        return self._argmax(self.indices())


class GaussianThompson(BanditCore):
    """Thompson sampling with Gaussian rewards and a Gaussian prior on each arm's mean.

    Arm ``i``'s mean has posterior ``N((k0 * m0 + S_i) / (k0 + n_i), v / (k0 + n_i))``
    where ``m0`` is the mean of every reward seen so far (0 before any), ``k0`` is
    ``prior_strength`` (in pulls), and ``v`` the reward noise variance, pooled over arms
    from within-arm deviations (the variance of all rewards while no arm has two pulls,
    ``prior_variance`` before two rewards). One sample per arm; the largest wins.

    Options (besides the arguments of :class:`BanditCore`):
        prior_strength: ``k0 > 0`` (default 1).
        prior_variance: Noise variance used before two rewards are seen (default 1).
    """

    options = _ThompsonOptions

    prior_strength: float
    prior_variance: float

    def select_arm(self) -> int:
        n, s, _ = self.stats()
        total = n.sum()
        prior_mean = float(s.sum() / total) if total > 0 else 0.0
        k = self.prior_strength + n
        mean = (self.prior_strength * prior_mean + s) / k
        std = np.sqrt(self.noise_variance(self.prior_variance) / k)
        return self._argmax(self.rng.normal(mean, std))


class _BanditArguments(BaseModel):
    """What a bandit agent's ``presets`` may be: None, names, or ``{name: weights}``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    presets: Any

    @field_validator("presets")
    @classmethod
    def _names_or_arms(cls, presets: Any) -> Any:
        if presets is None or (isinstance(presets, Mapping) and presets):
            return presets
        names = isinstance(presets, Sequence) and not isinstance(presets, str)
        if not names or not presets or not all(isinstance(name, str) for name in presets):
            raise ValueError(
                "not arms. Allowed: None (every preset), a non-empty list of preset names, or {name: weights}"
            )
        repeated = sorted({name for name in presets if list(presets).count(name) > 1})
        if repeated:
            raise ValueError(f"names {repeated} more than once; each arm appears once")
        return presets


_TRAINED: dict[str, tuple[list[BanditCore], list[str], int]] = {}
"""Arm tables trained on a table's training instances, by settings, table, objective and
horizon (see ``_BanditAgent.prepare``)."""


class _TuningArguments(BaseModel):
    """A bandit agent's training budget (see :class:`_BanditAgent`)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    train_episodes: TrainEpisodes = 0
    per_stage: StrictBool = True
    on_test: Literal["frozen", "continue"] = "frozen"


class _BanditAgent(BaseAgent):
    """An agent that pulls preset arms with a :class:`BanditCore`.

    On a preset env (``PresetActions``, ``LossAgent/Tabular-v0``) the arms are the env's
    presets (``presets`` may name a subset).

    Without a training budget (``train_episodes=0``, the default) the bandit starts
    afresh every episode and learns within it. With ``train_episodes=N`` on a table of
    problem instances, it first plays ``N`` episodes (seeds ``0 .. N-1``) on the
    table's *training* instances (:func:`agents.tuning.training_env`), with statistics
    that persist across them: one arm table per stage index (``per_stage``, default),
    or one for all stages. On the episode itself (a test instance) the tables are then
    ``frozen`` (default: the arm with the best mean reward at each stage, no update) or
    ``continue`` to be pulled and updated by the bandit's own rule. The budget is
    :meth:`budget`, recorded in every result row.

    Args:
        presets: Arm names from :func:`agents.presets.weight_presets` (None = all), or
            a mapping ``{name: weights}`` of custom arms (action units).
        discount: Forgetting factor, see :class:`BanditCore`.
        window: Sliding window, see :class:`BanditCore`.
        initial_weights: Weights of the first stage (not an arm; its reward is not
            credited to any arm).
        train_episodes: Training episodes on the training instances (0: none), at
            most :data:`~agents.arguments.MAX_TRAIN_EPISODES` (a larger budget is refused).
        per_stage: One arm table per stage index (True) or one for all stages.
        on_test: ``"frozen"`` or ``"continue"`` (see above).
    """

    core_class: ClassVar[type[BanditCore]] = BanditCore

    def __init__(
        self,
        presets: Sequence[str] | Mapping[str, Sequence[float]] | None = None,
        *,
        discount: float | None = None,
        window: int | None = None,
        initial_weights: Mapping[str, float] | Sequence[float] | None = None,
        train_episodes: int = 0,
        per_stage: bool = True,
        on_test: str = "frozen",
        **core_kwargs: Any,
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        self.presets = presets
        self.discount = discount
        self.window = window
        self.core_kwargs = core_kwargs
        allowed = list(self.core_class.options.model_fields)
        for key in core_kwargs:
            if key not in allowed:
                raise KeyError(
                    unknown_name_message(
                        f"argument of {type(self).__name__}", key,
                        ["presets", "discount", "window", "initial_weights", *_TuningArguments.model_fields, *allowed],
                    )
                )
        # Fail early on bad values, naming this agent.
        owner = type(self).__name__
        check_arguments(_BanditArguments, owner, {"presets": presets})
        check_arguments(_CoreArguments, owner, {"n_arms": 1, "discount": discount, "window": window})
        check_arguments(self.core_class.options, owner, core_kwargs)
        tuning = check_arguments(
            _TuningArguments, owner, {"train_episodes": train_episodes, "per_stage": per_stage, "on_test": on_test}
        )
        self.train_episodes, self.per_stage, self.on_test = tuning.train_episodes, tuning.per_stage, tuning.on_test
        self.arm_names: list[str] = []
        self.arms = np.zeros((0, 0), np.float32)
        self.core: BanditCore | None = None
        self.cores: list[BanditCore] = []
        """The arm tables: one per stage index (``per_stage``) or one; kept across
        episodes when the agent has a training budget."""
        self._arm: int | None = None
        self._trained_on: list[str] | None = None
        self._train_steps = 0
        self._frozen = False

    def prepare(self, env: Any) -> None:
        """Train the arm tables on the training instances (once; see the class docstring),
        or copy those trained in this process with the same settings, table, objective and
        horizon (training does not depend on the episode)."""
        if self.train_episodes == 0 or self._trained_on is not None:
            return
        view = training_env(env, f"{type(self).__name__}(train_episodes={self.train_episodes})")
        key = json.dumps(
            [repr(self), self.presets, view.table.header, view.objective.describe(), view.max_stages],
            sort_keys=True, default=repr,
        )
        if key not in _TRAINED:
            spec = AgentSpec.from_env(view)
            self.cores = []
            for seed in range(self.train_episodes):
                play(view, self, seed, spec)
            _TRAINED[key] = (self.cores, [i.name for i in view.instances], self.train_episodes * spec.max_stages)
        cores, self._trained_on, self._train_steps = copy.deepcopy(_TRAINED[key])
        self.cores = cores
        self._frozen = self.on_test == "frozen"

    def budget(self) -> dict[str, Any] | None:
        """The training budget spent before the episode (None without one)."""
        if self._trained_on is None:
            return None
        return {
            "train_episodes": self.train_episodes,
            "train_steps": self._train_steps,
            "train_instances": list(self._trained_on),
            "on_test": self.on_test,
        }

    def _reset(self) -> None:
        assert self.spec is not None
        if self.spec.discrete:  # a preset env: its presets are the arms
            names = list(self.spec.preset_names)
            wanted = names if self.presets is None else list(self.presets)
            missing = [name for name in wanted if name not in names]
            if missing or isinstance(self.presets, Mapping):
                raise KeyError(unknown_name_message("preset of this env", (missing or wanted)[0], names))
            self.arm_names = wanted
            self.arms = np.array([names.index(n) for n in wanted])
        else:
            if isinstance(self.presets, Mapping):
                arms = {k: resolve_weights(self.spec, v, what=f"preset {k!r}") for k, v in self.presets.items()}
            else:
                available = weight_presets(self.spec)
                wanted = list(available) if self.presets is None else list(self.presets)
                missing = [name for name in wanted if name not in available]
                if missing:
                    raise KeyError(unknown_name_message("weight preset", missing[0], available))
                arms = {name: available[name] for name in wanted}
            if not arms:
                raise ValueError(f"presets={self.presets!r} gives no arm. Allowed: one or more presets.")
            self.arm_names = list(arms)
            self.arms = np.stack(list(arms.values())).astype(np.float32)
        self._new_cores()

    def _new_cores(self) -> None:
        """Fresh arm tables for the episode, or the kept ones (a training budget)."""
        assert self.spec is not None
        tables = self.spec.max_stages if self.train_episodes and self.per_stage else 1
        if not (self.train_episodes and len(self.cores) == tables and self.cores[0].n_arms == len(self.arm_names)):
            self.cores = [
                self.core_class(
                    len(self.arm_names), discount=self.discount, window=self.window, rng=self.rng, **self.core_kwargs
                )
                for _ in range(tables)
            ]
        for core in self.cores:
            core.rng = self.rng  # this episode's generator
        self.core = self.cores[0]
        self._arm = None

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        self.core = self.cores[min(self.t, len(self.cores) - 1)]
        best = self.core.best_arm() if self._frozen else None
        self._arm = self.core.select_arm() if best is None else best
        self._notes = {"arm": self.arm_names[self._arm], "arm_index": self._arm}
        if self.train_episodes:
            self._notes["table"] = "frozen" if self._frozen else "continued"
        return np.copy(self.arms[self._arm])

    def _on_initial(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        self._arm = None

    def _observe(self, action: np.ndarray, reward: float, observation: Any, info: Any) -> None:
        if self._arm is not None and self.core is not None and not self._frozen:
            self.core.update(self._arm, reward)
        self._arm = None

    def __repr__(self) -> str:
        options = {"discount": self.discount, "window": self.window, **self.core_kwargs}
        if self.train_episodes:
            options.update(train_episodes=self.train_episodes, per_stage=self.per_stage, on_test=self.on_test)
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items() if v is not None)
        return f"{type(self).__name__}({shown})"


class EpsilonGreedyAgent(_BanditAgent):
    """Epsilon-greedy over weight presets (see :class:`EpsilonGreedy`, ``epsilon=0.1``)."""

    name = "egreedy"
    core_class = EpsilonGreedy


class UCBAgent(_BanditAgent):
    """UCB1 over weight presets (see :class:`UCB1`; ``c``, ``normalize``)."""

    name = "ucb"
    core_class = UCB1


class ThompsonAgent(_BanditAgent):
    """Gaussian Thompson sampling over weight presets (see :class:`GaussianThompson`)."""

    name = "thompson"
    core_class = GaussianThompson
