"""Benchmarks: suites as data, their execution, and the reports.

``lossagent bench --suite smoke`` (:mod:`benchmarks.cli`) is the front door; the same
steps as a library::

    from benchmarks import load_suite, run_suite, build_report
    result = run_suite(load_suite("smoke"), "runs/smoke")
    build_report("runs/smoke")

Parts, by job, each importing only those listed before it (and ``errors``; an
import-linter contract keeps the order): :mod:`benchmarks.suites`,
:mod:`benchmarks.execution`, :mod:`benchmarks.reports`, :mod:`benchmarks.runner` and
:mod:`benchmarks.cli` (each package's docstring lists its modules; README, "Layout").

The measurement scripts (timings against the targets, the table screen, the GPU check)
are not part of the package: they are the top-level folder ``measure/`` of the
repository, run as ``python -m measure.<script>``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_report", "load_suite", "load_table_spec", "run_suite", "tabulate"]

_HOMES = {
    "load_suite": "benchmarks.suites.suite",
    "load_table_spec": "benchmarks.suites.table",
    "run_suite": "benchmarks.runner",
    "tabulate": "benchmarks.execution.tabulate",
    "build_report": "benchmarks.reports.report",
}


def __getattr__(name: str) -> Any:
    """The library entry points, imported on first use (the command line stays quick)."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'benchmarks' has no attribute {name!r}")
