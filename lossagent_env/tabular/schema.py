"""The schema of a table file: its header and its rows, as pydantic models.

Reading a table checks every header value and every row against these models before it
trusts any of them (a damaged or hand-edited file gives one :class:`TableFormatError`
that names the file, the field and the value, never a ``KeyError`` or a bare
``sqlite3`` error deep in the reader): :func:`check_header` against
:class:`TableHeader`, :func:`check_rows` against the columns of each SQL table
(:data:`NODE_ROW` and its siblings). The layout: docs/tables.md ("The file").
"""

from __future__ import annotations

import collections
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import GenericAlias
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from lossagent_env.arguments import Finite, NonNegative

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LOSS_ROW",
    "METRIC_ROW",
    "INSTANCE_SPLITS",
    "NODE_ROW",
    "READABLE_VERSIONS",
    "RESERVED_ENV_KWARGS",
    "SPLITS",
    "UNIT_ROW",
    "RowSchema",
    "TableFormatError",
    "TableHeader",
    "check_header",
    "check_rows",
    "decode_header",
]

FORMAT = "lossagent-table"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Format versions this code reads: 1 (one configuration, every seed a tree) and 2
(problem instances, each with its replicate seeds)."""
SPLITS = ("val", "test")
INSTANCE_SPLITS = ("train", "test")

RESERVED_ENV_KWARGS = ("objective", "max_stages", "render_mode")
"""Env keyword arguments a table fixes itself (the panel, ``stages``) or has no use for."""


class TableFormatError(ValueError):
    """A file that is not a (complete, undamaged, supported) table; the message names
    the file and the field or row at fault."""


Name = Annotated[StrictStr, Field(min_length=1)]
Seed = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
Flag = Literal[0, 1]


class _Strict(BaseModel):
    """Header parts: strict types (no ``"1.5"`` for a number, no ``true`` for 1); keys
    this version does not know are kept, not refused (they may come from a later
    minor addition)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class LossEntry(_Strict):
    """One entry of ``losses``: a loss of the action, in action order."""

    name: Name = Field(description="Loss name as the live env's loss_names has it.")
    scale: Annotated[Finite, Field(ge=0.0)] = Field(description="Effective weight = action * scale.")
    value_range: list[Finite] = Field(
        min_length=2, max_length=2, description="Finite [low, high] of the loss's value (the observation's bounds)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LossEntry:
        low, high = self.value_range
        if low > high:
            raise ValueError(f"value_range {[low, high]} has low > high")
        return self


class PresetEntry(_Strict):
    """One entry of ``presets``: a named action vector."""

    name: Name = Field(description="Preset name; action i plays preset i.")
    weights: list[Annotated[Finite, Field(ge=0.0, le=1.0)]] = Field(
        description="One weight in [0, 1] per loss, in the order of losses."
    )


class EnvConfigEntry(_Strict):
    """``env_config``: the full configuration of the build (only ``task`` is read)."""

    task: Name | None = Field(default=None, description="The task the env id fixed.")


class InstanceEntry(_Strict):
    """One entry of ``instances`` (format 2): a problem instance and its replicates."""

    name: Name = Field(description="Instance name, unique in the table.")
    split: Literal["train", "test"] = Field(description="'train': agents may tune on it; 'test': only scored on.")
    env_id: Name = Field(description="Gymnasium id of its live env.")
    env_kwargs: dict[StrictStr, Any] = Field(description="Its gym.make kwargs (the table's, with its own).")
    env_config: EnvConfigEntry = Field(description="Its full EnvConfig.")
    seeds: list[Seed] = Field(min_length=1, description="Its replicates: one seed, one tree each, in order.")


class TableHeader(_Strict):
    """The header of a table (each key: docs/tables.md, "The file")."""

    format: Literal["lossagent-table"]
    format_version: Literal[1, 2]
    env_id: Name = Field(description="Gymnasium id of the live env.")
    env_kwargs: dict[StrictStr, Any] = Field(description="gym.make kwargs of the live env.")
    env_config: EnvConfigEntry = Field(description="The full EnvConfig of the build.")
    losses: list[LossEntry] = Field(min_length=1, description="The action's losses, in order.")
    presets: list[PresetEntry] = Field(min_length=1, description="The presets, in action order.")
    metrics: list[Name] = Field(min_length=1, description="The panel: metric names, in order.")
    metric_lower_better: dict[StrictStr, StrictBool] | None = None
    seeds: list[Seed] = Field(min_length=1, description="The seeds, one tree each, in order.")
    stages: Annotated[StrictInt, Field(ge=1)] = Field(description="T, the depth of every tree.")
    splits: dict[StrictStr, StrictStr] | None = None
    torch_threads: Annotated[StrictInt, Field(ge=1)] | None = None
    versions: dict[StrictStr, StrictStr | None] | None = None
    build: dict[StrictStr, Any] | None = None
    instances: list[InstanceEntry] | None = None

    @property
    def preset_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.presets)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.losses)


@dataclass(frozen=True)
class RowSchema:
    """The columns of one SQL table, as ``SELECT {columns}`` returns them, and their types.

    Attributes:
        table: The SQL table.
        columns: Column names, in order.
        types: One pydantic type per column.
    """

    table: str
    columns: tuple[str, ...]
    types: tuple[Any, ...]

    @functools.cached_property
    def adapter(self) -> TypeAdapter:
        rows: Any = GenericAlias(list, GenericAlias(tuple, self.types))  # list[tuple[*types]], built at run time
        return TypeAdapter(rows)

    @property
    def select(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.table}"


NODE_ROW = RowSchema(
    "nodes",
    ("seed", "path", "depth", "diverged", "train_seconds", "eval_seconds"),
    (StrictInt, StrictStr, StrictInt, Flag, NonNegative, NonNegative),
)
"""A row of ``nodes``."""

