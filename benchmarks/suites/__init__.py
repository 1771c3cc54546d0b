"""The shipped suites (``*.toml`` in this folder) and the code that reads them.

* :mod:`~benchmarks.suites.suite`: a bench suite (env, budget, objectives, agents,
  seeds, the new-objective track), validated, located errors;
* :mod:`~benchmarks.suites.table`: the ``[table]`` section that ``lossagent tabulate``
  builds from;
* :mod:`~benchmarks.suites.size`: the size of a table, counted before anything is built;
* :mod:`~benchmarks.suites.tomlpos`: the line of a key in a TOML file, for messages.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SUITES_DIR", "suite_names"]

SUITES_DIR = Path(__file__).resolve().parent
"""Where the shipped suites (``smoke``, ``quick``, ``paper``, ``tabular``, ...) live."""


def suite_names() -> list[str]:
    """Names of the shipped suites (files in :data:`SUITES_DIR`); reading them imports
    nothing else, so the command line's help can list them at once."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
