"""The LossAgent environment: one step trains a restoration network for one stage."""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lossagent_env.actions import check_weights
from lossagent_env.backbones import build_backbone
from lossagent_env.config import EnvConfig
from lossagent_env.data import PatchSampler, load_dataset, make_eval_set, make_test_set
from lossagent_env.device import resolve_device
from lossagent_env.errors import ConfigError
from lossagent_env.losses import build_loss, offline_losses
from lossagent_env.objectives import Objective, make_objective
from lossagent_env.seeds import check_seed
from lossagent_env.tasks import TASKS, make_degradation
from lossagent_env.trainer import Trainer, parameters_finite

ObsType = dict[str, Any]


class LossAgentEnv(gym.Env[ObsType, np.ndarray]):
    """Train an image-restoration network with agent-chosen loss weights.

    ## Description
    A restoration network (``backbone``) learns to undo a degradation (``task``):
    bicubic down-sampling (super-resolution), Gaussian noise (denoising) or JPEG
    compression. Training is cut into *stages*. At every step the agent gives one weight
    per loss of the loss repository; the network then trains for ``stage_iters`` Adam
    iterations on ``L = sum_i action[i] * scale_i * L_i`` over random patches, and the
    objective (image-quality metrics, or any callable) is measured on a fixed set of
    held-out evaluation crops. This is the loop of LossAgent (Li et al., 2024).

    ## Action Space
    ``Box(0, 1, (n_losses,), float32)``; entry ``i`` scales loss ``loss_names[i]``. The
    effective weight is ``action[i] * losses[loss_names[i]].scale``. An entry of 0 switches
    the loss off (it is not computed); an all-zero action makes no update that stage.
    With the default repository the order is:

    | index | loss          | min | max | what 1.0 means                                |
    |-------|---------------|-----|-----|-----------------------------------------------|
    | 0     | `l1`          | 0   | 1   | mean absolute error at its scale              |
    | 1     | `mse`         | 0   | 1   | mean squared error at its scale               |
    | 2     | `charbonnier` | 0   | 1   | smooth L1 (Charbonnier) at its scale          |
    | 3     | `ssim`        | 0   | 1   | 1 - SSIM at its scale                         |
    | 4     | `ms_ssim`     | 0   | 1   | 1 - MS-SSIM at its scale                      |
    | 5     | `gradient`    | 0   | 1   | edge (image gradient) difference at its scale |
    | 6     | `fft`         | 0   | 1   | frequency-domain difference at its scale      |
    | 7     | `tv`          | 0   | 1   | total variation of the output at its scale    |
    | 8     | `gan`         | 0   | 1   | adversarial loss against a patch discriminator|

    Scales are chosen so that 1.0 gives gradients of the order of ``l1`` at 1.0; each
    loss's ``description`` says what it tends to do. An action outside the space (wrong
    shape, NaN, inf, an entry below 0 or above 1, not numbers) raises ``ValueError``
    naming the bad entries, and leaves the env exactly as it was.

    ## Observation Space
    A ``Dict`` of ``float32`` boxes with finite bounds:

    | key           | shape         | meaning                                                  |
    |---------------|---------------|----------------------------------------------------------|
    | `metrics`     | Dict of (1,)  | each objective metric, raw value, clipped to its range   |
    | `weights`     | (n_losses,)   | the last action (zeros after reset)                      |
    | `loss_values` | (n_losses,)   | unweighted value of each loss on the evaluation set      |
    | `progress`    | (1,)          | stage / max_stages                                       |

    ## Rewards
    ``r_t = J_t - J_{t-1}`` where ``J = sum_m w_m * s_m * metric_m`` and ``s_m = -1`` for
    metrics where lower is better (e.g. NIQE, PIQE, LPIPS), ``+1`` otherwise (PSNR, SSIM).
    The return of an episode is the total improvement of ``J`` from the initial network.
    A stage that diverges gets ``divergence_penalty`` instead. A stage whose objective
    could not be measured (a judge model that kept failing) has ``info["objective"]``
    NaN and reward 0; the next measured stage's reward counts from the last measured
    ``J``, so the return is still the total improvement.

    ## Starting State
    ``reset(seed=...)`` (an integer ``>= 0``, Python or NumPy; another type raises
    ``TypeError``, a negative one ``ValueError``) restores the initial network (from ``init_checkpoint``, or a
    seeded initialisation whose last layer is zero, so it outputs the interpolated
    input), a fresh optimizer, and re-initialises trainable losses (the discriminator).
    With the same seed, everything that follows is bit-for-bit identical on CPU. The
    evaluation set does not depend on the seed.

    ## Episode End
    1. Termination: never (``terminated`` is always False).
    2. Truncation: after ``max_stages`` steps; a further ``step`` raises
       ``gymnasium.error.ResetNeeded`` until ``reset``.
    3. Divergence is an outcome, not an end: when a loss or a parameter becomes
       non-finite during a stage, the network, optimizer and discriminator go back to
       the start of the stage, ``info["diverged"]`` is True, the reward is
       ``divergence_penalty``, and the episode goes on.
    4. A step that raises (a user's objective function, a rater's ``TimeoutError``, an
       action outside the space) changes nothing: the network, the optimizer, the
       RNGs and the stage are as before the call, so the same step can be retried.

    ## Info
    After reset and step: ``metrics`` (name -> float), ``objective`` (``J``),
    ``loss_values`` (name -> float), ``weights`` (name -> effective weight), ``stage``,
    ``diverged``; ``feedback`` (str) when the objective gives textual feedback;
    ``invalid_metrics`` (list of names) when a metric gave NaN for a collapsed output
    (e.g. PIQE of a flat image): that value was counted at the metric's worst bound,
    the worst outcome rather than a missing one.
    Wall-clock timings are in ``env.unwrapped.timings`` (``train_seconds``, which
    includes ``prepare_seconds`` of data preparation, and ``eval_seconds`` of the last
    stage), not in ``info``.

    ## Arguments
    Every field of :class:`lossagent_env.config.EnvConfig` as a keyword, plus
    ``render_mode`` (``None`` or ``"rgb_array"``: degraded | restored | target of the
    first evaluation image).

    ```python
    env = gym.make("LossAgent/SuperResolution-v0", objective="psnr", stage_iters=20)
    ```

    ## Devices and processes
    With ``device="cuda"`` or ``"auto"`` the env touches CUDA only when first used
    (``reset``, ``env.unwrapped.device``), never while it is built, so
    ``gym.make_vec(id, n, vectorization_mode="async")`` can fork its workers after
    gymnasium built its throwaway copy in the parent. A parent that has itself used
    CUDA must not fork: pass ``vector_kwargs={"context": "spawn"}``. On CPU the same
    seed gives the same results bit for bit; on CUDA, cuDNN and atomic adds make
    training nondeterministic unless ``torch.use_deterministic_algorithms(True)`` is
    set (with ``CUBLAS_WORKSPACE_CONFIG=:4096:8``); ``reset`` seeds only the env's own
    CPU generators and never the caller's global CPU or CUDA RNGs.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported: the env opens no window. "
                f"Allowed: None or 'rgb_array' (env.render() then returns the degraded | "
                "restored | target frame as a uint8 array to show or save)."
            )
        self.render_mode = render_mode
        self.config = config = EnvConfig(**kwargs)
        # Everything is built on the CPU; the device is resolved and CUDA touched only
        # when the env is first used (see _materialize), so that gymnasium's throwaway
        # copy in the parent of an async vector env never initialises CUDA.
        self._device: torch.device | None = None

        specs = config.losses if config.losses is not None else offline_losses()
        # Modules draw their initial weights from torch's global RNG: building them
        # must not move the caller's (every later draw uses the env's own generators).
        with torch.random.fork_rng(devices=[]):
            built = [build_loss(spec) for spec in specs]
        names = [loss.name if not isinstance(spec, str) else spec for spec, loss in zip(specs, built)]
        if len(set(names)) != len(names):
            raise ValueError(f"EnvConfig.losses names a loss twice: {names}")
        self.loss_names: tuple[str, ...] = tuple(names)
        self.losses = dict(zip(names, built))
        self._scales = np.array([loss.scale for loss in built], dtype=np.float64)

        self.objective = _checked_objective(config)

        self.degradation = make_degradation(config)
        images = load_dataset(config.dataset)
        self.sampler = PatchSampler(images.train, config.patch_size, self.degradation, images.train_lr)
        self._eval_lr, self._eval_hr = make_eval_set(images, config.eval_images, config.eval_size, self.degradation)
        self._images = images  # the test split of measure() is cut from them on first use
        self._test_set: tuple[torch.Tensor, torch.Tensor] | None = None

        with torch.random.fork_rng(devices=[]):
            self.model = build_backbone(config.backbone, config.scale, **config.backbone_kwargs)
        self._given_state = (
            _clone_state(self.model.state_dict()) if isinstance(config.backbone, torch.nn.Module) else None
        )
        self.trainer = Trainer(self.model, built, config.lr, amp=config.amp)
        if config.device == "cpu":  # nothing to defer: set up now, so errors come early
            self._materialize()

        n = len(self.loss_names)
        self.action_space = spaces.Box(0.0, 1.0, (n,), np.float32)
        metric_boxes = {
            name: spaces.Box(np.float32(low), np.float32(high), (1,), np.float32)
            for name, (low, high) in self.objective.bounds.items()
        }
        metric_space = spaces.Dict(dict(metric_boxes))
        loss_low = np.array([self.losses[k].value_range[0] for k in names], np.float32)
        loss_high = np.array([self.losses[k].value_range[1] for k in names], np.float32)
        # the boxes that observations are clipped into, metrics in the space's key order
        self._metric_boxes = {name: metric_boxes[name] for name in metric_space.keys()}
        self._loss_box = spaces.Box(loss_low, loss_high, (n,), np.float32)
        self.observation_space = spaces.Dict(
            {
                "metrics": metric_space,
                "weights": spaces.Box(0.0, 1.0, (n,), np.float32),
                "loss_values": self._loss_box,
                "progress": spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )

        self.timings = {"train_seconds": 0.0, "eval_seconds": 0.0, "prepare_seconds": 0.0}
        self._stage: int | None = None
        self._generator = torch.Generator()
        self._last: dict[str, Any] = {}
        self._reference = math.nan

    @property
    def device(self) -> torch.device:
        """The device the network trains on (resolved, and CUDA touched, on first use)."""
        return self._materialize()

    def _materialize(self) -> torch.device:
        """Resolve the device, move the network, losses and evaluation set there and set
        up the objective (metric networks); once.

        Raises:
            ValueError: The device does not exist here, or ``amp`` was asked for on a GPU
                without native bfloat16.
            MissingWeightsError: A metric's weight file is not installed.
        """
        if self._device is not None:
            return self._device
        config = self.config
        device = resolve_device(config.device, "EnvConfig.device")
        if config.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ValueError(
                f"EnvConfig.amp=True needs native bfloat16, which "
                f"{torch.cuda.get_device_name(device)!r} does not have (it needs compute "
                "capability 8.0 or newer, e.g. A100, H100, RTX 30xx). Set amp=False."
            )
        for loss in self.losses.values():
            loss.to(device)
        self.objective.setup(device)
        self._eval_lr = self._eval_lr.to(device)
        self._eval_hr = self._eval_hr.to(device)
        if self.degradation.runs_on_device:  # cut, flip and degrade where training runs
            self.sampler.to(device)
        self.model.to(device)
        self._device = device
        return device

    @property
    def task_description(self) -> str:
        """The restoration task in words, e.g. ``"super-resolution x2 (undo bicubic
        down-sampling)"`` (from :data:`lossagent_env.tasks.TASKS`)."""
        return TASKS.get(self.config.task).describe(self.config)

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        seed = None if seed is None else check_seed(seed)
        super().reset(seed=seed)
        self._materialize()
        init_seed = int(self.np_random.integers(2**31 - 1))
        self._generator = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        self._load_initial_network(init_seed)
        self.trainer.reset_optimizer()
        for k, loss in enumerate(self.losses.values()):
            if loss.trainable:
                loss.reset(torch.Generator().manual_seed(init_seed + 1 + k))
                loss.to(self.device)
        self.objective.reset(seed)
        self._stage = 0
        t0 = time.perf_counter()
        evaluation = self._evaluate(np.zeros(len(self.loss_names)), stage=0)
        if evaluation is None:
            raise RuntimeError("The initial network produced non-finite outputs; check init_checkpoint.")
        self.timings = {"train_seconds": 0.0, "eval_seconds": time.perf_counter() - t0, "prepare_seconds": 0.0}
        self._last = evaluation
        self._last["action"] = np.zeros(len(self.loss_names), np.float32)
        self._reference = evaluation["objective"]  # J that the next reward counts from
        return self._observation(), self._info(diverged=False)

    def step(self, action: Any) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        action = check_weights(action, self.loss_names)
        if self._stage is None:
            raise gym.error.ResetNeeded("Call reset() before step().")
        config = self.config
        if self._stage >= config.max_stages:
            raise gym.error.ResetNeeded(
                f"The episode was truncated after max_stages={config.max_stages} stages; call reset() before step()."
            )
        # A step that raises (the objective's function, a rater's timeout) leaves the
        # env as it was before the step: RNGs and, if it trained, the network are put back.
        rngs = (copy.deepcopy(self.np_random.bit_generator.state), self._generator.get_state())
        saved = None
        try:
            weights = action.astype(np.float64) * self._scales
            t0 = time.perf_counter()
            # The same patches are drawn at every stage whatever the action, so agents
            # with the same seed see the same data.
            n = config.stage_iters * config.batch_size
            inputs, targets = self.sampler.sample(n, self.np_random, self._generator, reuse_buffer=True)
            diverged = False
            if weights.any():
                shape = (config.stage_iters, config.batch_size)
                inputs = inputs.to(self.device, non_blocking=True).view(*shape, *inputs.shape[1:])
                targets = targets.to(self.device, non_blocking=True).view(*shape, *targets.shape[1:])
                _synchronize(self.device)
                t_prepared = time.perf_counter()
                saved = self._training_state()
                diverged = self.trainer.run_stage(inputs, targets, weights)
            else:
                t_prepared = time.perf_counter()
            _synchronize(self.device)
            t1 = time.perf_counter()
            evaluation = None if diverged else self._evaluate(weights, stage=self._stage + 1)
            _synchronize(self.device)
        except BaseException:
            if saved is not None:
                self._set_training_state(saved)
            self.np_random.bit_generator.state = rngs[0]
            self._generator.set_state(rngs[1])
            raise
        if evaluation is None:
            diverged = True
            if saved is not None:
                self._set_training_state(saved)
        t2 = time.perf_counter()

        if evaluation is None:  # diverged
            reward = float(config.divergence_penalty)
            self._last = {**self._last}
        else:
            objective = evaluation["objective"]
            if math.isfinite(objective) and math.isfinite(self._reference):
                reward = float(objective - self._reference)
            else:  # not measured this stage, or never before: no reward either way
                reward = 0.0
            if math.isfinite(objective):
                self._reference = objective
            self._last = evaluation
        self._last["action"] = action
        self._stage += 1
        self.timings = {"train_seconds": t1 - t0, "eval_seconds": t2 - t1, "prepare_seconds": t_prepared - t0}
        truncated = self._stage >= config.max_stages
        return self._observation(), reward, False, truncated, self._info(diverged)

    def render(self) -> np.ndarray | None:
        """``rgb_array``: degraded (nearest up-sampled) | restored | target, ``uint8``."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; nothing to render.")
            return None
        if "restored" not in self._last:
            raise gym.error.ResetNeeded("Call reset() before render().")
        target = self._eval_hr[0:1]
        degraded = torch.nn.functional.interpolate(
            self._eval_lr[0:1].clamp(0, 1), size=target.shape[-2:], mode="nearest"
        )
        row = torch.cat([degraded, self._last["restored"], target], dim=-1)[0]
        return row.permute(1, 2, 0).mul(255).round().clamp(0, 255).byte().cpu().numpy()

    def close(self) -> None:
        self._last = {}
        self._stage = None

    # ------------------------------------------------------------ snapshots
    def get_state(self) -> dict[str, Any]:
        """A deep copy of everything that evolves: network, optimizer, trainable losses,
        RNG states, stage and the last evaluation. Restore it with :meth:`set_state`."""
        if self._stage is None:
            raise gym.error.ResetNeeded("Call reset() before get_state().")
        return {
            **self._training_state(),
            "np_random": copy.deepcopy(self.np_random.bit_generator.state),
            "torch_generator": self._generator.get_state(),
            "stage": self._stage,
            "reference": self._reference,
            "last": copy.deepcopy(self._last),
            "loss_names": self.loss_names,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state` of an env with the same config."""
        if tuple(state.get("loss_names", ())) != self.loss_names:
            raise ValueError(
                f"The state was taken from an env with losses {state.get('loss_names')!r}; "
                f"this env has {self.loss_names!r}."
            )
        self._set_training_state(state)
        self.np_random.bit_generator.state = copy.deepcopy(state["np_random"])
        self._generator.set_state(state["torch_generator"])
        self._stage = int(state["stage"])
        self._reference = float(state["reference"])
        self._last = copy.deepcopy(state["last"])
        if "restored" in self._last:  # the snapshot may come from another device
            self._last["restored"] = self._last["restored"].to(self.device)

    # ------------------------------------------------------------ measurement
    def measure(self, objective: Any, split: str = "test") -> dict[str, Any]:
        """Measure the current network on an evaluation split, changing nothing: no random
        number is drawn and no stage passes, so the next ``step`` gives the same result.

        Args:
            objective: What to measure; anything ``objective=`` accepts (an ``Objective``
                instance is used as is, anything else is built and set up here).
            split: ``"val"``, the evaluation set of ``info``, or ``"test"``,
                ``test_images`` crops that overlap none of the ``"val"`` crops
                (:func:`lossagent_env.data.make_test_set`), never shown to the agent.

        Returns:
            ``{"metrics", "objective", "loss_values", "invalid"}``, as ``info`` has them
            (``invalid``: the ``invalid_metrics``, maybe none).

        Raises:
            ValueError: ``split`` is not ``"val"`` or ``"test"``; or the images have no
                room for the test crops.
            gym.error.ResetNeeded: ``reset`` was not called.
        """
        eval_set = self._split_set(split, "measure")
        built = make_objective(objective)
        if built is not objective:
            built.setup(self.device)
        weights = np.asarray(self._last["action"], np.float64) * self._scales
        training = self.model.training  # a diverged stage can leave train mode on
        assert self._stage is not None  # checked by _split_set
        evaluation = self._evaluate(weights, self._stage, objective=built, eval_set=eval_set)
        self.model.train(training)
        if evaluation is None:  # reset and step always leave a finite network
            raise RuntimeError("The network's output is not finite; nothing to measure.")
        return {k: evaluation[k] for k in ("metrics", "objective", "loss_values", "invalid")}

    def restore(self, split: str = "val") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs, restored, targets)`` of the current network on an evaluation split
        (``"val"`` or ``"test"``, as in :meth:`measure`), changing nothing: float tensors
        ``(N, 3, H, W)`` on the env's device, ``restored`` clamped to ``[0, 1]`` (what the
        metrics see). Raises as :meth:`measure`."""
        inputs, targets = self._split_set(split, "restore")
        training = self.model.training
        self.model.eval()
        with torch.no_grad():
            restored = self.model(inputs).float().clamp(0, 1)
        self.model.train(training)
        return inputs, restored, targets

    # ------------------------------------------------------------ internals
    def _split_set(self, split: str, caller: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of an evaluation split for :meth:`measure` or
        :meth:`restore` (``caller``); the test split is cut on first use."""
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r} is not supported. Allowed: 'val' or 'test'")
        if self._stage is None:
            raise gym.error.ResetNeeded(f"Call reset() before {caller}().")
        if split == "val":
            return self._eval_lr, self._eval_hr
        if self._test_set is None:
            config = self.config
            count = config.eval_images if config.test_images is None else config.test_images
            lr, hr = make_test_set(self._images, count, config.eval_size, self.degradation)
            self._test_set = (lr.to(self.device), hr.to(self.device))
        return self._test_set

    def _training_state(self) -> dict[str, Any]:
        return {
            "model": _clone_state(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.trainer.optimizer.state_dict()),
            "losses": {name: copy.deepcopy(loss.state_dict()) for name, loss in self.losses.items() if loss.trainable},
        }

    def _set_training_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.trainer.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        for name, loss_state in state["losses"].items():
            self.losses[name].load_state_dict(copy.deepcopy(loss_state))

    def _load_initial_network(self, seed: int) -> None:
        config = self.config
        if config.init_checkpoint is not None:
            try:
                state = torch.load(config.init_checkpoint, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"EnvConfig.init_checkpoint={config.init_checkpoint!r} does not exist."
                ) from None
            except Exception as e:  # a file torch cannot read: say which and why
                raise ValueError(
                    f"EnvConfig.init_checkpoint={config.init_checkpoint!r} is not a network "
                    f"state_dict that torch.load can read ({type(e).__name__}: {e})."
                ) from None
            if isinstance(state, dict) and "params" in state and isinstance(state["params"], dict):
                state = state["params"]  # BasicSR checkpoints
            if not isinstance(state, dict):
                raise ValueError(
                    f"EnvConfig.init_checkpoint={config.init_checkpoint!r} holds a "
                    f"{type(state).__name__}, not a network state_dict."
                )
        elif self._given_state is not None:
            state = self._given_state
        else:
            # Only the CPU generator is seeded (and restored after): torch.manual_seed
            # would also reseed, and leave reseeded, every CUDA generator of the caller.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                fresh = build_backbone(config.backbone, config.scale, **config.backbone_kwargs)
            state = fresh.state_dict()
        try:
            self.model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"The initial network state does not fit backbone={config.backbone!r}: {e}") from e

    @torch.no_grad()
    def _evaluate(
        self,
        weights: np.ndarray,
        stage: int,
        objective: Objective | None = None,
        eval_set: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, Any] | None:
        """Measure the objective and every loss on the evaluation set; None if the
        network's output is not finite. ``objective`` and ``eval_set`` (inputs,
        targets) default to the env's own."""
        objective = self.objective if objective is None else objective
        eval_lr, eval_hr = (self._eval_lr, self._eval_hr) if eval_set is None else eval_set
        self.model.eval()
        restored = self.model(eval_lr).float()
        if not bool(torch.isfinite(restored).all()) or not parameters_finite(self.model):
            return None
        restored = restored.clamp(0, 1)
        result = objective.evaluate(
            restored, eval_hr, degraded=eval_lr, stage=stage, weights=dict(zip(self.loss_names, map(float, weights)))
        )
        loss_values = {name: float(loss(restored, eval_hr)) for name, loss in self.losses.items()}
        return {
            "metrics": {k: float(v) for k, v in result.metrics.items()},
            "objective": float(result.value),
            "feedback": result.feedback,
            "invalid": list(result.invalid),
            "loss_values": loss_values,
            "restored": restored[0:1].clone(),
        }

    def _observation(self) -> ObsType:
        assert self._stage is not None  # called after reset()
        last = self._last
        metrics = {}
        for name, box in self._metric_boxes.items():
            value = np.nan_to_num(last["metrics"][name], nan=box.low[0])
            metrics[name] = np.clip(np.array([value], np.float32), box.low, box.high)
        loss_box = self._loss_box
        loss_values = np.array([last["loss_values"][k] for k in self.loss_names], np.float32)
        loss_values = np.clip(np.nan_to_num(loss_values, nan=0.0), loss_box.low, loss_box.high)
        return {
            "metrics": metrics,
            "weights": np.array(last["action"], np.float32),
            "loss_values": loss_values,
            "progress": np.array([self._stage / self.config.max_stages], np.float32),
        }

    def _info(self, diverged: bool) -> dict[str, Any]:
        last = self._last
        info = {
            "metrics": dict(last["metrics"]),
            "objective": last["objective"],
            "loss_values": dict(last["loss_values"]),
            "weights": {name: float(a) * float(s) for name, a, s in zip(self.loss_names, last["action"], self._scales)},
            "stage": self._stage,
            "diverged": diverged,
        }
        if last.get("feedback") is not None:
            info["feedback"] = last["feedback"]
        if last.get("invalid"):
            info["invalid_metrics"] = list(last["invalid"])
        return info


