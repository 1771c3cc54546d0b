"""A synthetic stand-in for a LossAgent env, for fast tests of agents.

:class:`ToyLossEnv` has the observation, info, spaces and snapshot API of
``lossagent_env``'s envs but trains nothing: a scalar "quality" grows at each stage by an
amount that is largest when the action is close to a hidden best mix, and PSNR-like
and LPIPS-like metrics follow it. A stage costs microseconds, so agents can be tested
over hundreds of stages.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["ToyLoss", "ToyLossEnv", "ToyObjective"]


@dataclass(frozen=True)
class ToyLoss:
    """The loss attributes an agent reads."""

    description: str
    scale: float = 1.0
    value_range: tuple[float, float] = (0.0, 10.0)
    role: str = ""


class ToyObjective:
    """``J = psnr - 10 * lpips`` (PSNR higher is better, LPIPS lower is better)."""

    metric_names: ClassVar[tuple[str, ...]] = ("psnr", "lpips")
    lower_better: ClassVar[dict[str, bool]] = {"psnr": False, "lpips": True}
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"psnr": (0.0, 60.0), "lpips": (0.0, 1.0)}

    def describe(self) -> str:
        return (
            "Maximise PSNR (dB, higher is better) while keeping LPIPS low (lower is better): "
            "J = psnr - 10 * lpips."
        )


_LOSSES = {
    "l1": ToyLoss("Mean absolute error between restored and target pixels. Stable; favours PSNR.", role="pixel"),
    "ssim": ToyLoss("One minus SSIM. Preserves local structure and contrast.", scale=0.5, role="structure"),
    "gradient": ToyLoss("Difference of image gradients. Sharpens edges; too much adds ringing.", role="edges"),
    "gan": ToyLoss("Adversarial loss against a patch discriminator. Adds texture; can be unstable.", scale=0.1, role="adversarial"),
}


class ToyLossEnv(gym.Env):
    """A LossAgent-shaped env whose objective is a known function of the action.

    The best action is ``best`` (default ``l1=0.8, ssim=0.5, gradient=0.2, gan=0``); a
    stage adds ``gain * exp(-|a - best|^2 / width)`` (plus noise) to the quality ``q``,
    the gain shrinking with the stage like a real training run. An all-zero action adds
    nothing. ``psnr = 20 + 10 * (1 - exp(-q))``, ``lpips = 0.5 * exp(-q)``.

    Args:
        max_stages: Stages per episode.
        stage_iters: Reported in ``config`` only.
        noise: Standard deviation of the gain noise (from ``np_random``).
        best: The best action, ``(4,)`` in ``[0, 1]``.
        feedback: If True, ``info["feedback"]`` holds a sentence after each step.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        max_stages: int = 5,
        stage_iters: int = 2,
        noise: float = 0.01,
        best: tuple[float, ...] = (0.8, 0.5, 0.2, 0.0),
        feedback: bool = False,
    ) -> None:
        self.loss_names = tuple(_LOSSES)
        self.losses = dict(_LOSSES)
        self.objective = ToyObjective()
        self.config = SimpleNamespace(max_stages=int(max_stages), stage_iters=int(stage_iters), task="sr")
        self.task_description = "super-resolution x2 (undo bicubic down-sampling)"
        self.noise = float(noise)
        self.best = np.asarray(best, dtype=np.float64)
        self.feedback = feedback
        n = len(self.loss_names)
        self.action_space = spaces.Box(0.0, 1.0, (n,), np.float32)
        self.observation_space = spaces.Dict(
            {
                "metrics": spaces.Dict(
                    {m: spaces.Box(np.float32(lo), np.float32(hi), (1,), np.float32) for m, (lo, hi) in ToyObjective.bounds.items()}
                ),
                "weights": spaces.Box(0.0, 1.0, (n,), np.float32),
                "loss_values": spaces.Box(0.0, 10.0, (n,), np.float32),
                "progress": spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )
        self.timings = {"train_seconds": 0.0, "eval_seconds": 0.0}
        self._q = 0.0
        self._stage = 0
        self._action = np.zeros(n, np.float32)

    # ------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._q, self._stage = 0.0, 0
        self._action = np.zeros(len(self.loss_names), np.float32)
        return self._observation(), self._info(False, None)

    def step(self, action: Any):
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape or not self.action_space.contains(action):
            raise ValueError(f"Invalid action {action!r}. Allowed: shape {self.action_space.shape}, in [0, 1].")
        before = self.objective_value()
        if action.any():
            distance = float(np.sum((action - self.best) ** 2))
            gain = 0.6 * np.exp(-distance / 0.3) / (1.0 + 0.3 * self._stage)
            gain += self.noise * float(self.np_random.normal())
            self._q = max(self._q + gain, 0.0)
        self._action = action
        self._stage += 1
        reward = self.objective_value() - before
        text = None
        if self.feedback:
            text = "Edges look soft." if action[2] < 0.2 else "Edges are crisp but there is slight ringing."
        truncated = self._stage >= self.config.max_stages
        return self._observation(), float(reward), False, truncated, self._info(False, text)

    # ------------------------------------------------------------ snapshots
    def get_state(self) -> dict[str, Any]:
        return {
            "q": self._q,
            "stage": self._stage,
            "action": self._action.copy(),
            "np_random": copy.deepcopy(self.np_random.bit_generator.state),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._q = float(state["q"])
        self._stage = int(state["stage"])
        self._action = np.array(state["action"], np.float32)
        self.np_random.bit_generator.state = copy.deepcopy(state["np_random"])

    # ------------------------------------------------------------ internals
    def metrics(self) -> dict[str, float]:
        return {"psnr": 20.0 + 10.0 * (1.0 - np.exp(-self._q)), "lpips": 0.5 * float(np.exp(-self._q))}

    def objective_value(self) -> float:
        m = self.metrics()
        return float(m["psnr"] - 10.0 * m["lpips"])

    def _loss_values(self) -> np.ndarray:
        decay = np.exp(-self._q * np.array([1.0, 0.8, 0.5, 0.2]))
        return (np.array([0.2, 0.4, 0.3, 0.7]) * decay).astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        m = self.metrics()
        return {
            "metrics": {k: np.array([v], np.float32) for k, v in m.items()},
            "weights": self._action.copy(),
            "loss_values": self._loss_values(),
            "progress": np.array([self._stage / self.config.max_stages], np.float32),
        }

    def _info(self, diverged: bool, feedback: str | None) -> dict[str, Any]:
        info = {
            "metrics": {k: float(v) for k, v in self.metrics().items()},
            "objective": self.objective_value(),
            "loss_values": {n: float(v) for n, v in zip(self.loss_names, self._loss_values())},
            "weights": {n: float(a) * self.losses[n].scale for n, a in zip(self.loss_names, self._action)},
            "stage": self._stage,
            "diverged": diverged,
        }
        if feedback is not None:
            info["feedback"] = feedback
        return info
