"""The output directory of a benchmark: its layout, the results file and resuming.

Layout::

    <out>/suite.json       the resolved suite (what --resume continues); for a table
                           replay also "table_file": {"table", "path", "sha256"}, the
                           table file hashed when the benchmark started
    <out>/runner.json      workers, backend and torch threads per run it started with
    <out>/results.jsonl    one JSON row per finished stage: the source of truth
    <out>/tb/<run name>/   TensorBoard event files of each run
    <out>/summary.csv, report.md, plots/   rebuilt from results.jsonl (benchmarks.report)

``suite.json`` is written last when a benchmark starts, so its presence marks a
benchmark directory. ``lossagent run --out`` writes ``results.jsonl`` and ``tb/`` only.
A tabular benchmark is resumed and reported only against the table file it started
with: ``--resume`` and ``lossagent report`` hash the table again and refuse another.

Rows are checked as they are read (:class:`RowModel`: the types of the fields that
resume and the report use); a bad one is an error naming the file, the line and the
field. For the report, a row that repeats an earlier one exactly is dropped with a
warning, and two different rows for one stage of a run are an error naming both lines
(:func:`distinct_rows`).

Durability: one process alone appends to ``results.jsonl``, through a
:class:`ResultsWriter`, which flushes each row and calls ``os.fsync`` before it returns
(rows of parallel runs reach that process through a queue as soon as their stage ends,
see :mod:`benchmarks.backends`). A SIGKILL at any moment therefore loses at most the
stages in flight, and leaves at most one torn last line, which :func:`read_rows`
ignores. JSON files (``suite.json``, ``runner.json``) are written atomically.

Ownership: a process that writes into an output directory (``lossagent bench``, with
or without ``--resume``, ``lossagent report``, ``lossagent run --out``, ``lossagent
tabulate``) first takes :class:`OutputLock`, an OS file lock on ``<out>/.lock`` held
until it ends; a second process is refused with a message naming the holder (its pid,
command and start time). The OS drops the lock when its holder dies, even by SIGKILL,
so a killed benchmark never blocks its own ``--resume``.

The resume rule (:func:`prepare_resume`): a run with all ``max_stages`` rows is
complete and skipped; the rows of every incomplete run are dropped (``results.jsonl``
is rewritten atomically without them, and their TensorBoard directories are removed)
and the run is repeated from scratch. No stage row is ever duplicated, and on CPU the
repeated run reproduces exactly what an uninterrupted run would have written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from benchmarks.errors import BenchmarkError
from benchmarks.suite import Suite, TableIdentity

__all__ = [
    "LOCK_FILE",
    "ROW_KEYS",
    "OutputLock",
    "RESULTS",
    "RUNNER_FILE",
    "SUITE_FILE",
    "TENSORBOARD",
    "ResultsWriter",
    "RowModel",
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
LOCK_FILE = ".lock"
TABLE_RECORD = "table_file"
"""Key of ``suite.json`` that records the table a tabular benchmark replays."""

ROW_KEYS = ("run", "agent", "objective", "seed", "stage", "max_stages", "objective_value")
"""Keys every row of ``results.jsonl`` must have (resume and the report read them)."""


class OutputLock:
    """An exclusive OS lock on an output directory, held for the life of a command.

    The lock file is ``<out>/.lock`` (:meth:`for_file`: ``<file>.lock``), named after
    the resolved path, so a folder or table reached through a symbolic link and through
    its target is one lock. It is opened without following a symbolic link, and a file
    there that is not a lock file (another kind of file, a hard link, or text other
    than a holder line) is refused, never truncated.

    Args:
        out: The directory (it must exist).
        what: What holds it, for the message of a refused second process.

    Raises:
        BenchmarkError (from :meth:`acquire`): another process holds the lock, or the
            lock file cannot be created or is not one.

    Example:
        >>> with OutputLock(out, "lossagent bench"):
        ...     run_everything()
    """

    def __init__(self, out: str | os.PathLike[str], what: str = "lossagent"):
        self.target = Path(out)
        self.path = self.target.resolve() / LOCK_FILE
        self.what = what
        self._file: Any = None

    @classmethod
    def for_file(cls, path: str | os.PathLike[str], what: str = "lossagent") -> OutputLock:
        """A lock on one output file (a table), held in ``<file>.lock`` beside it."""
        lock = cls(Path(path).parent, what)
        lock.target = Path(path)
        lock.path = Path(f"{Path(path).resolve()}.lock")
        return lock

    def acquire(self) -> OutputLock:
        """Take the lock or raise :class:`BenchmarkError` naming its holder."""
        handle = _open_lock_file(self.path, self.target)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(_LOCK_MAX_BYTES).strip() or "another process"
            handle.close()
            raise BenchmarkError(
                f"{str(self.target)!r} is in use by {holder}. Wait for it to end (or stop it), "
                "or choose another --out."
            ) from None
        handle.seek(0)
        if not _is_holder_text(handle.read(_LOCK_MAX_BYTES + 1)):
            handle.close()
            raise BenchmarkError(
                f"{str(self.path)!r} is not a lossagent lock file, and {str(self.target)!r} "
                "needs that name for its lock. Move that file away, or choose another --out."
            )
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        handle.write(
            f"{self.what} (pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}, "
            f"command: {command})\n"
        )
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        """Let go of the lock (closing the file releases it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_LOCK_MAX_BYTES = 64 * 1024
_HOLDER_LINE = re.compile(r"[^\n]* \(pid \d+, started [^\n]*\)\n?")


def _is_holder_text(text: str) -> bool:
    """Whether ``text`` is what :meth:`OutputLock.acquire` writes (or nothing yet)."""
    return text == "" or (len(text) <= _LOCK_MAX_BYTES and _HOLDER_LINE.fullmatch(text) is not None)


def _open_lock_file(path: Path, target: Path) -> Any:
    """Open (or create) the lock file ``path`` of ``target`` for reading and writing,
    refusing a symbolic link, a hard link and anything but a regular file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise BenchmarkError(_lock_open_error(path, target, e)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        kind = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise BenchmarkError(
            f"{str(path)!r} is {kind}, and {str(target)!r} needs that name for its lock file. "
            "Move it away, or choose another --out."
        )
    return open(fd, "r+", encoding="utf-8", errors="replace")


def _lock_open_error(path: Path, target: Path, error: OSError) -> str:
    """What to tell a person whose lock file could not be opened."""
    folder = path.parent
    if error.errno == errno.ELOOP or path.is_symlink():
        return (
            f"{str(path)!r} is a symbolic link; the lock file of {str(target)!r} is never "
            "written through a link. Remove the link, or choose another --out."
        )
    if error.errno == errno.ENOENT or not folder.exists():
        return f"Cannot lock {str(target)!r}: the folder {str(folder)!r} does not exist. Create it, or choose another --out."
    if error.errno == errno.EISDIR:
        return (
            f"{str(path)!r} is a folder, and {str(target)!r} needs that name for its lock file. "
            "Move it away, or choose another --out."
        )
    if error.errno == errno.ENOTDIR or not folder.is_dir():
        return f"Cannot lock {str(target)!r}: {str(folder)!r} is not a folder. Choose another --out."
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"Cannot create the lock file {str(path)!r} ({error.strerror}). Choose an --out "
            "in a folder you can write."
        )
    return f"Cannot create the lock file {str(path)!r} ({error.strerror or error}). Choose another --out."


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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RowModel(BaseModel):
    """The types of the fields of a row that resume and the report read (the module
    docstring of :mod:`benchmarks.runs` documents every field). Other fields pass as
    they are; the optional ones are checked when present."""

    model_config = ConfigDict(extra="allow", strict=True)

    run: str
    agent: str
    objective: str
    seed: int = Field(ge=0)
    stage: int = Field(ge=1)
    max_stages: int = Field(ge=1)
    objective_value: float = Field(description="J; NaN (JSON NaN) where it was not measured.")
    loss_names: list[str] | None = None
    action: list[float] | None = None
    wall_s: float | None = None
    notes: dict[str, Any] | None = None
    diverged: bool | None = None
    preset: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RowModel:
        if self.stage > self.max_stages:
            raise ValueError(f"stage {self.stage} is above max_stages {self.max_stages}")
        if self.action is not None and self.loss_names is not None and len(self.action) != len(self.loss_names):
            raise ValueError(
                f"'action' has {len(self.action)} entries but 'loss_names' {len(self.loss_names)}; "
                "they must match one to one"
            )
        return self


def read_numbered_rows(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of every row of a ``results.jsonl``, each checked against
    :class:`RowModel`; a torn last line (killed mid-write) is ignored.

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
        _check_row(row, f"{path}:{number}")
        rows.append((number, row))
    return rows


def _check_row(row: dict[str, Any], where: str) -> None:
    try:
        RowModel.model_validate(row)
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        what = f"field {field!r}: " if field else ""
        got = f" (got {error['input']!r})" if field else ""
        raise BenchmarkError(f"{where}: {what}{error['msg']}{got}.") from None


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.jsonl`` (:func:`read_numbered_rows` without the numbers)."""
    return [row for _, row in read_numbered_rows(path)]


_RUN_FIELDS = ("agent", "objective", "seed", "max_stages")
"""Fields every row of one run shares."""


def distinct_rows(
    numbered: Iterable[tuple[int, Mapping[str, Any]]], path: str | os.PathLike[str]
) -> tuple[list[Mapping[str, Any]], int]:
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
    runs: dict[str, tuple[int, Mapping[str, Any]]] = {}
    rows: list[Mapping[str, Any]] = []
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


def complete_runs(rows: Iterable[Mapping[str, Any]]) -> set[str]:
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
    """Apply the resume rule (module docstring) to the benchmark directory ``out``.

    Keeps the rows of the complete runs among ``runs`` (one per stage), rewriting
    ``results.jsonl`` atomically, and removes the TensorBoard directories of the others.

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
    keep = [row for row in rows if row["run"] in done]
    dropped = len(rows) - len(keep)
    # one row per (run, stage): the first one wins (there is never more than one)
    seen: set[tuple[str, int]] = set()
    unique = []
    for row in keep:
        key = (row["run"], int(row["stage"]))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    dropped += len(keep) - len(unique)
    _replace(path, "".join(_row_line(row) for row in unique))
    for run in sorted(names - done):
        tb_dir = tensorboard_dir(out, run)
        if tb_dir.exists():
            shutil.rmtree(tb_dir)
    return done, dropped


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON atomically (temporary file, fsync, rename)."""
    _replace(Path(path), json.dumps(data, indent=2) + "\n")  # key order kept: objective labels depend on it


def _replace(path: Path, text: str) -> None:
    """Replace the file ``path`` with ``text`` atomically: it holds the old or the new text."""
    write_atomic(path, text.encode("utf-8"))


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
