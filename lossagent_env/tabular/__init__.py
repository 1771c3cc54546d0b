"""Tabular replay: every stage outcome of a configuration, precomputed and replayed.

A *table* stores the outcome of every sequence of K presets over T stages, for the
replicates of one or more problem instances, on a panel of metrics and two disjoint
evaluation splits; see docs/tables.md.

* :mod:`~lossagent_env.tabular.format`: the file (SQLite) and reading it into arrays.
* :mod:`~lossagent_env.tabular.schema`: the header and rows as pydantic models, which
  reading checks a file against.
* :mod:`~lossagent_env.tabular.build`: the specification of a table and the unit of
  work of a build (the subtree of one seed and first preset).
* :mod:`~lossagent_env.tabular.objective`: objectives over the panel (``J`` of a node).
* :mod:`~lossagent_env.tabular.replay`: the env ``LossAgent/Tabular-v0``.
* :mod:`~lossagent_env.tabular.analysis`: the oracle and the references, per tree or
  over an instance's replicates.

Building a whole table (process pools, Ray, resume) is ``benchmarks.execution.tabulate``,
behind ``lossagent tabulate``.

Example:
    >>> import gymnasium as gym, lossagent_env
    >>> env = gym.make("LossAgent/Tabular-v0", table="table.sqlite", objective="psnr")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(2)    # preset 2
    >>> TableAnalysis("table.sqlite", objective="psnr").oracle(seeds=[0])["final_objective"]
"""

from __future__ import annotations

from lossagent_env.tabular.analysis import TableAnalysis
from lossagent_env.tabular.build import TableSpec, compute_unit, table_header
from lossagent_env.tabular.format import NodeRecord, Table, TableFormatError, read_table
from lossagent_env.tabular.replay import TabularEnv, load_table, resolve_table, shipped_tables

__all__ = [
    "NodeRecord",
    "Table",
    "TableFormatError",
    "TableAnalysis",
    "TableSpec",
    "TabularEnv",
    "compute_unit",
    "load_table",
    "read_table",
    "resolve_table",
    "shipped_tables",
    "table_header",
]
