"""The errors of a benchmark, and the record of a run that failed.

They live below every other benchmark module (runs, results, output, executor, runner), so
each can raise or report them; :mod:`benchmarks.runner` exports them too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BenchmarkError", "RunFailure", "RunsFailedError"]


class BenchmarkError(RuntimeError):
    """A benchmark that cannot start or continue (e.g. a bad output directory)."""


@dataclass(frozen=True)
class RunFailure:
    """A run that raised: its name, the error's one-line message and the traceback."""

    run: str
    error: str
    traceback: str


class RunsFailedError(BenchmarkError):
    """Some runs raised; every other run finished and its rows are saved.

    Attributes:
        failures: One :class:`RunFailure` per failed run.
    """

    def __init__(self, message: str, failures: list[RunFailure]):
        super().__init__(message)
        self.failures = failures
