"""Computing a table: the specification, the header, and one unit of work.

The unit of work is the subtree of one ``(seed, first preset)`` pair: ``reset(seed)``
(the root), ``step(first)``, then depth first over all ``K**(T-1)`` continuations, each
child trained for real from its parent's state (``get_state`` / ``set_state``). Units
are independent; one writer stores each in one transaction
(:func:`lossagent_env.tabular.format.write_unit`), and ``benchmarks.execution.tabulate``
orchestrates them. Every unit runs with ``torch.set_num_threads(spec.threads)`` (float32
reductions depend on the thread count), so a table does not depend on how many workers built it.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import lossagent_env
from lossagent_env.config import EnvConfig
from lossagent_env.env import LossAgentEnv
from lossagent_env.metrics import metric_info
from lossagent_env.objectives import MetricObjective
from lossagent_env.seeds import check_seeds
from lossagent_env.tabular.format import NodeRecord
from lossagent_env.tabular.schema import INSTANCE_SPLITS, RESERVED_ENV_KWARGS
from lossagent_env.wrappers import PresetActions

__all__ = [
    "RESERVED_ENV_KWARGS",
    "InstanceSpec",
    "TableSpec",
    "cached_build_env",
    "compute_unit",
    "HEADER_NOT_COMPARED",
    "live_env",
    "machine_info",
    "make_build_env",
    "package_versions",
    "panel_objective",
    "table_header",
    "unit_size",
    "units",
]


@dataclass(frozen=True)
class InstanceSpec:
    """A problem instance of a table (format 2): its own env configuration and replicates.

    Attributes:
        name: Unique in the table.
        split: ``"train"`` (agents may tune on it) or ``"test"`` (only scored on).
        env_kwargs: ``gym.make`` keyword arguments that replace or add to the table's
            (for example ``{"dataset": "skimage:scenes"}``, ``{"sigma": 15}``).
        seeds: Its replicates: seeds, one tree each, unique in the table.
        env_id: Gymnasium id of its live env; None: the table's.
    """

    name: str
    split: str
    env_kwargs: Mapping[str, Any]
    seeds: tuple[int, ...]
    env_id: str | None = None


@dataclass
class TableSpec:
    """What a table holds: one env configuration, presets, panel, seeds and depth.

    Attributes:
        env_id: Gymnasium id of the live env.
        env_kwargs: Its ``gym.make`` keyword arguments, JSON values, without
            ``objective``, ``max_stages`` and ``render_mode``.
        presets: Ordered ``{name: weights}`` as :class:`~lossagent_env.wrappers.PresetActions`
            takes it.
        metrics: The panel: every metric measured at every node, on both splits.
        seeds: Episode seeds, one tree each. With ``instances``, every instance's seeds
            in instance order (empty: filled in from them).
        stages: Depth T of each tree.
        threads: torch threads of every unit.
        description: What the table is for (stored in the header).
        command: The command line that started the build, if any (stored in the
            header; not part of what the table is).
        instances: The problem instances (a format 2 table); empty: one configuration,
            ``env_id`` with ``env_kwargs``, whose seeds are the trees (format 1).

    Raises:
        ValueError: A field out of its allowed range (the message names it).
    """

    env_id: str
    env_kwargs: dict[str, Any]
    presets: Mapping[str, Any]
    metrics: Sequence[str]
    seeds: Sequence[int]
    stages: int
    threads: int = 1
    description: str = ""
    command: str | None = field(default=None, compare=False)
    instances: Sequence[InstanceSpec] = ()

    def __post_init__(self) -> None:
        self.env_kwargs = dict(self.env_kwargs)
        self.presets = dict(self.presets)
        self.metrics = tuple(self.metrics)
        self.instances = tuple(self.instances)
        if self.instances:
            self._check_instances()
        self.seeds = tuple(self.seeds)
        for where, kwargs in [("env_kwargs", self.env_kwargs)] + [
            (f"instances[{i}].env_kwargs", dict(inst.env_kwargs)) for i, inst in enumerate(self.instances)
        ]:
            reserved = sorted(set(kwargs) & set(RESERVED_ENV_KWARGS))
            if reserved:
                raise ValueError(
                    f"TableSpec.{where} sets {reserved}; a table fixes objective (the metrics "
                    "panel) and max_stages (stages) itself, and renders nothing."
                )
        for name in ("stages", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TableSpec.{name}={value!r}. Allowed: an integer >= 1.")
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"TableSpec.metrics={list(self.metrics)!r}. Allowed: at least one metric, each once.")
        if not self.seeds:
            raise ValueError("TableSpec.seeds is empty. Allowed: at least one integer >= 0, each once.")
        self.seeds = tuple(check_seeds(self.seeds, "TableSpec.seeds"))

    def _check_instances(self) -> None:
        names = [inst.name for inst in self.instances]
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"TableSpec.instances names {names!r}. Allowed: non-empty names, each once.")
        for inst in self.instances:
            if inst.split not in INSTANCE_SPLITS:
                raise ValueError(
                    f"TableSpec.instances {inst.name!r} has split={inst.split!r}. Allowed: {list(INSTANCE_SPLITS)}."
                )
        seeds = tuple(s for inst in self.instances for s in inst.seeds)
        if self.seeds and tuple(self.seeds) != seeds:
            raise ValueError(
                f"TableSpec.seeds={list(self.seeds)!r} differs from its instances' seeds "
                f"{list(seeds)!r}. Allowed: those (or none, to take them)."
            )
        self.seeds = seeds

    @property
    def n_presets(self) -> int:
        return len(self.presets)

    def instance_of(self, seed: int) -> InstanceSpec | None:
        """The instance whose replicates include ``seed`` (None in a format 1 table)."""
        return next((inst for inst in self.instances if seed in inst.seeds), None)

    def env_for(self, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        """Env id and ``gym.make`` kwargs of the tree of ``seed`` (default: the first seed)."""
        inst = self.instance_of(self.seeds[0] if seed is None else seed)
        if inst is None:
            return self.env_id, dict(self.env_kwargs)
        return inst.env_id or self.env_id, {**self.env_kwargs, **inst.env_kwargs}


def panel_objective(metrics: Sequence[str]) -> MetricObjective:
    """An objective that reports every panel metric: weight 1 on the first, 0 on the others."""
    return MetricObjective({name: 1.0 if i == 0 else 0.0 for i, name in enumerate(metrics)})


def make_build_env(spec: TableSpec, seed: int | None = None) -> PresetActions:
    """The live env a table's tree is built from: ``gym.make`` with the configuration of
    the tree of ``seed`` (:meth:`TableSpec.env_for`), the panel objective and
    ``max_stages = stages``, wrapped in ``PresetActions``."""
    env_id, env_kwargs = spec.env_for(seed)
    env = gym.make(env_id, **env_kwargs, objective=panel_objective(spec.metrics), max_stages=spec.stages)
    return PresetActions(env, spec.presets)


def live_env(env: PresetActions) -> LossAgentEnv:
    """The live env under the wrappers of ``env``.

    Raises:
        TypeError: ``env`` does not wrap a :class:`~lossagent_env.env.LossAgentEnv`.
    """
    live = env.unwrapped
    if not isinstance(live, LossAgentEnv):
        raise TypeError(f"A table is built from a LossAgentEnv; got a {type(live).__name__}.")
    return live


def units(spec: TableSpec) -> list[tuple[int, int]]:
    """Every unit ``(seed, first preset)``, seeds in order, then presets."""
    return [(seed, first) for seed in spec.seeds for first in range(spec.n_presets)]


def unit_size(spec: TableSpec) -> int:
    """Nodes a unit computes: the root, then ``1 + K + ... + K**(T-1)`` below ``first``."""
    return 1 + sum(spec.n_presets**d for d in range(spec.stages))


def package_versions() -> dict[str, str | None]:
    """Versions of what a table's values depend on."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyiqa": version("pyiqa"),
        "gymnasium": gym.__version__,
        "lossagent_env": lossagent_env.__version__,
    }