def _synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that wall-clock timings mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_settings(**kwargs: Any) -> EnvConfig:
    """Check env settings without building anything heavy: the config's fields, the
    objective (names, weights) and the evaluation size it needs.

    The benchmark and the command line call it before they create any file.

    Returns:
        The validated :class:`EnvConfig`.

    Raises:
        ConfigError: A refused value; its ``loc`` names the field (``("objective",
            metric)`` for the objective and for an ``eval_size`` too small for a
            metric). An unknown field or metric name is an ``UnknownNameError``, a
            ``KeyError`` too (with a "Did you mean" hint).
    """
    config = EnvConfig(**kwargs)
    _checked_objective(config)
    return config


def _checked_objective(config: EnvConfig) -> Objective:
    objective = make_objective(config.objective)
    size, metric = objective.min_image_size()
    if metric is not None and config.eval_size < size:  # no metric: any size works
        raise ConfigError(
            ("objective", metric),
            f"EnvConfig.eval_size={config.eval_size} is too small for the metric {metric!r}, "
            f"which needs images of at least {size} px. Allowed: eval_size >= {size}, or "
            "another metric.",
        )
    return objective


def make_env(**kwargs: Any) -> LossAgentEnv:
    """The entry point of the registered ids: ``LossAgentEnv(**kwargs)``.

    A function rather than the class, so that ``gym.make(..., render_mode="human")``
    reaches the env's own clear refusal instead of gymnasium wrapping it in a window
    that needs pygame.
    """
    return LossAgentEnv(**kwargs)


def _clone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
