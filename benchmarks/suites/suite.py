"""Benchmark suites as data: TOML files under ``benchmarks/suites/``, validated on load.

A suite names one environment, a stage budget, a list of objectives, a list of agents
and a list of seeds. The runner expands it into ``agents x objectives x seeds`` runs
with the same budget and, per seed, the same initial network.

Every key of the file is documented in :class:`SuiteModel` (an example file and the
table of keys: docs/benchmarks.md, "Suites"). A suite on a table replay may add the
``[new_objective]`` track, the paper's question (docs/tables.md): agents are scored
under objectives they never tuned on; those with a training budget tune on the table's
training instances under ``tune_on`` instead.

A malformed suite raises :class:`SuiteError`, which names the file, the line and the
key; an unknown env, agent, loss or metric name gets a "Did you mean" hint.

Example:
    >>> from benchmarks.suites.suite import load_suite
    >>> suite = load_suite("smoke")
    >>> [a.label for a in suite.agents]
    ['fixed', 'random', 'ucb', 'dwa', 'llm']
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import re
import tomllib
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from benchmarks.suites import SUITES_DIR, suite_names
from benchmarks.suites.tomlpos import decode_error_line, dotted, file_loc, locate
from lossagent_env.registry import unknown_name_message

__all__ = [
    "SUITES_DIR",
    "AgentEntry",
    "Budget",
    "EnvEntry",
    "ObjectiveEntry",
    "Suite",
    "SuiteError",
    "TableIdentity",
    "file_sha256",
    "identify_table",
    "load_suite",
    "objective_label",
    "read_suite_file",
    "safe_name",
    "suite_names",
    "validate_names",
]

TABULAR_ENV_ID = "LossAgent/Tabular-v0"
"""The env id of table replays: its kwargs are the table's, not EnvConfig's."""

TABULAR_KWARGS = ("seeds", "table", "instances")
"""The env kwargs a suite may give a table replay: the table fixes every other setting."""


_SAFE = re.compile(r"[^A-Za-z0-9._+\-]")


class SuiteError(ValueError):
    """A suite file that cannot be used, located as precisely as possible.

    Attributes:
        file: Path of the suite file (or ``"<string>"``).
        line: 1-based line of the offending key, or None if it could not be found.
        key: Dotted key, e.g. ``"agents[2].kwargs"``, or None for file-level errors.
    """

    def __init__(self, file: str, line: int | None, key: str | None, message: str):
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = file if line is None else f"{file}:{line}"
        what = f"key {key!r}: " if key else ""
        super().__init__(f"{where}: {what}{message}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.file, self.line, self.key, self.message))

    @classmethod
    def at(cls, source: str, text: str | None, loc: Sequence, message: str) -> SuiteError:
        """The error of the key at ``loc`` (e.g. ``("env", "kwargs", "lr")``) of a file
        whose text is ``text`` (None: no line)."""
        return cls(source, locate(text, loc), dotted(loc), message)


# --------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvEntry(_Strict):
    """The ``[env]`` table."""

    id: str = Field(description="Gymnasium id, e.g. 'LossAgent/SuperResolution-v0'.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of EnvConfig passed to gym.make (not objective, "
        "max_stages or stage_iters: those come from [budget] and objectives).",
    )


class Budget(_Strict):
    """The ``[budget]`` table: equal for every agent of the suite."""

    max_stages: int = Field(ge=1, description="Stages (env steps) per episode.")
    stage_iters: int = Field(
        ge=1,
        description="Optimiser iterations per stage. On a table replay, the table's (it is "
        "checked against the table, which fixes it).",
    )


class AgentEntry(_Strict):
    """One ``[[agents]]`` table."""

    name: str = Field(description="Short agent name given to agents.make_agent.")
    label: str | None = Field(
        default=None,
        description="Name of the agent in run names and reports; defaults to `name`. "
        "Needed when one agent appears twice with different kwargs.",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Agent keyword arguments.")

    @property
    def display(self) -> str:
        """The label used in run names and reports."""
        return self.label or self.name


def _check_objective_spec(spec: str | dict[str, float]) -> str | dict[str, float]:
    if isinstance(spec, dict):
        if not spec:
            raise ValueError("an objective table must name at least one metric")
        bad = {k: v for k, v in spec.items() if not math.isfinite(v) or v == 0}
        if bad:
            raise ValueError(f"objective weights must be finite and non-zero, got {bad}")
    return spec


ObjectiveSpec = Annotated[str | dict[str, float], AfterValidator(_check_objective_spec)]
"""An objective in a suite file: a metric name or a ``{metric = weight}`` table."""

_OBJECTIVE_PLACES = (("objectives", int), ("new_objective", "objectives", int), ("new_objective", "tune_on"))
"""Where a suite file holds an objective (``int``: any position in the list)."""


def _is_objective_place(loc: tuple) -> bool:
    return any(
        len(loc) == len(place) and all(isinstance(p, int) if q is int else p == q for p, q in zip(loc, place))
        for place in _OBJECTIVE_PLACES
    )


class ObjectiveEntry(_Strict):
    """One objective: a metric name or a ``{metric: weight}`` mix."""

    spec: str | dict[str, float] = Field(description="What is passed as objective=.")
    label: str = Field(description="File-system-safe name used in run names and reports.")

    def metric_names(self) -> list[str]:
        """The metrics this objective reads."""
        return [self.spec] if isinstance(self.spec, str) else list(self.spec)


class NewObjectiveEntry(_Strict):
    """The ``[new_objective]`` table: the track of objectives no agent tunes on."""

    objectives: list[ObjectiveSpec] = Field(
        min_length=1, description="Objectives the agents are scored on without tuning on them."
    )
    tune_on: ObjectiveSpec = Field(
        description="The objective agents with a training budget tune under, on the table's "
        "training instances (not one of `objectives`)."
    )


class SuiteModel(_Strict):
    """The whole suite file."""

    name: str = Field(description="Suite name (the file stem for shipped suites).")
    description: str = Field(default="", description="What the suite is for.")
    env: EnvEntry
    budget: Budget
    objectives: list[ObjectiveSpec] = Field(
        min_length=1, description="Metric names or {metric: weight} tables."
    )
    agents: list[AgentEntry] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1, description="One run per seed and (agent, objective).")
    table: dict[str, Any] | None = Field(
        default=None,
        description="How the table this suite replays was built: a [table] section, read "
        "by `lossagent tabulate` (benchmarks.execution.tabulate), not by the benchmark.",
    )
    new_objective: NewObjectiveEntry | None = Field(
        default=None,
        description="The new-objective track (table replays only): scored under objectives "
        "no agent tunes on; agents tune under `tune_on`.",
    )
    requires_data: bool = Field(
        default=False,
        description="True if the suite needs an image folder given with --data "
        "(it becomes the env's `dataset`).",
    )

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        from lossagent_env.seeds import check_seeds

        return check_seeds(seeds)


NEW_TRACK_SUFFIX = ".new"
"""Appended to the label of an objective of the new-objective track (``"piqe.new"``):
its runs and report rows differ from a tuned run on the same objective."""


class Suite:
    """A validated suite, ready to be expanded into runs.

    Attributes:
        name: Suite name.
        description: What it is for.
        path: The file it came from (None for a suite built from a string).
        env_id: Gymnasium id.
        env_kwargs: EnvConfig keyword arguments (without objective and budget).
        max_stages: Stages per episode (same for every agent).
        stage_iters: Iterations per stage (same for every agent).
        objectives: Objectives with their labels, in file order (the tuned track:
            agents tune under the objective they are scored on).
        new_objectives: The new-objective track's objectives (labels end in
            :data:`NEW_TRACK_SUFFIX`); empty without one.
        tune_on: What agents tune under in the new-objective track (None without one).
        agents: Agent entries, in file order.
        seeds: Seeds, in file order.
        requires_data: Whether ``--data`` must be given.
    """

    def __init__(self, model: SuiteModel, path: Path | None = None):
        self.name = model.name
        self.description = model.description
        self.path = path
        self.env_id = model.env.id
        self.env_kwargs = dict(model.env.kwargs)
        self.max_stages = model.budget.max_stages
        self.stage_iters = model.budget.stage_iters
        self.objectives = [ObjectiveEntry(spec=s, label=objective_label(s)) for s in model.objectives]
        new = model.new_objective
        self.new_objectives = [
            ObjectiveEntry(spec=s, label=objective_label(s) + NEW_TRACK_SUFFIX) for s in (new.objectives if new else ())
        ]
        self.tune_on = ObjectiveEntry(spec=new.tune_on, label=objective_label(new.tune_on)) if new else None
        self.agents = list(model.agents)
        self.seeds = list(model.seeds)
        self.requires_data = model.requires_data
        self.table = model.table
        self.values_checked = False
        """Whether :func:`validate_values` has passed on this suite (a changed copy,
        :meth:`replace`, is a new suite and is checked again)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description that :meth:`from_dict` turns back into the suite."""
        return {
            "name": self.name,
            "description": self.description,
            "env": {"id": self.env_id, "kwargs": self.env_kwargs},
            "budget": {"max_stages": self.max_stages, "stage_iters": self.stage_iters},
            "objectives": [o.spec for o in self.objectives],
            "agents": [a.model_dump(exclude_none=True) for a in self.agents],
            "seeds": self.seeds,
            "requires_data": self.requires_data,
            **({"table": self.table} if self.table is not None else {}),
            **(
                {"new_objective": {"objectives": [o.spec for o in self.new_objectives], "tune_on": self.tune_on.spec}}
                if self.tune_on is not None else {}
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Suite:
        """Rebuild a suite from :meth:`to_dict` output (validated again)."""
        return _validate(data, source=source, text=None, path=None)

    def replace(
        self,
        *,
        seeds: Sequence[int] | None = None,
        env_kwargs: dict[str, Any] | None = None,
        agent_kwargs: dict[str, dict[str, Any]] | None = None,
    ) -> Suite:
        """A copy with overrides (the command line's ``--seeds``, ``--device``, ``--llm``).

        Args:
            seeds: New seed list.
            env_kwargs: Keys merged into the env kwargs.
            agent_kwargs: ``{agent name: kwargs}`` merged into every entry of that agent.
        """
        data = self.to_dict()
        if seeds is not None:
            data["seeds"] = list(seeds)
        if env_kwargs:
            data["env"]["kwargs"] = {**data["env"]["kwargs"], **env_kwargs}
        for entry in data["agents"]:
            extra = (agent_kwargs or {}).get(entry["name"])
            if extra:
                entry["kwargs"] = {**entry.get("kwargs", {}), **extra}
        suite = Suite.from_dict(data, source=str(self.path or self.name))
        suite.path = self.path
        return suite

    def __repr__(self) -> str:
        return (
            f"Suite(name={self.name!r}, env={self.env_id!r}, agents={[a.display for a in self.agents]}, "
            f"objectives={[o.label for o in self.objectives]}, seeds={self.seeds}, "
            f"max_stages={self.max_stages}, stage_iters={self.stage_iters})"
        )


def safe_name(text: str) -> str:
    """``text`` made safe as (part of) a file name: every character outside
    ``[A-Za-z0-9._+-]`` becomes ``-``, and so do leading dots (no hidden file, no
    ``..``). The one function for every label that goes into a path.

    ``"LossAgent/JPEG-v0"`` -> ``"LossAgent-JPEG-v0"``; ``"../../x"`` -> ``"---..-x"``.
    """
    safe = _SAFE.sub("-", text)
    stripped = safe.lstrip(".")
    return "-" * (len(safe) - len(stripped)) + stripped if safe else "-"


def objective_label(spec: str | dict[str, float]) -> str:
    """File-system-safe name of an objective spec.

    ``"psnr"`` -> ``"psnr"``; ``{"psnr": 1, "ssim": 10}`` -> ``"psnr+10ssim"``.
    """
    if isinstance(spec, str):
        return safe_name(spec)
    parts = [name if weight == 1 else f"{weight:g}{name}" for name, weight in spec.items()]
    return safe_name("+".join(parts))


# --------------------------------------------------------------------------- loading


def load_suite(name_or_path: str | Path, *, check_names: bool = True) -> Suite:
    """Load and validate a suite by name (``"smoke"``) or by path of a TOML file.

    Args:
        name_or_path: A shipped suite name, or the path of a ``.toml`` file.
        check_names: Also check env, agent, loss and metric names against the
            registries (imports the environment and the agents).

    Returns:
        The validated :class:`Suite`.

    Raises:
        SuiteError: The file is malformed; the message names file, line and key.
        KeyError: An unknown suite name (with a "Did you mean" hint).
    """
    path, text = read_suite_file(name_or_path)
    return _load(text, str(path), path, check_names)


def read_suite_file(name_or_path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The path and text of a suite file: a file of that path if one exists, else the
    shipped suite of that name (even where a folder has its name).

    Raises:
        FileNotFoundError: A path (``.toml``, or with a ``/``) that does not exist.
        KeyError: An unknown suite name (with a "Did you mean" hint).
        SuiteError: The file is not UTF-8 text or cannot be read.
    """
    text_path = Path(name_or_path)
    name = str(name_or_path)
    if text_path.is_file():
        path = text_path
    elif text_path.suffix == ".toml" or "/" in name or "\\" in name:
        raise FileNotFoundError(f"Suite file {name!r} does not exist.")
    elif name in suite_names():  # a shipped suite, even where a folder has its name
        path = SUITES_DIR / f"{name}.toml"
    else:
        raise KeyError(unknown_name_message("suite", name, suite_names()))
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(str(path), None, None, f"not UTF-8 text ({e}); a suite is a TOML file") from None
    except OSError as e:
        raise SuiteError(str(path), None, None, f"cannot be read: {e.strerror or e}") from None


def load_suite_text(text: str, source: str = "<string>", *, check_names: bool = True) -> Suite:
    """Like :func:`load_suite` for TOML given as a string (for tests and notebooks)."""
    return _load(text, source, None, check_names)


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """The TOML document ``text``, or a :class:`SuiteError` naming its line in ``source``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(source, decode_error_line(e), None, f"not valid TOML: {e}") from e


def _load(text: str, source: str, path: Path | None, check_names: bool) -> Suite:
    suite = _validate(parse_toml(text, source), source=source, text=text, path=path)
    if check_names:
        validate_names(suite, text=text, source=source)
        validate_values(suite, text=text, source=source)
    return suite


def _validate(data: dict[str, Any], *, source: str, text: str | None, path: Path | None) -> Suite:
    try:
        model = SuiteModel.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        # an unknown key (often a typo) explains the "missing" error that comes with it
        err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
        loc = file_loc(data, tuple(err["loc"]), keep_missing=err["type"] == "missing")
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown_name_message("key", loc[-1], _allowed_keys(loc))
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif _is_objective_place(loc) and err["type"] != "value_error":
            value = functools.reduce(lambda node, key: node[key], loc, data)
            msg = f"{value!r} is not an objective. Allowed: a metric name or a table of {{metric = weight}} numbers"
        others = {
            dotted(file_loc(data, tuple(x["loc"]), x["type"] in ("missing", "extra_forbidden")))
            for x in errors
        } - {dotted(loc)}
        more = f" (also check: {', '.join(sorted(others))})" if others else ""
        raise SuiteError.at(source, text, loc, msg + more) from None
    labels = [a.display for a in model.agents]
    _no_duplicates(labels, "agents", "agent label", source, text)
    _no_file_name_clash(labels, source, text)
    _no_duplicates([objective_label(s) for s in model.objectives], "objectives", "objective", source, text)
    if model.new_objective is not None:
        new = model.new_objective
        labels = [objective_label(s) for s in new.objectives]
        _no_duplicates(labels, ("new_objective", "objectives"), "objective", source, text)
        tuned = objective_label(new.tune_on)
        if tuned in labels:
            raise SuiteError.at(
                source, text, ("new_objective", "tune_on"),
                f"{tuned!r} is one of the track's objectives; the new-objective track scores agents on "
                "objectives they never tuned on. Allowed: another objective",
            )
        if model.env.id != TABULAR_ENV_ID:
            raise SuiteError.at(
                source, text, ("new_objective",),
                f"the new-objective track tunes agents on a table's training instances; env "
                f"{model.env.id!r} is not a table replay. Allowed: with env id {TABULAR_ENV_ID!r}",
            )
    for reserved in ("objective", "max_stages", "stage_iters"):
        if reserved in model.env.kwargs:
            where = "`objectives`" if reserved == "objective" else "[budget]"
            raise SuiteError.at(source, text, ("env", "kwargs", reserved), f"set by the suite's {where}, not in env kwargs")
    return Suite(model, path=path)


def _no_duplicates(values: list[str], key: str | tuple[str, ...], what: str, source: str, text: str | None) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            hint = " (add `label = ...` to tell two entries apart)" if key == "agents" else ""
            message = f"duplicate {what} {value!r}; each must appear once{hint}"
            raise SuiteError.at(source, text, (*((key,) if isinstance(key, str) else key), i), message)
        seen.add(value)


def _no_file_name_clash(labels: list[str], source: str, text: str | None) -> None:
    """Two agent labels that differ only in characters :func:`safe_name` replaces would
    give their runs the same name (and the same rows and TensorBoard folder)."""
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        safe = safe_name(label)
        if safe in seen:
            message = (
                f"agent label {label!r} names its runs like agents[{seen[safe]}] "
                f"{labels[seen[safe]]!r} (both become {safe!r} in run and file names, where "
                "characters outside [A-Za-z0-9._+-] become '-'). Allowed: labels that differ "
                "in those characters"
            )
            raise SuiteError.at(source, text, ("agents", i, "label"), message)
        seen[safe] = i


def _allowed_keys(loc: tuple) -> list[str]:
    parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
    model: dict[tuple, type[BaseModel]] = {
        (): SuiteModel, ("env",): EnvEntry, ("budget",): Budget, ("agents",): AgentEntry,
        ("new_objective",): NewObjectiveEntry,
    }
    return list(model[parent].model_fields) if parent in model else []


# --------------------------------------------------------------------------- names


def validate_names(suite: Suite, text: str | None = None, source: str | None = None) -> None:
    """Check env id, env kwargs, backbone, loss, metric and agent names against the registries.

    Raises:
        SuiteError: An unknown name; the message has a "Did you mean" hint.
    """
    import dataclasses

    import gymnasium as gym

    import lossagent_env  # noqa: F401  (registers the env ids)
    from lossagent_env.config import EnvConfig

    source = source or str(suite.path or suite.name)

    def fail(loc: tuple, message: str) -> None:
        raise SuiteError.at(source, text, loc, message)

    env_ids = [i for i in gym.registry if i.startswith("LossAgent/")]
    if suite.env_id not in gym.registry:
        fail(("env", "id"), unknown_name_message("env id", suite.env_id, env_ids))
    if suite.env_id == TABULAR_ENV_ID:
        _check_tabular_kwargs(suite, fail)
        _check_agents(suite, fail)
        return
    fields = {f.name for f in dataclasses.fields(EnvConfig)} - {"objective", "task"}
    check_env_names(suite.env_kwargs, fields, ("env",), functools.partial(SuiteError.at, source, text))
    from lossagent_env.metrics import metric_names

    known_metrics = metric_names()
    for i, objective in enumerate(suite.objectives):
        for metric in objective.metric_names():
            if metric not in known_metrics:
                fail(("objectives", i), unknown_name_message("metric", metric, known_metrics))
    _check_agents(suite, fail)


def check_env_names(
    kwargs: dict[str, Any], fields: set[str], where: tuple, error: Callable[[tuple, str], SuiteError],
    reserved: Collection[str] = (),
) -> None:
    """The env kwargs at ``(*where, "kwargs")`` name ``fields`` of EnvConfig (not a key of
    ``reserved``, which a table sets), a registered backbone and registered losses.

    Raises:
        SuiteError: ``error(loc, message)`` of the first unknown name ("Did you mean").
    """
    from lossagent_env.backbones import BACKBONES
    from lossagent_env.losses import LOSSES

    for key in kwargs:
        if key in reserved:
            raise error((*where, "kwargs", key), "set by the table (metrics, stages), not in env kwargs")
        if key not in fields:
            raise error((*where, "kwargs", key), unknown_name_message("EnvConfig field", key, fields))
    backbone = kwargs.get("backbone")
    if isinstance(backbone, str) and backbone not in BACKBONES:
        raise error((*where, "kwargs", "backbone"), unknown_name_message("backbone", backbone, BACKBONES.names()))
    losses = kwargs.get("losses")
    for i, spec in enumerate(losses if isinstance(losses, list) else ()):  # other values: the env's check
        name = spec.get("type") if isinstance(spec, dict) else spec
        if not isinstance(name, str) or name not in LOSSES:
            raise error((*where, "kwargs", "losses", i), unknown_name_message("loss", name, LOSSES.names()))


def _check_tabular_kwargs(suite: Suite, fail: Any) -> None:
    """A table replay takes ``table`` (required) and ``seeds``; an env setting (device,
    data, ...) is refused by :func:`_validate_tabular`, which knows the table's value."""
    import dataclasses

    from lossagent_env.config import EnvConfig
    from lossagent_env.tabular.replay import shipped_tables

    settings = {f.name for f in dataclasses.fields(EnvConfig)}
    for key in suite.env_kwargs:
        if key not in TABULAR_KWARGS and key not in settings:
            message = unknown_name_message("argument of the tabular env", key, TABULAR_KWARGS)
            fail(("env", "kwargs", key), f"{message} (the table fixes every other env setting)")
    if "table" not in suite.env_kwargs:
        fail(
            ("env", "kwargs", "table"),
            f"a table replay needs `table = NAME_OR_PATH`: a table file, or a shipped table {shipped_tables()}",
        )
    if suite.requires_data:
        fail(("requires_data",), "a table replay reads no images; remove `requires_data` (allowed: false)")


def _check_agents(suite: Suite, fail: Any) -> None:
    known_agents = agent_names()
    for i, agent in enumerate(suite.agents):
        if agent.name not in known_agents:
            fail(("agents", i, "name"), unknown_name_message("agent", agent.name, known_agents))


def validate_values(suite: Suite, text: str | None = None, source: str | None = None) -> None:
    """Check the env settings with every objective, as the env would, before anything runs.

    The env's refusals carry the field at fault (``ConfigError.loc``), which locates
    the key in the file.

    Raises:
        SuiteError: A value the env refuses (``patch_size = 0``, a negative objective
            weight, an ``eval_size`` too small for a metric), located in the file.
    """
    import gymnasium as gym

    import lossagent_env  # noqa: F401  (registers the env ids)
    from lossagent_env.env import check_settings
    from lossagent_env.errors import ConfigError

    source = source or str(suite.path or suite.name)
    if text is None and suite.path is not None:  # to name the line of a bad value
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = suite.path.read_text(encoding="utf-8")
    if suite.env_id == TABULAR_ENV_ID:
        _validate_tabular(suite, text, source)
    else:
        spec = gym.registry.get(suite.env_id)
        task = (spec.kwargs or {}).get("task") if spec is not None else None
        base = {"max_stages": suite.max_stages, "stage_iters": suite.stage_iters, **suite.env_kwargs}
        if task is not None:
            base["task"] = task
        for i, objective in [(None, None), *enumerate(suite.objectives)]:
            try:
                check_settings(**base, **({} if objective is None else {"objective": objective.spec}))
            except ConfigError as e:
                raise SuiteError.at(source, text, suite_loc(suite, e.loc, i), str(e)) from None
    suite.values_checked = True


def suite_loc(suite: Suite, loc: Sequence, objective: int | None) -> tuple:
    """Where in a suite file the value at ``loc`` of the env's arguments comes from.

    Args:
        suite: The suite.
        loc: ``ConfigError.loc``: an argument of the env first (``"patch_size"``,
            ``"objective"``, ``"max_stages"``), then the part within it.
        objective: Index of the objective that was checked, or None.

    Returns:
        ``("objectives", i)``, ``("budget", key)``, ``("env", "kwargs", key)``, or
        ``("env", "kwargs")`` for a key the suite does not give.
    """
    field = loc[0] if loc else None
    if field == "objective" and objective is not None:
        return ("objectives", objective)
    if field in ("max_stages", "stage_iters"):
        return ("budget", field)
    if field in suite.env_kwargs:
        return ("env", "kwargs", field)
    return ("env", "kwargs")


def _validate_tabular(suite: Suite, text: str | None, source: str) -> None:
    """The table exists and holds the suite's seeds, depth and objective metrics, and the
    suite changes nothing the table fixes (env settings, iterations per stage)."""
    import gymnasium as gym

    from lossagent_env.errors import ConfigError
    from lossagent_env.tabular.replay import live_config, load_table

    def fail(loc: tuple, message: str) -> None:
        raise SuiteError.at(source, text, loc, message)

    _check_tabular_kwargs(suite, fail)
    name = str(suite.env_kwargs["table"])
    try:
        table = load_table(suite.env_kwargs["table"])
    except (OSError, TypeError, ValueError) as e:
        fail(("env", "kwargs", "table"), str(e))
    built = live_config(table)  # the settings the table was built with
    for key, value in suite.env_kwargs.items():
        if key not in TABULAR_KWARGS:
            fail(
                ("env", "kwargs", key),
                f"the table fixes it at {getattr(built, key)!r}, not {value!r} ({name!r} was built "
                f"so, and a replay trains nothing: the table fixes every other env setting). "
                f"Allowed: {list(TABULAR_KWARGS)}",
            )
    if suite.stage_iters != built.stage_iters:
        fail(
            ("budget", "stage_iters"),
            f"the table fixes it at {built.stage_iters}, not {suite.stage_iters} ({name!r} was built "
            f"with {built.stage_iters} iterations per stage, and a replay trains nothing). "
            f"Allowed: {built.stage_iters}",
        )
    for i, objective in enumerate(suite.objectives):
        try:
            env = gym.make(TABULAR_ENV_ID, **suite.env_kwargs, objective=objective.spec, max_stages=suite.max_stages)
        except ConfigError as e:
            fail(suite_loc(suite, e.loc, i), str(e))
    trees = set(getattr(env.unwrapped, "seeds", ()))  # the trees of the instances it plays
    named = [seed for seed in suite.seeds if seed in trees]
    if named and len(named) < len(suite.seeds):
        fail(
            ("seeds",),
            f"seeds {named[:8]} name trees of the instances this suite plays ({sorted(trees)[:8]}...), which they "
            "play, while the others are mapped to problems (see Starting State of LossAgent/Tabular-v0): some "
            "problems would be played twice and others never. Allowed: seeds that all name trees, or none "
            f"(for example {max(trees) + 1} and up)",
        )
    if suite.tune_on is not None:
        for i, objective in enumerate(suite.new_objectives):
            try:
                gym.make(
                    TABULAR_ENV_ID, **suite.env_kwargs, objective=objective.spec,
                    train_objective=suite.tune_on.spec, max_stages=suite.max_stages,
                )
            except ConfigError as e:
                where = ("new_objective", "tune_on") if e.loc[:1] == ("train_objective",) else ("new_objective", "objectives", i)
                fail(where, str(e))


class TableIdentity(_Strict):
    """The table file a benchmark replays, recorded in its ``suite.json`` when it starts
    (see :mod:`benchmarks.execution.results`), so that nothing is scored against another file."""

    table: str = Field(description="The table as the suite names it: a path or a shipped name.")
    path: str = Field(description="The file that name resolved to, absolute.")
    sha256: str = Field(description="SHA-256 of the file's bytes, in hex.")
    content: str | None = Field(
        default=None,
        description="SHA-256 of what scores read (lossagent_env.tabular.Table.content_sha256): "
        "the same for a rebuild of one recipe on one machine, whose file differs in its seconds.",
    )


def table_differs(recorded: TableIdentity | None, now: TableIdentity) -> str | None:
    """Why ``now`` is not the table of ``recorded`` (None where it is: the same file, or
    a rebuild of one recipe with the same values and other seconds)."""
    if recorded is not None and (recorded.sha256 == now.sha256 or (recorded.content and recorded.content == now.content)):
        return None
    was = f"sha256 {recorded.sha256}" if recorded is not None else "no recorded table"
    why = f"it has sha256 {now.sha256}, the benchmark's record {was}"
    return why + (", and its values differ, so its scores would change" if recorded and recorded.content else "")


def identify_table(table: str | os.PathLike[str]) -> TableIdentity:
    """Resolve a table (path or shipped name, as ``LossAgent/Tabular-v0`` does) and hash it.

    Raises:
        FileNotFoundError: No such table file or shipped table.
    """
    from lossagent_env.tabular import load_table, resolve_table

    path = resolve_table(table).resolve()
    return TableIdentity(
        table=str(table), path=str(path), sha256=file_sha256(path), content=load_table(path).content_sha256()
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, in hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def agent_names() -> list[str]:
    """Short names accepted by ``agents.make_agent``."""
    import agents

    return sorted(agents.AGENTS)
