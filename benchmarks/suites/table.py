"""The ``[table]`` section of a suite file: how ``lossagent tabulate`` builds a table.

Every key is documented in :class:`TableModel` and :class:`InstanceModel`; an example
section (a table of problem instances, format 2, or of ``seeds``) is in docs/tables.md
("Building a table"). Instance ``i`` gets the seeds ``i * replicates`` to
``(i + 1) * replicates - 1``.

Everything the section says is checked when it is read, before a build creates
anything: types (integers are integers, not ``true`` or ``2.0``), the table's size
(counted from its dimensions, :mod:`benchmarks.suites.size`, before any seed is listed),
names (env ids, EnvConfig fields, backbones, losses, metrics), and every configuration
the build will make (the table's env, or each instance's: its values as the env checks
them, its dataset, its device on this machine, and every preset against its losses).

Other sections of the file (a bench suite's agents, objectives) are read by
:mod:`benchmarks.suites.suite`; errors are the same :class:`~benchmarks.suites.suite.SuiteError`,
located by file, line and key. The build itself is :mod:`benchmarks.execution.tabulate`.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Literal

import gymnasium as gym
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import lossagent_env
from benchmarks.suites.size import MAX_NODES, size_refusal
from benchmarks.suites.suite import EnvEntry, SuiteError, check_env_names, parse_toml, read_suite_file
from benchmarks.suites.tomlpos import file_loc
from lossagent_env.config import EnvConfig
from lossagent_env.data import check_dataset
from lossagent_env.device import resolve_device
from lossagent_env.env import check_settings
from lossagent_env.errors import ConfigError
from lossagent_env.losses import offline_losses
from lossagent_env.metrics import metric_info, metric_names
from lossagent_env.registry import unknown_name_message
from lossagent_env.seeds import check_seeds
from lossagent_env.tabular.build import RESERVED_ENV_KWARGS, InstanceSpec, TableSpec, panel_objective
from lossagent_env.wrappers import resolve_presets

__all__ = ["MIN_REPLICATES", "TableModel", "load_table_spec", "table_spec_from_text"]

MIN_REPLICATES = 2
"""Fewest replicates of an instance: the noise band of every score needs two."""

Count = Annotated[int, Field(strict=True, ge=1)]
"""An integer >= 1 (not ``true``, not ``2.0``)."""


class InstanceModel(BaseModel):
    """One ``[[table.instances]]`` entry: a problem instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Unique name of the instance.")
    split: Literal["train", "test"] = Field(description="'train': agents tune on it; 'test': scored only.")
    id: str | None = Field(default=None, description="Env id (default: [table.env]'s).")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="gym.make kwargs added to (or replacing) [table.env]'s."
    )


