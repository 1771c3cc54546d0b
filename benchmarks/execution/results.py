"""The output directory of a benchmark: its layout, the results file and resuming.

The layout (``suite.json``, ``runner.json``, ``results.jsonl``, ``tb/<run>/``, and the
report's files) is in docs/benchmarks.md ("The output folder"). ``suite.json`` is
written last when a benchmark starts, so its presence marks a benchmark directory; for a
table replay it records the table file (:data:`TABLE_RECORD`), against which alone
``--resume`` and ``lossagent report`` go on. ``lossagent run --out`` writes
``results.jsonl`` and ``tb/`` only.

A row is a :class:`ResultRow`, checked as it is read; a bad one is an error naming the
file, the line and the field. For the report, exact repeats are dropped and different
rows for one stage are an error (:func:`distinct_rows`).

Durability: one process alone appends to ``results.jsonl``, through a
:class:`ResultsWriter`, which flushes each row and calls ``os.fsync`` before it returns
(rows of parallel runs reach that process through the executor's queue as soon as their
stage ends). A SIGKILL therefore loses at most the stages in flight, and leaves at most
one torn last line, which :func:`read_rows` ignores. JSON files are written atomically.
Ownership, creation and clean-up of the directory: :mod:`benchmarks.execution.output`;
the resume rule: :func:`prepare_resume`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, cast

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here before Python 3.12

from benchmarks.errors import BenchmarkError
from benchmarks.suites.suite import Suite, TableIdentity

__all__ = [
    "ROW_ADAPTER",
    "ROW_KEYS",
    "RESULTS",
    "RUNNER_FILE",
    "SUITE_FILE",
    "TENSORBOARD",
    "ResultRow",
    "ResultsWriter",
    "TABLE_RECORD",
    "complete_runs",
    "distinct_rows",
    "prepare_resume",
    "read_json",
    "read_numbered_rows",
    "read_rows",
    "read_stored_suite",
    "tensorboard_dir",
    "write_atomic",
    "write_json",
]

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SUITE_FILE = "suite.json"
RUNNER_FILE = "runner.json"
TENSORBOARD = "tb"
TABLE_RECORD = "table_file"
"""Key of ``suite.json`` that records the table a tabular benchmark replays."""


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """The JSON content of ``path``, or a :class:`BenchmarkError` that names the file.

    Args:
        path: The file.
        what: What the file is, for the message (e.g. ``"the stored suite"``).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(f"{what} {str(path)!r} does not exist.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchmarkError(
            f"{what} {str(path)!r} is corrupt ({e}); it cannot be resumed or reported from. "
            "Restore it, or start a new benchmark in another --out."
        ) from None


def read_stored_suite(out: str | os.PathLike[str]) -> tuple[Suite, TableIdentity | None]:
    """The suite a benchmark directory was started with (``<out>/suite.json``), and the
    table file it recorded (None if it replays no table, or was started by a version
    that recorded none).

    Raises:
        BenchmarkError: ``out`` is not a benchmark directory, or ``suite.json`` is corrupt.
        SuiteError: ``suite.json`` does not hold a valid suite.
    """
    path = Path(out) / SUITE_FILE
    if not path.is_file():
        raise BenchmarkError(
            f"{str(path)!r} does not exist, so {str(out)!r} is not the output directory of a benchmark."
        )
    data = read_json(path, "The stored suite")
    if not isinstance(data, dict):
        raise BenchmarkError(f"The stored suite {str(path)!r} is corrupt (not a JSON object).")
    data = dict(data)
    record = data.pop(TABLE_RECORD, None)
    suite = Suite.from_dict(data, source=str(path))
    if record is None:
        return suite, None
    try:
        return suite, TableIdentity.model_validate(record)
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in (TABLE_RECORD, *error["loc"]))
        raise BenchmarkError(f"The stored suite {str(path)!r} is corrupt: {field!r}: {error['msg']}.") from None