_SIMD_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "avx_vnni", "amx_tile", "asimd", "sve",
)


def machine_info() -> dict[str, Any]:
    """The machine a table is built on: CPU model, its vector instruction sets, cores,
    and the instruction set torch's CPU kernels use. Values of chaotic training are
    equal bit for bit only on the same kind of machine (and package versions)."""
    model: str | None = None
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:  # the first processor's entries
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags.update(value.split())
    except OSError:  # not Linux
        pass
    return {
        "cpu": model or platform.processor() or None,
        "arch": platform.machine(),
        "simd": [flag for flag in _SIMD_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def table_header(spec: TableSpec, env: PresetActions) -> dict[str, Any]:
    """The header of ``spec``'s table (its keys: docs/tables.md, "The file").

    Args:
        spec: The table.
        env: ``make_build_env(spec)``: where loss scales and ranges come from.
    """
    u = live_env(env)
    config = u.config
    header = {
        "env_id": spec.env_id,
        "env_kwargs": spec.env_kwargs,
        "env_config": config.to_dict(),
        "losses": [
            {
                "name": name,
                "scale": float(u.losses[name].scale),
                "value_range": [float(v) for v in u.losses[name].value_range],
            }
            for name in u.loss_names
        ],
        "presets": [{"name": name, "weights": row.tolist()} for name, row in zip(env.preset_names, env.preset_weights)],
        "metrics": list(spec.metrics),
        "metric_lower_better": {m: metric_info(m).lower_better for m in spec.metrics},
        "seeds": list(spec.seeds),
        "stages": spec.stages,
        "splits": {
            "val": f"the env's evaluation set: {config.eval_images} crops of side "
            f"{config.eval_size} (lossagent_env.data.make_eval_set)",
            "test": f"{config.eval_images} crops of side {config.eval_size} that overlap no "
            "val crop (lossagent_env.data.make_test_set)",
        },
        "torch_threads": spec.threads,
        "versions": package_versions(),
        "build": {"command": spec.command, "description": spec.description, "machine": machine_info()},
    }
    if spec.instances:
        header["instances"] = [_instance_entry(spec, inst) for inst in spec.instances]
    return json.loads(json.dumps(header))  # as it reads back from the file


def _instance_entry(spec: TableSpec, inst: InstanceSpec) -> dict[str, Any]:
    """The header entry of an instance, with its full configuration (checked by EnvConfig)."""
    env_id, env_kwargs = spec.env_for(inst.seeds[0])
    task = gym.spec(env_id).kwargs.get("task")
    config = EnvConfig(**env_kwargs, **({"task": task} if task else {}), max_stages=spec.stages)
    return {
        "name": inst.name,
        "split": inst.split,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "env_config": config.to_dict(),
        "seeds": list(inst.seeds),
    }


HEADER_NOT_COMPARED = ("build", "format", "format_version")
"""Header keys that do not define what a table holds (how a build was started, the file
format), so a resumed build may differ in them."""


# --------------------------------------------------------------------------- one unit

_ENV_CACHE: dict[str, PresetActions] = {}


def cached_build_env(spec: TableSpec, seed: int | None = None) -> PresetActions:
    """:func:`make_build_env`, kept for the next call with the same configuration (one
    per process: making one costs seconds)."""
    key = json.dumps(
        [*spec.env_for(seed), list(spec.presets.items()), spec.metrics, spec.stages], sort_keys=True, default=repr
    )
    if key not in _ENV_CACHE:
        for env in _ENV_CACHE.values():
            env.close()
        _ENV_CACHE.clear()
        _ENV_CACHE[key] = make_build_env(spec, seed)
    return _ENV_CACHE[key]


def compute_unit(
    spec: TableSpec, seed: int, first: int, on_node: Callable[[NodeRecord], None] | None = None
) -> list[NodeRecord]:
    """Train and measure every node of one unit (see the module docstring).

    Args:
        spec: The table.
        seed: The episode seed.
        first: Index of the first preset.
        on_node: Called with each node as soon as it is measured (progress bars).

    Returns:
        The unit's nodes, the root first, then depth first.
    """
    env = cached_build_env(spec, seed)
    u = live_env(env)
    test_panel = panel_objective(spec.metrics)
    records: list[NodeRecord] = []

    def record(path: tuple[int, ...], info: dict[str, Any]) -> None:
        test = u.measure(test_panel, split="test")
        node = NodeRecord(
            seed=seed,
            path=path,
            diverged=bool(info["diverged"]),
            train_seconds=float(u.timings["train_seconds"]),
            eval_seconds=float(u.timings["eval_seconds"]),
            metrics={"val": dict(info["metrics"]), "test": test["metrics"]},
            losses=dict(info["loss_values"]),
            invalid={"val": list(info.get("invalid_metrics", [])), "test": test["invalid"]},
        )
        records.append(node)
        if on_node is not None:
            on_node(node)

    def expand(path: tuple[int, ...]) -> None:
        if len(path) == spec.stages:
            return
        state = u.get_state()
        for action in range(spec.n_presets):
            u.set_state(state)
            record(path + (action,), env.step(action)[-1])
            expand(path + (action,))

    previous = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        record((), env.reset(seed=seed)[-1])
        record((first,), env.step(first)[-1])
        expand((first,))
    finally:
        torch.set_num_threads(previous)
    return records
