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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import lossagent_env
from benchmarks.suite import EnvEntry, SuiteError, read_suite_file
from benchmarks.tomlpos import decode_error_line, file_loc
from lossagent_env.config import EnvConfig
from lossagent_env.losses import offline_losses
from lossagent_env.metrics import metric_info, metric_names
from lossagent_env.registry import unknown_name_message
from lossagent_env.tabular.build import RESERVED_ENV_KWARGS, TableSpec
from lossagent_env.tabular.replay import check_seeds
from lossagent_env.wrappers import resolve_presets

__all__ = ["TableModel", "load_table_spec", "table_spec_from_text"]


class TableModel(BaseModel):
    """The ``[table]`` section of a suite file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", description="What the table is for.")
    env: EnvEntry = Field(
        description="Env id and gym.make kwargs, as a bench suite's [env]; stage_iters "
        "goes here too. Not objective or max_stages: the table sets them."
    )
    stages: int = Field(ge=1, description="Depth T: stages of every preset sequence.")
    seeds: list[int] = Field(min_length=1, description="Episode seeds, one tree each.")
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
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        return check_seeds(seeds)

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
            parent = models.get(loc[:-1])
            message = unknown_name_message("key", loc[-1], list(parent.model_fields) if parent else [])
        elif error["type"] == "missing":
            message = "required key is missing"
        raise fail(loc, message) from None
    _check_names(model, fail)
    return TableSpec(
        env_id=model.env.id,
        env_kwargs=dict(model.env.kwargs),
        presets=dict(model.presets),
        metrics=tuple(model.metrics),
        seeds=tuple(model.seeds),
        stages=model.stages,
        threads=model.threads,
        description=model.description,
    )


def _check_names(model: TableModel, fail: Callable[[tuple, str], SuiteError]) -> None:
    """Env id, env kwargs, metric and loss names against the registries."""
    if model.env.id not in lossagent_env.ENV_IDS:
        raise fail(("table", "env", "id"), unknown_name_message("env id", model.env.id, lossagent_env.ENV_IDS))
    fields = {f.name for f in dataclasses.fields(EnvConfig)} - {"task", *RESERVED_ENV_KWARGS}
    for key in model.env.kwargs:
        if key in RESERVED_ENV_KWARGS:
            raise fail(("table", "env", "kwargs", key), "set by the table (metrics, stages), not in env kwargs")
        if key not in fields:
            raise fail(("table", "env", "kwargs", key), unknown_name_message("EnvConfig field", key, fields))
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