def tensorboard_dir(out: str | os.PathLike[str], run: str) -> Path:
    """``<out>/tb/<run>``: where the TensorBoard files of one run go."""
    return Path(out) / TENSORBOARD / run


def _row_line(row: Mapping[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, allow_nan=True) + "\n"


class ResultsWriter:
    """Appends rows to a ``results.jsonl``, each flushed and fsync'ed before returning.

    Example:
        >>> with ResultsWriter(out / RESULTS) as writer:
        ...     writer.write(row)
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row; it is on disk when this returns."""
        self._file.write(_row_line(row))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@with_config(ConfigDict(extra="allow", strict=True, use_attribute_docstrings=True))
class ResultRow(TypedDict):
    """One line of ``results.jsonl``: one finished stage of one run, as
    :func:`benchmarks.execution.runs.execute_run` writes it (``json.dumps`` with sorted keys).

    The keys without ``NotRequired`` (:data:`ROW_KEYS`) are the ones resume and the
    report cannot do without; rows written by earlier versions may lack the others.
    Keys it does not declare pass as they are. :data:`ROW_ADAPTER` checks a row read
    back against this definition, documentation included.
    """

    run: str
    """The run's name, ``f"{env_id}__{agent}__{objective}__{seed}"`` made file-system safe."""
    agent: str
    """The agent's label (its display name in the suite)."""
    objective: str
    """The objective's label."""
    seed: Annotated[int, Field(ge=0)]
    """The episode's seed (the env's and the agent's)."""
    stage: Annotated[int, Field(ge=1)]
    """The stage number, 1-based, at most ``max_stages``."""
    max_stages: Annotated[int, Field(ge=1)]
    """The run's budget in stages."""
    objective_value: float
    """The objective ``J`` after the stage (higher is better; NaN where it was not measured)."""
    suite: NotRequired[str]
    """The suite's name."""
    env_id: NotRequired[str]
    """The Gymnasium id of the env."""
    loss_names: NotRequired[list[str] | None]
    """The losses, in the order of ``action``."""
    action: NotRequired[list[float] | None]
    """The agent's action, one entry per loss in ``loss_names``."""
    weights: NotRequired[dict[str, float]]
    """Effective loss weights (action times each loss's scale), ``{loss: weight}``."""
    metrics: NotRequired[dict[str, float]]
    """The objective's metrics after the stage, raw values, ``{metric: value}``."""
    loss_values: NotRequired[dict[str, float]]
    """Unweighted value of every loss on the evaluation set, ``{loss: value}``."""
    reward: NotRequired[float]
    """The env's reward: the change of ``J`` over the stage (or the divergence penalty)."""
    notes: NotRequired[dict[str, Any] | None]
    """The agent's notes: rationale, retries, fallback, tokens, latency."""
    diverged: NotRequired[bool | None]
    """Whether the stage diverged (and was rolled back)."""
    feedback: NotRequired[str | None]
    """The objective's text feedback (a judge's critique, a person's comment), or null."""
    wall_s: NotRequired[float | None]
    """Seconds since the episode started (after set-up), at the end of the stage."""
    setup_s: NotRequired[float]
    """Seconds spent building the env and the agent."""
    act_s: NotRequired[float]
    """Seconds of this stage's decision."""
    train_s: NotRequired[float]
    """Seconds of this stage's training."""
    eval_s: NotRequired[float]
    """Seconds of this stage's evaluation."""
    device: NotRequired[str]
    """The device the run trained on (``"cpu"``, ``"cuda:1"``)."""
    preset: NotRequired[str | None]
    """On a preset env (a table replay), the name of the preset played; else null."""
    instance: NotRequired[str | None]
    """On a table of problem instances, the instance the episode played; else null."""
    budget: NotRequired[dict[str, Any] | None]
    """The agent's training budget before the episode (``train_episodes``,
    ``train_steps``, ``examples``, what it read of the training instances), from its
    ``budget()``; null for an agent that trains on nothing."""


def _consistent(row: ResultRow) -> ResultRow:
    """A row's stage is within its budget and its action matches its losses."""
    if row["stage"] > row["max_stages"]:
        raise ValueError(f"stage {row['stage']} is above max_stages {row['max_stages']}")
    action, names = row.get("action"), row.get("loss_names")
    if action is not None and names is not None and len(action) != len(names):
        raise ValueError(
            f"'action' has {len(action)} entries but 'loss_names' {len(names)}; they must match one to one"
        )
    return row


ROW_ADAPTER: TypeAdapter[ResultRow] = TypeAdapter(Annotated[ResultRow, AfterValidator(_consistent)])
"""Validates a row read back against :class:`ResultRow`."""

ROW_KEYS: tuple[str, ...] = tuple(ROW_ADAPTER.json_schema()["required"])
"""Keys every row of ``results.jsonl`` must have (the required keys of :class:`ResultRow`)."""


def read_numbered_rows(path: str | os.PathLike[str]) -> list[tuple[int, ResultRow]]:
    """``(line number, row)`` of every row of a ``results.jsonl``, each checked against
    :class:`ResultRow`; a torn last line (killed mid-write) is ignored.

    Raises:
        BenchmarkError: A line other than the last is not UTF-8, not a JSON object,
            lacks one of :data:`ROW_KEYS`, or has a field of the wrong type; the message
            names the file, the line and the field.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    rows = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if number == len(lines):
                logger.warning("%s:%d: ignoring a torn last line (%s)", path, number, e)
                continue
            raise BenchmarkError(f"{path}:{number}: not a JSON row ({e}).") from None
        if not isinstance(row, dict):
            raise BenchmarkError(
                f"{path}:{number}: a row must be a JSON object with keys {list(ROW_KEYS)}; "
                f"got a {type(row).__name__}."
            )
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise BenchmarkError(f"{path}:{number}: the row lacks the keys {missing}.")
        rows.append((number, _check_row(row, f"{path}:{number}")))
    return rows


def _check_row(row: dict[str, Any], where: str) -> ResultRow:
    """``row`` itself (not a copy: it is written back byte for byte) once it is checked
    against :class:`ResultRow`, or a :class:`BenchmarkError` naming ``where`` and the field."""
    try:
        ROW_ADAPTER.validate_python(row)
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        what = f"field {field!r}: " if field else ""
        got = f" (got {error['input']!r})" if field else ""
        raise BenchmarkError(f"{where}: {what}{error['msg']}{got}.") from None
    return cast(ResultRow, row)


def read_rows(path: str | os.PathLike[str]) -> list[ResultRow]:
    """Rows of a ``results.jsonl`` (:func:`read_numbered_rows` without the numbers)."""
    return [row for _, row in read_numbered_rows(path)]


_RUN_FIELDS: tuple[Literal["agent", "objective", "seed", "max_stages"], ...] = (
    "agent", "objective", "seed", "max_stages"
)
"""Fields every row of one run shares."""


def distinct_rows(
    numbered: Iterable[tuple[int, ResultRow]], path: str | os.PathLike[str]
) -> tuple[list[ResultRow], int]:
    """One row per (run, stage), for the report.

    A row that repeats an earlier one exactly (the same JSON) is dropped with a
    warning: it adds nothing. Two different rows for the same stage of a run, or rows
    of one run that disagree on its agent, objective, seed or budget, cannot be told
    apart by the report and are an error.

    Args:
        numbered: ``(line number, row)`` pairs (:func:`read_numbered_rows`).
        path: The file they came from, for the messages.

    Returns:
        The rows, and the number of exact duplicates dropped.

    Raises:
        BenchmarkError: A conflicting duplicate or an inconsistent run; the message
            names the run, the stage and both lines.
    """
    first: dict[tuple[str, int], tuple[int, str]] = {}
    runs: dict[str, tuple[int, ResultRow]] = {}
    rows: list[ResultRow] = []
    dropped = 0
    for number, row in numbered:
        key = (row["run"], row["stage"])
        line = _row_line(row)
        if key in first:
            earlier, earlier_line = first[key]
            if line == earlier_line:
                logger.warning("%s:%d: an exact copy of line %d (run %r, stage %d); ignored.",
                               path, number, earlier, *key)
                dropped += 1
                continue
            raise BenchmarkError(
                f"{path}:{number}: stage {key[1]} of run {key[0]!r} is already at line {earlier}, with "
                "other values; a benchmark writes each stage once. Remove the wrong row."
            )
        first[key] = (number, line)
        if row["run"] in runs:
            earlier, model = runs[row["run"]]
            differ = [f for f in _RUN_FIELDS if row[f] != model[f]]
            if differ:
                raise BenchmarkError(
                    f"{path}:{number}: run {row['run']!r} has {differ[0]} {row[differ[0]]!r} here but "
                    f"{model[differ[0]]!r} at line {earlier}; every row of a run has the same "
                    f"{', '.join(_RUN_FIELDS)}."
                )
        else:
            runs[row["run"]] = (number, row)
        rows.append(row)
    return rows, dropped


def complete_runs(rows: Iterable[ResultRow]) -> set[str]:
    """Names of runs whose stages ``1..max_stages`` are all present (rows as
    :func:`read_rows` gives them: stages in ``[1, max_stages]``)."""
    stages: dict[str, set[int]] = {}
    budget: dict[str, int] = {}
    for row in rows:
        stages.setdefault(row["run"], set()).add(int(row["stage"]))
        budget[row["run"]] = int(row["max_stages"])
    return {
        run for run, seen in stages.items()
        if len(seen) == budget[run] and min(seen) == 1 and max(seen) == budget[run]
    }


def prepare_resume(out: str | os.PathLike[str], runs: Iterable[str]) -> tuple[set[str], int]:
    """Apply the resume rule to the benchmark directory ``out``.

    A run with all ``max_stages`` rows is complete and skipped; the rows of every other
    run of ``runs`` are dropped (``results.jsonl`` is rewritten atomically with one row
    per stage of the complete runs) and its TensorBoard directory removed, so that it is
    repeated from scratch: no stage row is ever duplicated, and on CPU the repeated run
    reproduces exactly what an uninterrupted run would have written.

    Args:
        out: The benchmark directory.
        runs: Names of all runs of its suite.

    Returns:
        The names of the complete runs, and the number of rows dropped.

    Raises:
        BenchmarkError: ``results.jsonl`` has a broken line other than the last.
    """
    out = Path(out)
    path = out / RESULTS
    rows = read_rows(path)
    names = set(runs)
    done = complete_runs(rows) & names
    unique: dict[tuple[str, int], ResultRow] = {}  # one row per (run, stage) of the complete runs
    for row in rows:
        if row["run"] in done:
            unique.setdefault((row["run"], int(row["stage"])), row)  # the first wins (there is never more than one)
    write_atomic(path, "".join(map(_row_line, unique.values())).encode("utf-8"))
    for run in sorted(names - done):
        tb_dir = tensorboard_dir(out, run)
        if tb_dir.exists():
            shutil.rmtree(tb_dir)
    return done, len(rows) - len(unique)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON atomically (temporary file, fsync, rename)."""
    # key order kept: objective labels depend on it
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace the file ``path`` with ``data`` atomically (``<path>.tmp``, fsync, rename).

    A symbolic link at ``path`` is replaced, not followed, and one at ``<path>.tmp`` is
    refused (``O_NOFOLLOW``), so nothing is ever written outside the folder of ``path``.

    Raises:
        OSError: The file cannot be written (``ELOOP`` for a link at ``<path>.tmp``).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
