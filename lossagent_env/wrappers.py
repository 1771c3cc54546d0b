"""Gymnasium wrappers for LossAgent environments.

:class:`PresetActions` gives an env a ``Discrete(K)`` action space over K named weight
presets (the action space of the tabular benchmark). :class:`TensorBoardLogger` writes a
run's trajectory as TensorBoard event files; it works with any agent (it only reads what
the env returns) and is what the benchmark runner puts around every run.

Example and TensorBoard tags: docs/env.md ("Wrappers").
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from lossagent_env.registry import unknown_name_message

__all__ = ["PresetActions", "TensorBoardLogger", "preset_index", "resolve_presets"]

logger = logging.getLogger(__name__)


PresetSpec = Mapping[str, Any] | Sequence[tuple[str, Any]]
"""An ordered ``{name: weights}`` mapping, or a sequence of ``(name, weights)`` pairs."""


class PresetActions(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A ``Discrete(K)`` action space over K named weight presets.

    Action ``i`` plays ``presets[i]``: the env steps with the weight vector
    ``preset_weights[i]`` (action units, ``[0, 1]`` per loss in ``loss_names`` order).
    Observation, reward and the flags are the env's; ``info["preset"]`` is the name of
    the preset just played, and ``None`` after ``reset`` (no preset played yet).

    The wrapper records its ``presets`` in ``env.spec`` (``additional_wrappers``), so
    ``gym.make(env.spec)`` builds the same wrapped env again.

    Example:
        >>> env = PresetActions(gym.make("LossAgent/SuperResolution-v0"),
        ...                     {"pixel": {"l1": 1.0}, "edges": {"l1": 1.0, "gradient": 0.5}})
        >>> env.action_space, env.preset_names
        (Discrete(2), ('pixel', 'edges'))

    Args:
        env: A LossAgent env (possibly wrapped) whose action is the ``Box`` of loss
            weights; its ``unwrapped.loss_names`` give the order. Not an env that
            already has preset actions (``LossAgent/Tabular-v0``, or this wrapper).
        presets: Ordered ``{name: weights}`` (or ``(name, weights)`` pairs); weights are
            a ``{loss: weight}`` dict (losses not named get 0) or a full vector with one
            weight per loss in ``loss_names`` order; every weight in ``[0, 1]``.

    Attributes:
        preset_names: The names, in action order.
        preset_weights: Read-only ``float32`` array ``(K, n_losses)``; row ``i`` is the
            action vector of preset ``i``.

    Raises:
        TypeError: ``env`` is not a LossAgent env with a ``Box`` action of loss weights
            (e.g. it already plays presets), or ``presets`` is not a mapping or a list
            of pairs.
        ValueError: No presets, a repeated or empty name, a vector of the wrong length,
            or a weight outside ``[0, 1]``.
        KeyError: A loss name the env does not have (with a "Did you mean" hint).
    """

    def __init__(self, env: gym.Env, presets: PresetSpec):
        gym.utils.RecordConstructorArgs.__init__(self, presets=presets)
        gym.Wrapper.__init__(self, env)
        loss_names = _weight_env_losses(env)
        self.preset_names, self.preset_weights = resolve_presets(presets, loss_names)
        self.action_space = gym.spaces.Discrete(len(self.preset_names))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        info["preset"] = None
        return obs, info

    def step(self, action: Any):
        """Play preset ``action``.

        Raises:
            ValueError: ``action`` is not an integer in ``[0, K)``; the env is untouched.
        """
        index = preset_index(action, self.preset_names)
        obs, reward, terminated, truncated, info = self.env.step(self.preset_weights[index])
        info["preset"] = self.preset_names[index]
        return obs, reward, terminated, truncated, info


def _weight_env_losses(env: gym.Env) -> tuple[str, ...]:
    """The loss names of an env whose action is one weight per loss.

    Raises:
        TypeError: The env has no ``loss_names``, or its action is not a ``Box`` of one
            weight per loss (an env that already plays presets).
    """
    loss_names = getattr(env.unwrapped, "loss_names", None)
    if loss_names is None:
        raise TypeError(
            f"PresetActions needs a LossAgent env (with loss_names); got {env!r}. Allowed: "
            "e.g. gym.make('LossAgent/SuperResolution-v0')."
        )
    space = env.action_space
    if not (isinstance(space, gym.spaces.Box) and space.shape == (len(loss_names),)):
        presets = getattr(env.unwrapped, "preset_names", None) or getattr(env, "preset_names", None)
        already = f" It already plays presets {list(presets)}: use its actions as they are." if presets else ""
        raise TypeError(
            f"PresetActions needs an env whose action is a Box of {len(loss_names)} loss "
            f"weights; {env!r} has action space {space}.{already} Allowed: a live LossAgent "
            "env such as LossAgent/SuperResolution-v0, not LossAgent/Tabular-v0."
        )
    return tuple(loss_names)


