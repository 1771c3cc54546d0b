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

The resume rule (:func:`prepare_resume`): a run with all ``max_stages`` rows is
complete and skipped; the rows of every incomplete run are dropped (``results.jsonl``
is rewritten atomically without them, and their TensorBoard directories are removed)
and the run is repeated from scratch. No stage row is ever duplicated, and on CPU the
repeated run reproduces exactly what an uninterrupted run would have written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.errors import BenchmarkError

__all__ = [
    "RESULTS",
    "RUNNER_FILE",
    "SUITE_FILE",
    "TENSORBOARD",
    "ResultsWriter",
    "complete_runs",
    "prepare_resume",
    "read_rows",
    "tensorboard_dir",
    "write_json",
]

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SUITE_FILE = "suite.json"
RUNNER_FILE = "runner.json"
TENSORBOARD = "tb"


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
        BenchmarkError: A line other than the last is not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):
                logger.warning("%s:%d: ignoring a torn last line (%s)", path, number, e)
                continue
            raise BenchmarkError(f"{path}:{number}: not a JSON row ({e}).") from e
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
    _replace(Path(path), json.dumps(data, indent=2, sort_keys=True) + "\n")


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