class TableModel(BaseModel):
    """The ``[table]`` section of a suite file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", description="What the table is for.")
    env: EnvEntry = Field(
        description="Env id and gym.make kwargs, as a bench suite's [env]; stage_iters "
        "goes here too. Not objective or max_stages: the table sets them."
    )
    stages: Count = Field(description="Depth T: stages of every preset sequence.")
    seeds: list[Annotated[int, Field(strict=True)]] | None = Field(
        default=None, min_length=1,
        description="Episode seeds, one tree each (a table without instances; required there).",
    )
    replicates: Annotated[int, Field(strict=True)] | None = Field(
        default=None,
        description=f"Seeds per instance, at least {MIN_REPLICATES} (a table with instances; required there).",
    )
    instances: list[InstanceModel] | None = Field(
        default=None, min_length=1, description="Problem instances (format 2), in order."
    )
    presets: dict[str, dict[str, float] | list[float]] = Field(
        min_length=1,
        description="Ordered name -> {loss = weight} (others 0) or a full weight vector, "
        "weights in [0, 1]; action i plays the i-th preset.",
    )
    metrics: list[str] = Field(
        min_length=1, description="The panel: metrics measured at every node, on both splits."
    )
    threads: Count = Field(default=1, description="torch threads of every unit.")

    @field_validator("replicates")
    @classmethod
    def _enough_replicates(cls, replicates: int | None) -> int | None:
        if replicates is not None and replicates < MIN_REPLICATES:
            raise ValueError(
                f"replicates = {replicates} is too few: every score of a table of instances is "
                f"compared with the noise between replicates, which needs {MIN_REPLICATES}. "
                f"Allowed: an integer >= {MIN_REPLICATES}"
            )
        return replicates

    @property
    def trees(self) -> int:
        """Trees of the table (its seeds), counted without listing them."""
        return len(self.seeds) if self.seeds is not None else len(self.instances or ()) * (self.replicates or 0)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        return None if seeds is None else check_seeds(seeds)

    @field_validator("instances")
    @classmethod
    def _unique_names(cls, instances: list[InstanceModel] | None) -> list[InstanceModel] | None:
        repeated = sorted(n for n, c in Counter(i.name for i in instances or ()).items() if c > 1)
        if repeated:
            raise ValueError(f"instance names must be unique; repeated: {repeated}")
        return instances

    @model_validator(mode="after")
    def _seeds_or_instances(self) -> TableModel:
        if self.instances is None:
            if self.seeds is None:
                raise ValueError("give seeds (one tree each), or instances with replicates")
            if self.replicates is not None:
                raise ValueError("replicates is for a table with instances; give instances, or drop it")
        else:
            if self.seeds is not None:
                raise ValueError("a table with instances takes replicates, not seeds (each instance's "
                                 "seeds follow from its position)")
            if self.replicates is None:
                raise ValueError("a table with instances needs replicates (seeds per instance)")
        return self

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, metrics: list[str]) -> list[str]:
        repeated = sorted(m for m, n in Counter(metrics).items() if n > 1)
        if repeated:
            raise ValueError(f"metrics must be unique; repeated: {repeated}")
        return metrics


def load_table_spec(
    name_or_path: str | os.PathLike[str], *, max_nodes: int | None = MAX_NODES, workers: int = 1
) -> TableSpec:
    """Load and check the ``[table]`` section of a suite file.

    Args:
        name_or_path: A shipped suite name, or the path of a ``.toml`` file.
        max_nodes: Most nodes the table may have (``lossagent tabulate --max-nodes``);
            None for no limit.
        workers: Units a build computes at once (for the estimated build time of a
            table refused for its size).

    Returns:
        The table's :class:`~lossagent_env.tabular.build.TableSpec`.

    Raises:
        SuiteError: The file is not UTF-8, or the section is missing or fails a check of
            the module docstring (one of more than ``max_nodes`` nodes: with its size and
            an estimated build time); the message names file, line and key.
        FileNotFoundError: No such file.
        KeyError: An unknown suite name (with a "Did you mean" hint).
    """
    path, text = read_suite_file(name_or_path)
    return table_spec_from_text(text, source=str(path), max_nodes=max_nodes, workers=workers)


def table_spec_from_text(
    text: str, source: str = "<string>", *, max_nodes: int | None = MAX_NODES, workers: int = 1
) -> TableSpec:
    """Like :func:`load_table_spec`, for TOML given as a string."""
    data = parse_toml(text, source)

    def fail(loc: tuple, message: str) -> SuiteError:
        return SuiteError.at(source, text, loc, message)

    if not isinstance(data.get("table"), dict):
        raise fail(("table",), "no [table] section; a table needs one (see benchmarks.suites.table)")
    section = data["table"]
    try:
        model = TableModel.model_validate(section)
    except ValidationError as e:
        error = next((x for x in e.errors() if x["type"] == "extra_forbidden"), e.errors()[0])
        loc = ("table", *file_loc(section, tuple(error["loc"]), keep_missing=True))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            models: dict[tuple, type[BaseModel]] = {("table",): TableModel, ("table", "env"): EnvEntry}
            parent = models.get(loc[:-1]) or (InstanceModel if "instances" in loc[:-1] else None)
            message = unknown_name_message("key", loc[-1], list(parent.model_fields) if parent else [])
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] != "value_error" and not isinstance(error.get("input"), (dict, list)):
            message = f"{message} (got {error.get('input')!r})"  # a validator's own message names it
        raise fail(loc, message) from None
    if max_nodes is not None:
        _check_size(model, fail, max_nodes, workers)
    _check_names(model, fail)
    _check_configurations(model, fail)
    r = model.replicates or 0
    return TableSpec(
        env_id=model.env.id,
        env_kwargs=dict(model.env.kwargs),
        presets=dict(model.presets),
        metrics=tuple(model.metrics),
        seeds=tuple(model.seeds or ()),
        stages=model.stages,
        threads=model.threads,
        description=model.description,
        instances=tuple(
            InstanceSpec(inst.name, inst.split, dict(inst.kwargs), tuple(range(i * r, (i + 1) * r)), inst.id)
            for i, inst in enumerate(model.instances or ())
        ),
    )


Fail = Callable[[tuple, str], SuiteError]


def _check_size(model: TableModel, fail: Fail, max_nodes: int, workers: int) -> None:
    """Refuse a table of more than ``max_nodes`` nodes, counted from its dimensions."""
    if model.instances is None:
        trees_text, keys = f"{model.trees:,} seed(s)", "seeds"
    else:
        trees_text = f"{len(model.instances)} instance(s) x {model.replicates:,} replicates"
        keys = "instances or replicates"
    refusal = size_refusal(
        trees=model.trees, trees_text=trees_text, tree_keys=keys, presets=len(model.presets),
        stages=model.stages, stage_iters=model.env.kwargs.get("stage_iters", EnvConfig.stage_iters),
        workers=workers, max_nodes=max_nodes,
    )
    if refusal is not None:
        raise fail(("table",), refusal)


def _check_names(model: TableModel, fail: Fail) -> None:
    """Env ids, env kwargs, backbones, losses and metrics against the registries."""
    fields = {f.name for f in dataclasses.fields(EnvConfig)} - {"task", *RESERVED_ENV_KWARGS}
    envs = [(("table", "env"), model.env.id, model.env.kwargs)] + [
        (("table", "instances", i), inst.id, inst.kwargs) for i, inst in enumerate(model.instances or ())
    ]
    for where, env_id, kwargs in envs:
        if env_id is not None and env_id not in lossagent_env.ENV_IDS:
            raise fail((*where, "id"), unknown_name_message("env id", env_id, lossagent_env.ENV_IDS))
        check_env_names(kwargs, fields, where, fail, reserved=RESERVED_ENV_KWARGS)
    known = metric_names()
    for i, metric in enumerate(model.metrics):
        if metric not in known:
            raise fail(("table", "metrics", i), unknown_name_message("metric", metric, known))
        if metric_info(metric).set_level:
            raise fail(("table", "metrics", i), f"metric {metric!r} compares sets of images and cannot score a node")


def _check_configurations(model: TableModel, fail: Fail) -> None:
    """Every configuration the build makes (the table's env, or each instance's), as the
    env would check it, with nothing built: its values with the panel and the depth, its
    dataset, its device on this machine, and every preset against its losses."""
    base = dict(model.env.kwargs)
    configurations = [(("table", "env"), None, model.env.id, base)] if model.instances is None else [
        (("table", "instances", i), inst, inst.id or model.env.id, {**base, **inst.kwargs})
        for i, inst in enumerate(model.instances)
    ]
    panel = panel_objective(model.metrics)
    for where, inst, env_id, kwargs in configurations:
        of = "" if inst is None else f"instance {inst.name!r}: "

        def at(key: str, inst: InstanceModel | None = inst, where: tuple = where) -> tuple:
            """Where ``key`` of this configuration is set (the instance's own kwargs first)."""
            if inst is not None and key in inst.kwargs:
                return (*where, "kwargs", key)
            return ("table", "env", "kwargs", key) if key in base else where

        task = (gym.spec(env_id).kwargs or {}).get("task")
        try:
            config = check_settings(**kwargs, **({"task": task} if task else {}), objective=panel,
                                    max_stages=model.stages)
        except ConfigError as e:
            field = e.loc[0] if e.loc else None
            if field == "objective":  # the panel: a metric that needs larger images
                metric = e.loc[1] if len(e.loc) > 1 else None
                loc = ("table", "metrics", *([model.metrics.index(metric)] if metric in model.metrics else []))
            else:
                loc = at(str(field)) if field is not None else where
            raise fail(loc, f"{of}{e}") from None
        try:
            check_dataset(config.dataset)
        except (OSError, ValueError) as e:
            raise fail(at("dataset"), f"{of}{e}") from None
        try:
            resolve_device(config.device, "device")
        except ValueError as e:
            raise fail(at("device"), f"{of}{e}") from None
        loss_names = [str(spec.get("type")) if isinstance(spec, dict) else str(spec)
                      for spec in config.losses or offline_losses()]
        for name, weights in model.presets.items():
            try:
                resolve_presets({name: weights}, loss_names)
            except (KeyError, ValueError) as e:
                if inst is not None and "losses" in inst.kwargs:
                    raise fail(at("losses"), f"{of}its losses {loss_names} cannot play preset {name!r}: "
                                             f"{e.args[0]}") from None
                raise fail(("table", "presets", name), f"{of}{e.args[0]}") from None