def resolve_presets(presets: PresetSpec, loss_names: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Check presets against an env's losses and turn them into action vectors.

    Args:
        presets: See :class:`PresetActions`.
        loss_names: The env's losses, in action order.

    Returns:
        ``(names, weights)``: the names in order, and a read-only ``float32`` array
        ``(K, len(loss_names))``.

    Raises:
        TypeError, ValueError, KeyError: As :class:`PresetActions`; the message names
            the preset, the bad value and what is allowed.
    """
    loss_names = tuple(loss_names)
    n = len(loss_names)
    if not isinstance(presets, (Mapping, Sequence)) or isinstance(presets, (str, bytes)):
        raise TypeError(
            f"presets={presets!r} ({type(presets).__name__}) is not allowed. Allowed: an "
            "ordered mapping name -> weights, e.g. {'pixel': {'l1': 1.0}}, or a list of "
            "(name, weights) pairs."
        )
    pairs = list(presets.items()) if isinstance(presets, Mapping) else list(presets)
    if not pairs:
        raise ValueError(
            "No presets given. Allowed: an ordered mapping name -> weights with at least "
            "one entry, e.g. {'pixel': {'l1': 1.0}}."
        )
    names: list[str] = []
    rows = np.zeros((len(pairs), n), np.float32)
    for k, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"Preset entry {pair!r} is not a (name, weights) pair.")
        name, weights = pair
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Preset name {name!r} is not allowed. Allowed: a non-empty string.")
        if name in names:
            raise ValueError(f"Preset name {name!r} appears twice. Allowed: each name once.")
        names.append(name)
        if isinstance(weights, (Sequence, np.ndarray)) and not isinstance(weights, str):
            values = list(weights)
            if len(values) != n:
                raise ValueError(
                    f"Preset {name!r} has {len(values)} weights; the env has {n} losses "
                    f"{loss_names}. Allowed: one weight per loss in this order, or a "
                    "{loss: weight} dict."
                )
            weights = dict(zip(loss_names, values))
        elif not isinstance(weights, Mapping):
            raise ValueError(
                f"Preset {name!r} has weights {weights!r}. Allowed: a {{loss: weight}} dict "
                f"or a vector of {n} weights in the order {loss_names}."
            )
        for loss, value in weights.items():
            if loss not in loss_names:
                raise KeyError(f"Preset {name!r}: " + unknown_name_message("loss", loss, loss_names))
            rows[k, loss_names.index(loss)] = _preset_weight(name, loss, value)
    rows.flags.writeable = False
    return tuple(names), rows


def _preset_weight(preset: str, loss: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"Preset {preset!r}: weight of loss {loss!r} is {value!r}. Allowed: a number in [0, 1].")
    return float(value)


def preset_index(action: Any, names: Sequence[str]) -> int:
    """The preset index an action stands for, checked as ``Discrete(len(names))`` does.

    Args:
        action: A Python or NumPy integer (or a 0-d integer array).
        names: The preset names, in action order.

    Raises:
        ValueError: ``action`` is not an integer in ``[0, len(names))``.
    """
    integer = isinstance(action, (int, np.integer)) or (
        isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu"
    )
    index = int(action) if integer and not isinstance(action, (bool, np.bool_)) else None
    if index is None or not 0 <= index < len(names):
        choices = ", ".join(f"{i}={name!r}" for i, name in enumerate(names))
        raise ValueError(
            f"Invalid action {action!r}. Allowed: an integer in [0, {len(names)}), one per preset ({choices})."
        )
    return index


class TensorBoardLogger(gym.Wrapper):
    """Logs every stage of a LossAgent env to TensorBoard.

    ``global_step`` is the stage (the number of ``step`` calls since the wrapper was
    built); the tags are listed in docs/env.md ("Wrappers").

    Args:
        env: A LossAgent env (possibly wrapped).
        logdir: Directory of the event files (created if missing).
        image_every: Log the comparison image every this many stages and at the end of
            each episode; 0 disables images. Needs ``render_mode="rgb_array"``.
        run_config: Extra entries for the configuration table (agent, seed, suite...).
        flush_secs: How often the writer flushes to disk.

    Raises:
        ValueError: ``image_every`` is negative.
    """

    def __init__(
        self,
        env: gym.Env,
        logdir: str | os.PathLike[str],
        image_every: int = 5,
        run_config: Mapping[str, Any] | None = None,
        flush_secs: int = 10,
    ):
        super().__init__(env)
        if not isinstance(image_every, int) or isinstance(image_every, bool) or image_every < 0:
            raise ValueError(f"image_every={image_every!r} is not allowed. Allowed: an integer >= 0")
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = os.fspath(logdir)
        self.image_every = image_every
        self.run_config = dict(run_config or {})
        self.writer = SummaryWriter(self.logdir, flush_secs=flush_secs)
        self.global_step = 0
        self._episode_return = 0.0
        self._episode_length = 0
        self._config_logged = False
        self._warned_no_render = False
        self._closed = False

    # ----------------------------------------------------------------- env API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode_return = 0.0
        self._episode_length = 0
        if not self._config_logged:
            self.writer.add_text("config", config_markdown(self._config_items(seed)), 0)
            self._config_logged = True
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.global_step += 1
        step = self.global_step
        self._episode_return += float(reward)
        self._episode_length += 1
        add = self.writer.add_scalar
        for section, key in (("weights", "weights"), ("losses", "loss_values"), ("metrics", "metrics")):
            for name, value in info.get(key, {}).items():
                add(f"{section}/{name}", float(value), step)
        if "objective" in info:
            add("objective", float(info["objective"]), step)
        add("reward", float(reward), step)
        add("diverged", float(bool(info.get("diverged", False))), step)
        timings = getattr(self.env.unwrapped, "timings", None) or {}
        for key in ("train_seconds", "eval_seconds"):
            if key in timings:
                add(f"perf/{key}", float(timings[key]), step)
        iters = getattr(getattr(self.env.unwrapped, "config", None), "stage_iters", None)
        train_s = float(timings.get("train_seconds", 0.0))
        if iters and train_s > 0:
            add("charts/SPS", iters / train_s, step)
        feedback = info.get("feedback")
        if feedback:
            self.writer.add_text("objective/feedback", str(feedback), step)
        done = terminated or truncated
        if self.image_every and (step % self.image_every == 0 or done):
            self._log_image(step)
        if done:
            add("charts/episodic_return", self._episode_return, step)
            add("charts/episodic_length", float(self._episode_length), step)
            self.writer.flush()
        return obs, reward, terminated, truncated, info

    def close(self):
        """Flush and close the writer, then close the env."""
        if not self._closed:
            self.writer.close()
            self._closed = True
        super().close()

    # ----------------------------------------------------------------- extra logging

    def log_text(self, tag: str, text: str, step: int | None = None) -> None:
        """Add a text entry (e.g. ``agent/rationale``) at ``step`` (default: this stage)."""
        self.writer.add_text(tag, text, self.global_step if step is None else step)

    def log_scalar(self, tag: str, value: SupportsFloat, step: int | None = None) -> None:
        """Add one scalar (e.g. ``agent/latency_s``) at ``step`` (default: this stage)."""
        self.writer.add_scalar(tag, float(value), self.global_step if step is None else step)

    def log_notes(self, notes: Mapping[str, Any], step: int | None = None) -> None:
        """Log an agent's stage notes: numbers as ``agent/<key>`` scalars, text as text.

        Booleans become 0/1; nested dicts become ``agent/<key>/<sub>``; ``None`` and
        lists are skipped (they have no single value to plot).
        """
        for key, value in notes.items():
            tag = f"agent/{key}"
            if isinstance(value, Mapping):
                self.log_notes({f"{key}/{k}": v for k, v in value.items()}, step)
            elif isinstance(value, (bool, np.bool_)):
                self.log_scalar(tag, float(value), step)
            elif isinstance(value, (int, float, np.integer, np.floating)):
                if math.isfinite(float(value)):
                    self.log_scalar(tag, value, step)
            elif isinstance(value, str) and value:
                self.log_text(tag, value, step)

    # ----------------------------------------------------------------- helpers

    def _config_items(self, seed: int | None) -> dict[str, Any]:
        items: dict[str, Any] = {"env_id": getattr(self.env.spec, "id", None), "seed": seed}
        config = getattr(self.env.unwrapped, "config", None)
        if config is not None:
            if hasattr(config, "to_dict"):
                items.update(config.to_dict())
            elif dataclasses.is_dataclass(config) and not isinstance(config, type):
                items.update(dataclasses.asdict(config))
        names = getattr(self.env.unwrapped, "loss_names", None)
        if names is not None:
            items["loss_names"] = list(names)
        items.update(self.run_config)
        return items

    def _log_image(self, step: int) -> None:
        if self.env.render_mode != "rgb_array":
            if not self._warned_no_render:
                logger.warning(
                    "TensorBoardLogger(image_every=%d) needs render_mode='rgb_array' (got %r); no images are logged.",
                    self.image_every,
                    self.env.render_mode,
                )
                self._warned_no_render = True
            return
        frame = self.env.render()
        if frame is None:
            return
        self.writer.add_image("images/comparison", np.asarray(frame), step, dataformats="HWC")


def config_markdown(items: Mapping[str, Any]) -> str:
    """A two-column Markdown table ``| key | value |`` (pipes in values escaped)."""
    lines = ["| key | value |", "|---|---|"]
    for key, value in items.items():
        text = str(value).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {key} | {text} |")
    return "\n".join(lines)