METRIC_ROW = RowSchema(
    "metrics",
    ("seed", "path", "split", "metric", "value", "invalid"),
    (StrictInt, StrictStr, Literal["val", "test"], StrictStr, Finite | None, Flag),
)
"""A row of ``metrics`` (``value`` None: NaN, not measured)."""

LOSS_ROW = RowSchema("losses", ("seed", "path", "loss", "value"), (StrictInt, StrictStr, StrictStr, StrictFloat | None))
"""A row of ``losses`` (``value`` None: NaN; an infinite loss is a value)."""

UNIT_ROW = RowSchema("units", ("seed", "first", "nodes"), (StrictInt, StrictInt, StrictInt))
"""A row of ``units``."""


def decode_header(rows: Sequence[tuple[Any, Any]], source: str) -> dict[str, Any]:
    """``{key: JSON value}`` from the rows of ``header``.

    Raises:
        TableFormatError: A key that is not text, or a value that is not JSON.
    """
    header: dict[str, Any] = {}
    for key, value in rows:
        if not isinstance(key, str) or not isinstance(value, (str, bytes)):
            raise TableFormatError(f"Table {source}: header row {key!r} = {value!r} is not a key and a JSON text.")
        try:
            header[key] = json.loads(value)
        except ValueError as e:
            raise TableFormatError(
                f"Table {source}: header field {key!r} is not valid JSON ({e}): {_short(value)}."
            ) from None
    return header


def check_header(header: Mapping[str, Any], source: str) -> TableHeader:
    """Validate a decoded header.

    Args:
        header: ``{key: value}`` as :func:`decode_header` returns it (format and
            version already checked by the caller, which has its own messages).
        source: How messages name the file.

    Raises:
        TableFormatError: The first bad field, by its dotted path (``presets[2].weights[0]``),
            its value and what is allowed.
    """
    try:
        model = TableHeader.model_validate(dict(header))
    except ValidationError as e:
        error = e.errors(include_url=False)[0]
        field = _location(error["loc"])
        if error["type"] == "missing":
            raise TableFormatError(f"Table {source}: the header has no field {field!r}.") from None
        raise TableFormatError(
            f"Table {source}: header field {field!r} is {_short(error.get('input'))}: {error['msg']}."
        ) from None
    _check_relations(model, source)
    return model


def _check_relations(model: TableHeader, source: str) -> None:
    """What the types alone cannot say: lengths agree, names are used once."""

    def fail(field: str, problem: str) -> None:
        raise TableFormatError(f"Table {source}: header field {field!r} {problem}.")

    for field, names in (
        ("losses", model.loss_names),
        ("presets", model.preset_names),
        ("metrics", model.metrics),
        ("seeds", model.seeds),
    ):
        repeated = sorted(str(n) for n, c in collections.Counter(names).items() if c > 1)
        if repeated:
            fail(field, f"repeats {repeated}; each entry appears once")
    n = len(model.losses)
    for i, preset in enumerate(model.presets):
        if len(preset.weights) != n:
            fail(
                f"presets[{i}].weights",
                f"has {len(preset.weights)} weights; the table has {n} losses "
                f"{list(model.loss_names)}, one weight each",
            )
    reserved = sorted(set(model.env_kwargs) & set(RESERVED_ENV_KWARGS))
    if reserved:
        fail("env_kwargs", f"sets {reserved}, which a table fixes itself")
    if model.format_version == 1:
        if model.instances is not None:
            fail("instances", "is set; format version 1 has no instances (version 2 has)")
        return
    if not model.instances:
        fail("instances", "is missing or empty; format version 2 lists at least one instance")
    assert model.instances is not None
    names = [entry.name for entry in model.instances]
    repeated = sorted(n for n, c in collections.Counter(names).items() if c > 1)
    if repeated:
        fail("instances", f"repeats the names {repeated}; each instance appears once")
    seeds = [seed for entry in model.instances for seed in entry.seeds]
    if seeds != list(model.seeds):
        fail(
            "seeds",
            f"is {list(model.seeds)[:12]}; in format version 2 it is every instance's seeds, in "
            f"instance order: {seeds[:12]}",
        )
    for i, entry in enumerate(model.instances):
        reserved = sorted(set(entry.env_kwargs) & set(RESERVED_ENV_KWARGS))
        if reserved:
            fail(f"instances[{i}].env_kwargs", f"sets {reserved}, which a table fixes itself")


def check_rows(rows: list[tuple[Any, ...]], schema: RowSchema, source: str) -> list[tuple[Any, ...]]:
    """Validate the rows of one SQL table (as ``schema.select`` returns them).

    Raises:
        TableFormatError: The first bad row: its table, the row, the column and the value.
    """
    try:
        return schema.adapter.validate_python(rows)
    except ValidationError as e:
        error = e.errors(include_url=False)[0]
        loc = error["loc"]
        row = rows[loc[0]] if loc and isinstance(loc[0], int) else None
        column = schema.columns[loc[1]] if len(loc) > 1 and isinstance(loc[1], int) else None
        where = f"row {_short(row)}" if row is not None else "a row"
        what = f"column {column!r} is {_short(error.get('input'))}: " if column else ""
        raise TableFormatError(f"Table {source}: {schema.table} {where}: {what}{error['msg']}.") from None


def _location(loc: Sequence[Any]) -> str:
    """``("presets", 2, "weights", 0)`` -> ``"presets[2].weights[0]"``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith(("constrained-", "literal[", "function-")) and part not in _INTERNAL:
            text += f".{part}" if text else str(part)
    return text


_INTERNAL = {"int", "float", "str", "bool", "none", "list", "dict"}
"""Pydantic's names of union branches (and, by prefix, of constrained types and validators), not fields."""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
