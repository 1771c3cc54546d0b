"""The output directory of a benchmark: its layout, the results file and resuming.

Layout::

    <out>/suite.json       the resolved suite (what --resume continues)
    <out>/runner.json      workers, backend and torch threads per run it started with
    <out>/results.jsonl    one JSON row per finished stage: the source of truth
    <out>/tb/<run name>/   TensorBoard event files of each run
    <out>/summary.csv, report.md, plots/   rebuilt from results.jsonl (benchmarks.report)

``suite.json`` is written last when a benchmark starts, so its presence marks a
benchmark directory. ``lossagent run --out`` writes ``results.jsonl`` and ``tb/`` only.

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

import fcntl
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.errors import BenchmarkError

__all__ = [
    "LOCK_FILE",
    "ROW_KEYS",
    "OutputLock",
    "RESULTS",
    "RUNNER_FILE",
    "SUITE_FILE",
    "TENSORBOARD",
    "ResultsWriter",
    "complete_runs",
    "prepare_resume",
    "read_json",
    "read_rows",
    "tensorboard_dir",
    "write_json",
]

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SUITE_FILE = "suite.json"
RUNNER_FILE = "runner.json"
TENSORBOARD = "tb"
LOCK_FILE = ".lock"

ROW_KEYS = ("run", "agent", "objective", "seed", "stage", "max_stages", "objective_value")
"""Keys every row of ``results.jsonl`` must have (resume and the report read them)."""


class OutputLock:
    """An exclusive OS lock on an output directory, held for the life of a command.

    Args:
        out: The directory (it must exist).
        what: What holds it, for the message of a refused second process.

    Raises:
        BenchmarkError (from :meth:`acquire`): another process holds the lock.

    Example:
        >>> with OutputLock(out, "lossagent bench"):
        ...     run_everything()
    """

    def __init__(self, out: str | os.PathLike[str], what: str = "lossagent"):
        self.path = Path(out) / LOCK_FILE
        self.what = what
        self._file: Any = None

    @classmethod
    def for_file(cls, path: str | os.PathLike[str], what: str = "lossagent") -> OutputLock:
        """A lock on one output file (a table), held in ``<file>.lock`` beside it."""
        lock = cls(Path(path).parent, what)
        lock.path = Path(f"{path}.lock")
        return lock

    def acquire(self) -> OutputLock:
        """Take the lock or raise :class:`BenchmarkError` naming its holder."""
        try:
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as e:
            raise BenchmarkError(f"Cannot lock {str(self.path.parent)!r}: {e.strerror or e}.") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise BenchmarkError(
                f"{str(self.path.with_suffix('') if self.path.name != LOCK_FILE else self.path.parent)!r} "
                f"is in use by {holder}. Wait for it to end (or stop it), or choose another --out."
            ) from None
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


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.jsonl``; a torn last line (killed mid-write) is ignored.

    Raises:
        BenchmarkError: A line other than the last is not UTF-8, not a JSON object, or
            lacks one of :data:`ROW_KEYS`; the message names the file and the line.
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
        if not isinstance(row["stage"], int) or not isinstance(row["max_stages"], int):
            raise BenchmarkError(f"{path}:{number}: 'stage' and 'max_stages' must be integers.")
        rows.append(row)
    return rows


def complete_runs(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of runs whose stages ``1..max_stages`` are all present."""
    stages: dict[str, set[int]] = {}
    budget: dict[str, int] = {}
    for row in rows:
        stages.setdefault(row["run"], set()).add(int(row["stage"]))
        budget[row["run"]] = int(row["max_stages"])
    return {run for run, seen in stages.items() if seen >= set(range(1, budget[run] + 1))}


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
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
