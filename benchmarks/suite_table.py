"""The ``[table]`` section of a suite file: how ``lossagent tabulate`` builds a table.

Suite file section (every key is documented in :class:`TableModel`)::

    [table]
    description = "What the table is for."
    stages = 4
    seeds = [0, 1, 2]
    metrics = ["psnr", "ssim", "piqe"]      # the panel, measured at every node
    threads = 1                             # torch threads per unit (default 1)

    [table.env]
    id = "LossAgent/SuperResolution-v0"
    kwargs = { scale = 2, losses = ["l1", "ssim", "gradient"], stage_iters = 40 }

    [table.presets]                         # in action order
    pixel = { l1 = 1.0 }
    structure = { l1 = 1.0, ssim = 1.0 }
    edges = [1.0, 0.0, 0.5]                 # or one weight per loss, in loss order

A table of problem instances (format 2) lists them instead of ``seeds``, with the
number of replicates of each; instance ``i`` gets the seeds ``i * replicates`` to
``(i + 1) * replicates - 1``::

    [table]
    replicates = 3

    [[table.instances]]
    name = "photos"
    split = "train"                         # or "test"
    kwargs = { dataset = "skimage:photos" } # added to (or replacing) [table.env]'s kwargs
    # id = "LossAgent/Denoising-v0"         # another env id (default: [table.env]'s)

Other sections of the file (a bench suite's agents, objectives) are read by
:mod:`benchmarks.suite`; errors are the same :class:`~benchmarks.suite.SuiteError`,
located by file, line and key. The build itself is :mod:`benchmarks.tabulate`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import lossagent_env
from benchmarks.suite import EnvEntry, SuiteError, read_suite_file
from benchmarks.tomlpos import decode_error_line, file_loc
from lossagent_env.config import EnvConfig
from lossagent_env.losses import offline_losses
from lossagent_env.metrics import metric_info, metric_names
from lossagent_env.registry import unknown_name_message
from lossagent_env.tabular.build import RESERVED_ENV_KWARGS, InstanceSpec, TableSpec
from lossagent_env.tabular.replay import check_seeds
from lossagent_env.wrappers import resolve_presets

__all__ = ["TableModel", "load_table_spec", "table_spec_from_text"]


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
    stages: int = Field(ge=1, description="Depth T: stages of every preset sequence.")
    seeds: list[int] | None = Field(
        default=None, min_length=1,
        description="Episode seeds, one tree each (a table without instances; required there).",
    )
    replicates: int | None = Field(
        default=None, ge=1, description="Seeds per instance (a table with instances; required there)."
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
    threads: int = Field(default=1, ge=1, description="torch threads of every unit.")

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


def load_table_spec(name_or_path: str | os.PathLike[str]) -> TableSpec:
    """Load and check the ``[table]`` section of a suite file.

    Args:
        name_or_path: A shipped suite name, or the path of a ``.toml`` file.

    Returns:
        The table's :class:`~lossagent_env.tabular.build.TableSpec`.

    Raises:
        SuiteError: The file is not UTF-8, or the section is missing or malformed, or
            names an unknown env, EnvConfig field, metric or loss; the message names
            file, line and key.
        FileNotFoundError: No such file.
        KeyError: An unknown suite name (with a "Did you mean" hint).
    """
    path, text = read_suite_file(name_or_path)
    return table_spec_from_text(text, source=str(path))


def table_spec_from_text(text: str, source: str = "<string>") -> TableSpec:
    """Like :func:`load_table_spec`, for TOML given as a string."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(source, decode_error_line(e), None, f"not valid TOML: {e}") from e

    def fail(loc: tuple, message: str) -> SuiteError:
        return SuiteError.at(source, text, loc, message)

    if not isinstance(data.get("table"), dict):
        raise fail(("table",), "no [table] section; a table needs one (see benchmarks.suite_table)")
    section = data["table"]
    try:
        model = TableModel.model_validate(section)
    except ValidationError as e:
        error = next((x for x in e.errors() if x["type"] == "extra_forbidden"), e.errors()[0])
        loc = ("table", *file_loc(section, tuple(error["loc"]), keep_missing=True))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            models: dict[tuple, type[BaseModel]] = {("table",): TableModel, ("table", "env"): EnvEntry}
            parent = models.get(loc[:-1]) or (InstanceModel if "instances" in loc[:-1] else None)
            message = unknown_name_message("key", loc[-1], list(parent.model_fields) if parent else [])
        elif error["type"] == "missing":
            message = "required key is missing"
        raise fail(loc, message) from None
    _check_names(model, fail)
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


def _check_names(model: TableModel, fail: Callable[[tuple, str], SuiteError]) -> None:
    """Env id, env kwargs, metric and loss names against the registries."""
    fields = {f.name for f in dataclasses.fields(EnvConfig)} - {"task", *RESERVED_ENV_KWARGS}
    envs = [(("table", "env"), model.env.id, model.env.kwargs)] + [
        (("table", "instances", i), inst.id, inst.kwargs) for i, inst in enumerate(model.instances or ())
    ]
    for where, env_id, kwargs in envs:
        if env_id is not None and env_id not in lossagent_env.ENV_IDS:
            raise fail((*where, "id"), unknown_name_message("env id", env_id, lossagent_env.ENV_IDS))
        for key in kwargs:
            if key in RESERVED_ENV_KWARGS:
                raise fail((*where, "kwargs", key), "set by the table (metrics, stages), not in env kwargs")
            if key not in fields:
                raise fail((*where, "kwargs", key), unknown_name_message("EnvConfig field", key, fields))
    known = metric_names()
    for i, metric in enumerate(model.metrics):
        if metric not in known:
            raise fail(("table", "metrics", i), unknown_name_message("metric", metric, known))
        if metric_info(metric).set_level:
            raise fail(("table", "metrics", i), f"metric {metric!r} compares sets of images and cannot score a node")
    losses = model.env.kwargs.get("losses") or offline_losses()
    loss_names = [str(spec.get("type")) if isinstance(spec, dict) else spec for spec in losses]
    for name, weights in model.presets.items():
        try:
            resolve_presets({name: weights}, loss_names)
        except (KeyError, ValueError) as e:
            raise fail(("table", "presets", name), str(e.args[0])) from None
