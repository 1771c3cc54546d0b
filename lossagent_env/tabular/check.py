"""Does a table agree with live training here? Distances in units of its replicate noise.

:func:`check_against_live` trains a few preset sequences live, from the table's own
header (env configuration, presets, panel, torch threads), and gives each node's
distance from the table, ``|live - table| / (sqrt(2) * sd over the replicates)``, per
metric and split, against a band on the right degrees of freedom (:func:`band`).
``lossagent tabulate --verify TABLE`` prints it; why these units: docs/tables.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossagent_env.errors import ConfigError
from lossagent_env.tabular.build import InstanceSpec, TableSpec, live_env, make_build_env, panel_objective
from lossagent_env.tabular.format import Table
from lossagent_env.tabular.replay import load_table

__all__ = ["FALSE_ALARM", "MAX_SAMPLES", "LiveCheck", "band", "check_against_live", "spec_of", "summary"]

MAX_SAMPLES = 1000
"""Most sequences one check trains (about 1.7 hours for the shipped table's 6 stages):
a check compares a few sequences with the table's noise; thousands say no more."""

FALSE_ALARM = 0.0027
"""Probability that a genuine new replicate lies outside the band, per value (that of
3 standard deviations of a normal distribution)."""


def band(replicates: int) -> float:
    """The largest distance at which a live value agrees with the table.

    With ``R`` replicates, ``(live - table) / (sqrt(2) * sd)`` of a genuine new replicate
    follows Student's t with ``R - 1`` degrees of freedom (``sd`` is estimated from the
    ``R`` replicates), so the band is its two-sided :data:`FALSE_ALARM` quantile: 19.2
    for 3 replicates, 9.2 for 4, 3.0 for very many.

    Raises:
        ValueError: Fewer than two replicates.
    """
    from scipy.stats import t as student

    if replicates < 2:
        raise ValueError(f"replicates={replicates!r}: a noise band needs at least two.")
    return float(student.ppf(1.0 - FALSE_ALARM / 2.0, replicates - 1))


@dataclass
class LiveCheck:
    """One preset sequence trained live and compared with the table.

    Attributes:
        seed: The table seed (replicate) it was trained with.
        presets: The preset names played.
        rows: One dict per (split, metric): ``live``, ``table``, ``sd`` (over the
            replicates of the seed's instance at that node: the table's seeds in format 1) and ``distance`` (``|live - table| /
            (sqrt(2) * sd)``; 0 where both are equal, infinite where ``sd`` is 0 and
            they differ).
        seconds: Wall-clock time of the live training and measuring.
        band: The largest distance that agrees (:func:`band` of the instance's
            replicates).
    """

    seed: int
    presets: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    band: float = 3.0

    @property
    def distance(self) -> float:
        """The largest distance of any metric on either split (NaN counts as infinite)."""
        return max((r["distance"] for r in self.rows), default=0.0)

    @property
    def inside(self) -> bool:
        """Whether every distance is within :attr:`band`."""
        return self.distance <= self.band


def spec_of(table: Table) -> TableSpec:
    """The :class:`TableSpec` a table was built from, read back from its header."""
    h = table.header
    instances = [
        InstanceSpec(i.name, str(i.split), dict(i.env_kwargs), tuple(i.seeds), i.env_id)
        for i in table.instances
    ] if table.instances[0].split is not None else []  # a table of one configuration has no split
    return TableSpec(
        env_id=h["env_id"],
        env_kwargs=dict(h["env_kwargs"]),
        presets={p["name"]: p["weights"] for p in h["presets"]},
        metrics=list(h["metrics"]),
        seeds=list(h["seeds"]),
        stages=int(h["stages"]),
        threads=int(h.get("torch_threads") or 1),
        instances=instances,
    )


def check_against_live(table: str | Any, samples: int = 3, stages: int | None = None, seed: int = 0) -> list[LiveCheck]:
    """Train ``samples`` random preset sequences live and compare them with ``table``.

    Args:
        table: A shipped table name or a table file.
        samples: Sequences to train; each draws a table seed and one preset per stage
            from ``numpy.random.default_rng(seed)``.
        stages: Length of each sequence, 1 to the table's depth; default the depth.
        seed: Seed of the draw.

    Returns:
        One :class:`LiveCheck` per sequence.

    Raises:
        ConfigError: ``samples`` not in ``[1, MAX_SAMPLES]`` (with the time they would
            take), ``stages`` out of range, or ``seed`` < 0; ``loc`` names the argument.
        ValueError: A table with fewer than two seeds (no noise band).
    """
    t = load_table(table)
    depth = t.episode_length(int(stages) if isinstance(stages, np.integer) else stages, "stages")
    if not _is_int(samples) or not 1 <= samples <= MAX_SAMPLES:
        raise ConfigError(
            ("samples",),
            f"samples={samples!r} is not allowed. Allowed: an integer in [1, {MAX_SAMPLES}]{_estimate(t, samples, depth)}.",
        )
    if not _is_int(seed) or seed < 0:
        raise ConfigError(("seed",), f"seed={seed!r} is not allowed. Allowed: an integer >= 0.")
    fewest = min(len(i.seeds) for i in t.instances)
    if fewest < 2:
        raise ValueError(
            f"The table holds {fewest} replicate of an instance: a noise band needs at least two "
            "(seeds of a format 1 table)."
        )
    spec = spec_of(t)
    rng = np.random.default_rng(seed)
    draws = [(int(rng.choice(t.seeds)), [int(a) for a in rng.integers(t.n_presets, size=depth)]) for _ in range(samples)]
    previous = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    envs: dict[str, Any] = {}
    checks = []
    try:
        test_panel = panel_objective(spec.metrics)
        for table_seed, actions in draws:
            instance = t.instance_of(table_seed)
            if instance.name not in envs:  # one live env per instance (its images, its degradation)
                envs[instance.name] = make_build_env(spec, table_seed)
            env = envs[instance.name]
            live = live_env(env)
            replicates = [t.seeds.index(s) for s in instance.seeds]
            started = time.perf_counter()
            info = env.reset(seed=table_seed)[-1]
            for action in actions:
                info = env.step(action)[-1]
            measured = {"val": dict(info["metrics"]), "test": live.measure(test_panel, split="test")["metrics"]}
            node = t.node_index(actions)
            check = LiveCheck(
                table_seed, [t.preset_names[a] for a in actions], seconds=time.perf_counter() - started,
                band=band(len(instance.seeds)),
            )
            for split, values in measured.items():
                for k, metric in enumerate(t.metrics):
                    across = t.values[split][replicates, node, k]
                    stored = float(across[instance.seeds.index(table_seed)])
                    value = float(values[metric])
                    sd = float(np.std(across, ddof=1))
                    gap = abs(value - stored)
                    distance = 0.0 if gap == 0 else gap / (math.sqrt(2.0) * sd) if sd > 0 else math.inf
                    check.rows.append(
                        {"split": split, "metric": metric, "live": value, "table": stored, "sd": sd,
                         "distance": distance if not math.isnan(distance) else math.inf}
                    )
            checks.append(check)
    finally:
        for env in envs.values():
            env.close()
        torch.set_num_threads(previous)
    return checks


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _estimate(table: Table, samples: Any, depth: int) -> str:
    """How long ``samples`` sequences of ``depth`` stages would train, from the stage
    times the table's build recorded (empty when ``samples`` is not a large integer)."""
    if not _is_int(samples) or samples <= MAX_SAMPLES:
        return ""
    per_stage = float(np.mean(table.train_seconds[:, 1:] + table.eval_seconds[:, 1:]))
    hours = samples * depth * per_stage / 3600
    return (
        f"; {samples:,} sequences of {depth} stages would train for about {hours:,.3g} hours here "
        f"({per_stage:.2g} s a stage, as the table's build measured)"
    )


def summary(checks: Sequence[LiveCheck]) -> str:
    """One line per check and a last line: how many of how many lie inside the band."""
    lines = []
    for c in checks:
        worst = max(c.rows, key=lambda r: r["distance"])
        lines.append(
            f"seed {c.seed}, {' > '.join(c.presets)}: largest distance {c.distance:.2f} "
            f"({worst['metric']} on {worst['split']}: live {worst['live']:.6g}, table {worst['table']:.6g}, "
            f"sd {worst['sd']:.3g}) {'inside' if c.inside else 'OUTSIDE'} the band ({c.seconds:.0f} s)"
        )
    inside = sum(c.inside for c in checks)
    bands = sorted({round(c.band, 2) for c in checks})
    lines.append(
        f"{inside} of {len(checks)} live sequences inside the band: every value within "
        f"{' or '.join(f'{b:g}' for b in bands)} x sqrt(2) x the standard deviation over the replicates "
        f"(of the instance) of the table's value (Student's t on replicates - 1 degrees of freedom, "
        f"{FALSE_ALARM:.2%} false alarms per value)"
    )
    return "\n".join(lines)
