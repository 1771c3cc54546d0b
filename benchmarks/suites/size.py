"""How many nodes a table has and how long it takes to build, from its dimensions alone.

A table of ``trees`` trees (its seeds: one per seed, or instances x replicates), ``K``
presets and ``T`` stages has ``trees * (1 + K + K**2 + ... + K**T)`` nodes. The size is
counted from these numbers, never from a list of seeds or nodes, so that a suite asking
for ``replicates = 1000000000`` or ``stages = 1000000000`` is refused at once, with its
size and an estimated build time, before anything is built or allocated
(:func:`size_refusal`; :mod:`benchmarks.suites.table` and :func:`benchmarks.execution.tabulate.tabulate`
ask it).
"""

from __future__ import annotations

import math
from typing import Any

from lossagent_env.config import EnvConfig

__all__ = ["MAX_NODES", "SECONDS_PER_NODE", "count_nodes", "size_refusal"]

MAX_NODES = 100_000
"""Most nodes a build starts unless ``max_nodes`` (``--max-nodes``) allows more: about
11 hours with 2 workers at :data:`SECONDS_PER_NODE`."""

SECONDS_PER_NODE = 0.8
"""Measured cost of one node of the shipped table (the smoke env, 40 training iterations,
the panel on two splits of 3 x 128 px) per worker on 2 cores; time estimates scale it
by ``stage_iters / 40``."""

_REFERENCE_STAGE_ITERS = 40

_EXACT_BELOW = 1000
"""A count of fewer than 10^this nodes is computed exactly (a few thousand bits at most)."""


def count_nodes(trees: int, presets: int, stages: int) -> int:
    """``trees * (1 + K + ... + K**T)`` with ``K = presets`` and ``T = stages``, exactly."""
    k, t = presets, stages
    return trees * (t + 1 if k == 1 else (k ** (t + 1) - 1) // (k - 1))


def _log10_nodes(trees: int, presets: int, stages: int) -> float:
    """``log10(count_nodes(...))``, closely enough, without counting a huge table."""
    k, t = presets, stages
    per_tree = math.log10(t + 1) if k == 1 else (t + 1) * math.log10(k) - math.log10(k - 1)
    return math.log10(trees) + per_tree


def size_refusal(
    *,
    trees: int,
    trees_text: str,
    tree_keys: str = "seeds",
    presets: int,
    stages: int,
    stage_iters: Any,
    workers: int,
    max_nodes: int,
) -> str | None:
    """Why a table of these dimensions is refused (more than ``max_nodes`` nodes), with
    its node count and an estimated build time; None if it is allowed.

    Args:
        trees: Trees of the table (its seeds), at least 1.
        trees_text: How the message names them, e.g. ``"2 seed(s)"``.
        tree_keys: What sets their number, e.g. ``"seeds"``.
        presets: K, at least 1.
        stages: T, at least 1.
        stage_iters: Training iterations per stage (the time estimate scales with it;
            a value that is not a positive number counts as the env's default).
        workers: Units built at once (the estimate divides by it).
        max_nodes: The limit.
    """
    log10_nodes = _log10_nodes(trees, presets, stages)
    exact = log10_nodes < _EXACT_BELOW
    nodes = count_nodes(trees, presets, stages) if exact else None
    if nodes is not None and nodes <= max_nodes:
        return None
    if not isinstance(stage_iters, (int, float)) or isinstance(stage_iters, bool) or not 0 < stage_iters < math.inf:
        stage_iters = EnvConfig.stage_iters  # a bad value is refused with the env settings
    workers = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1 else 1
    per_node = SECONDS_PER_NODE * stage_iters / _REFERENCE_STAGE_ITERS
    log10_seconds = log10_nodes + math.log10(per_node / workers)
    shown = nodes is not None and log10_nodes < 30
    count = f"{nodes:,} nodes ({nodes:.3g})" if shown else f"about 10^{log10_nodes:.0f} nodes"
    return (
        f"The table has {count}: {trees_text} x (1 + K + ... + K^T) with K = {presets} presets and "
        f"T = {stages} stages; the limit is {max_nodes:,}. Estimated build time: "
        f"{_duration(log10_seconds)} with {workers} worker(s) (a rough estimate: {per_node:.2g} s "
        f"per node and worker, the shipped table's measured cost scaled to stage_iters = "
        f"{stage_iters}). Reduce stages, presets or {tree_keys}, or pass "
        f"--max-nodes {nodes if shown else 'N'} to build it anyway."
    )


def _duration(log10_seconds: float) -> str:
    """``log10(3725.0)`` -> ``"1.03 hours"``: a duration in the largest unit that fits."""
    year = 365.25 * 86400
    if log10_seconds - math.log10(year) >= 6:
        return f"about 10^{log10_seconds - math.log10(year):.0f} years"
    seconds = 10**log10_seconds
    for unit, size in (("years", year), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} seconds"
