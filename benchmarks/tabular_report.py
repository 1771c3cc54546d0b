"""Scores of a benchmark on a table replay (``LossAgent/Tabular-v0``), against the optimum.

On a table the best preset sequence is known, so every run gets a score, computed on
the table's **test** split (crops no agent saw; agents chose on the validation split):

* ``J_agent``: the objective after the run's preset sequence, on test.
* ``J_oracle``: the test objective of the validation oracle's sequence (the best
  sequence by exhaustive search on validation). Scoring the oracle's *choice* on test
  keeps the maximum over K^T noisy outcomes from flattering it (the winner's curse).
* ``J_static``: the test objective of the best single preset held for every stage
  (chosen on validation too); ``J_ref``: the reference preset (the table's first, the
  L1-only ``pixel`` preset of the shipped table) held for every stage.
* normalized score ``(J_agent - J_ref) / (J_oracle - J_ref)``: 1 is the oracle, 0 the
  reference preset; regret ``J_oracle - J_agent``; the value of scheduling
  ``J_oracle - J_static``, on validation and on test.

A (seed, objective) cell where the oracle's sequence does not beat the reference
preset on test (``J_oracle <= J_ref``) has no normalized score: it is left out of
every aggregate and counted.

Across seeds and objectives (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice", with their library ``rliable``): the interquartile mean of the
normalized scores with 95% stratified-bootstrap intervals, the probability that one
agent improves on another, and performance profiles (the fraction of runs above each
score), plotted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from benchmarks.errors import BenchmarkError
from benchmarks.results import ResultRow, write_atomic
from benchmarks.suite import TABULAR_ENV_ID, TableIdentity, file_sha256, objective_label

__all__ = [
    "TabularScores",
    "VerifiedTable",
    "interval_estimates",
    "markdown_text",
    "plain_text",
    "plot_scores",
    "save_figure",
    "score_tabular",
    "tabular_markdown",
    "verify_table",
]

logger = logging.getLogger(__name__)

BOOTSTRAP_REPS = 2000
"""Bootstrap resamples of the IQM intervals (and of the live report's means)."""

SCHEDULING_Z = 3.0
"""A value of scheduling counts as beyond noise when it is at least this many standard
errors (of the paired difference over the table's seeds) from zero."""

IMPROVEMENT_REPS = 500
"""Bootstrap resamples of the probability-of-improvement intervals (each resample runs
a Mann-Whitney statistic per objective, so they cost far more than the IQM's)."""


K = TypeVar("K", bound=Hashable)


def interval_estimates(
    scores: Mapping[K, Any], statistic: Callable[..., Any], reps: int = BOOTSTRAP_REPS
) -> dict[K, np.ndarray]:
    """Point estimates and 95% stratified-bootstrap percentile intervals, with rliable.

    One call of :func:`rliable.library.get_interval_estimates` per key, each with NumPy's
    global RNG (which rliable's stratified bootstrap draws from) seeded with 0 and
    restored afterwards: the result is the same at every call, and two keys with the
    same scores get the same interval (one call for all keys would give each key the
    next stretch of the same random stream).

    Args:
        scores: Per key, a ``(runs, tasks)`` score matrix (runs are resampled within
            each task), or a tuple of them for a statistic of several (probability of
            improvement).
        statistic: Maps a matrix (or the tuple's matrices) to a number or a 1-D array.
        reps: Bootstrap resamples.

    Returns:
        Per key, an array ``(3, m)``: the point estimate, the low and the high end of
        the interval of each of the ``m`` values of ``statistic``.
    """
    from rliable import library as rly

    # rliable's stratified bootstrap draws its resamples from NumPy's global RNG, not from
    # the RandomState it is given
    out: dict[K, np.ndarray] = {}
    for key, matrix in scores.items():
        with _global_rng_seeded(), warnings.catch_warnings():
            # rliable hands its RandomState to arch, which asks for the newer keyword
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            point, interval = rly.get_interval_estimates(
                {key: matrix}, lambda *x: np.atleast_1d(statistic(*x)), reps=reps,
                random_state=np.random.RandomState(0),
            )
        out[key] = np.vstack([np.atleast_1d(point[key]), np.reshape(interval[key], (2, -1))])
    return out


@contextlib.contextmanager
def _global_rng_seeded(seed: int = 0) -> Iterator[None]:
    """NumPy's global RNG seeded with ``seed`` inside, and given back as it was after
    (rliable draws from it in places): the same statistics at every call."""
    outside = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(outside)


def _triple(estimate: np.ndarray) -> tuple[float, float, float]:
    """(point, low, high) of the first value of an :func:`interval_estimates` entry."""
    return float(estimate[0, 0]), float(estimate[1, 0]), float(estimate[2, 0])


@dataclass
class TabularScores:
    """Per-run scores and their aggregates.

    Attributes:
        runs: One dict per complete run: ``agent``, ``objective``, ``seed``,
            ``presets``, ``J`` (test), ``J_val``, ``normalized`` (None where undefined),
            ``regret``.
        cells: One dict per (objective, seed): ``J_oracle``, ``J_oracle_val``,
            ``J_static``, ``J_static_val``, ``static``, ``J_ref``, ``oracle``
            (preset names), ``defined`` (whether normalized scores exist).
        iqm: ``{agent: (iqm, low, high)}`` over every defined cell.
        iqm_by_objective: ``{objective: {agent: (iqm, low, high)}}``.
        improvement: ``{(x, y): (p, low, high)}``: probability that agent x improves on y.
        profiles: ``{"tau": [...], agent: [fraction of runs with score > tau]}``.
        reference: Name of the reference preset.
        scheduling: ``{objective: TabularEnv.oracle_on_means() over every seed of the
            table}``: the value of scheduling on replicate means, with its noise band
            (see :data:`SCHEDULING_Z`).
        by_instance: Scored on a table of problem instances (format 2): ``cells`` are
            per (objective, instance), with ``value``, ``se``, ``z`` of scheduling;
            ``runs`` have ``instance``, ``replicate``, ``normalized`` (against the best
            static preset), ``normalized_ref`` (against the reference preset),
            ``gain_vs_static`` and ``budget``.
        admission: ``{objective: admission(env)}`` (format 2).
        beats_static: ``{objective: {agent: {"gain", "se", "z", "runs", "verdict"}}}``:
            the mean gain of the agent's runs over the best static preset on the same
            trees (format 2).
    """

    runs: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)
    iqm: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    iqm_by_objective: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    improvement: dict[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)
    profiles: dict[str, list[float]] = field(default_factory=dict)
    reference: str = ""
    scheduling: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_instance: bool = False
    admission: dict[str, dict[str, Any]] = field(default_factory=dict)
    beats_static: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifiedTable:
    """The table file a tabular benchmark ran on, found and checked again.

    Attributes:
        identity: What ``suite.json`` recorded (or, for a benchmark that recorded
            nothing, the file found now).
        path: The file to score against.
        header: Its header (env configuration, presets, ...).
        stage_iters: Iterations per stage it was built with (None if its header
            does not say).
        recorded: Whether ``suite.json`` held the identity (else it is not checked).
    """

    identity: TableIdentity
    path: Path
    header: dict[str, Any]
    stage_iters: int | None
    recorded: bool = True


def verify_table(
    table: str | os.PathLike[str], recorded: TableIdentity | None, suite_file: str | os.PathLike[str]
) -> VerifiedTable:
    """The table a tabular benchmark ran on, checked to be the very same file.

    Of the recorded path and ``table`` resolved again as the env resolves it (a path,
    or a shipped table's name), the first file whose SHA-256 equals the recorded one is
    used; if none does, its scores would silently change, and it is an error. A
    benchmark whose ``suite.json`` records no table (started by an earlier version) is
    scored against the file found now, with a warning.

    Args:
        table: The suite's ``table`` argument.
        recorded: The identity recorded in ``suite.json``, or None.
        suite_file: The ``suite.json`` it came from, for messages.

    Raises:
        FileNotFoundError: The table is gone.
        BenchmarkError: The file found has another SHA-256 than the recorded one.
    """
    from lossagent_env.tabular import load_table, resolve_table

    candidates = [Path(recorded.path)] if recorded is not None and Path(recorded.path).is_file() else []
    try:
        candidates.append(resolve_table(table).resolve())
    except FileNotFoundError as e:
        if not candidates:
            where = f" (recorded in {str(suite_file)!r} as {recorded.path!r})" if recorded else ""
            raise FileNotFoundError(f"The table of this benchmark is gone{where}: {e}") from None
    hashes = {path: file_sha256(path) for path in dict.fromkeys(candidates)}
    if recorded is None:
        path, sha = next(iter(hashes.items()))
        logger.warning("%s records no table file; scoring against %s (sha256 %s) unchecked.", suite_file, path, sha)
    else:
        same = [path for path, sha in hashes.items() if sha == recorded.sha256]
        if not same:
            path, sha = next(iter(hashes.items()))
            raise BenchmarkError(
                f"The table file {str(path)!r} has sha256 {sha}, but this benchmark ran on a table "
                f"with sha256 {recorded.sha256} (recorded in {str(suite_file)!r}): scored against "
                "this file its results would change. Restore that table file, or rerun the "
                "benchmark on this one."
            )
        path, sha = same[0], recorded.sha256
    header = load_table(path).header
    built = header.get("env_config", {}).get("stage_iters", header.get("env_kwargs", {}).get("stage_iters"))
    identity = recorded or TableIdentity(table=str(table), path=str(path.resolve()), sha256=sha)
    return VerifiedTable(identity, path, header, None if built is None else int(built), recorded is not None)


def score_tabular(
    runs: Mapping[str, Sequence[ResultRow]],
    suite: Mapping[str, Any],
    table: str | os.PathLike[str] | None = None,
) -> TabularScores:
    """Score the complete runs of a tabular benchmark.

    Args:
        runs: Rows of each complete run, sorted by stage (``benchmarks.report``).
        suite: The stored suite (``suite.json``), whose env is ``LossAgent/Tabular-v0``.
        table: The table file to score against (:func:`verify_table`); default: the
            suite's ``table`` argument.

    Raises:
        ValueError: The suite does not replay a table.
        BenchmarkError: A run played a preset the table does not have.
    """
    import gymnasium as gym

    import lossagent_env  # noqa: F401  (registers the ids)
    from lossagent_env.tabular import TabularEnv

    if suite.get("env", {}).get("id") != TABULAR_ENV_ID:
        raise ValueError(f"score_tabular needs a suite on {TABULAR_ENV_ID}; got {suite.get('env')}.")
    kwargs = dict(suite["env"]["kwargs"])
    if table is not None:
        kwargs["table"] = str(table)
    depth = int(suite["budget"]["max_stages"])
    result = TabularScores()
    envs: dict[str, TabularEnv] = {}
    for spec in suite["objectives"]:
        label = objective_label(spec)
        env = gym.make(TABULAR_ENV_ID, **kwargs, objective=spec, max_stages=depth).unwrapped
        assert isinstance(env, TabularEnv)  # the id's entry point
        envs[label] = env
    if envs and next(iter(envs.values())).table.format_version >= 2:
        return _score_instances(runs, envs, depth, result)
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for run_rows, first, label, seed, env in _scored_runs(runs, envs):
        result.reference = env.preset_names[0]
        key = (label, seed)
        if key not in cells:
            cells[key] = _cell(env, label, seed, depth)
        cell = cells[key]
        indices = _played(env, run_rows)
        presets = [env.preset_names[i] for i in indices]
        j = env.final_objective(indices, split="test", seed=seed)
        normalized = (j - cell["J_ref"]) / (cell["J_oracle"] - cell["J_ref"]) if cell["defined"] else None
        result.runs.append(
            {
                "agent": first["agent"], "objective": label, "seed": seed, "presets": presets, "J": j,
                "J_val": env.final_objective(indices, split="val", seed=seed),
                "normalized": normalized, "regret": cell["J_oracle"] - j,
            }
        )
    result.cells = sorted(cells.values(), key=lambda c: (c["objective"], c["seed"]))
    for label, env in envs.items():
        if len(env.table.seeds) >= 2:
            result.scheduling[label] = env.oracle_on_means()
    _aggregate(result)
    return result


def _scored_runs(
    runs: Mapping[str, Sequence[ResultRow]], envs: Mapping[str, Any]
) -> Iterator[tuple[Sequence[ResultRow], ResultRow, str, int, Any]]:
    """Each run on an objective of the suite: its rows, first row, objective, seed and env."""
    for run_rows in runs.values():
        first = run_rows[0]
        label = first["objective"]
        if label in envs:
            yield run_rows, first, label, int(first["seed"]), envs[label]


def _played(env: Any, run_rows: Sequence[ResultRow]) -> list[int]:
    """The preset indices a run played.

    Raises:
        ValueError: A row without a preset (the run did not play a table).
        BenchmarkError: A preset the table does not have.
    """
    first = run_rows[0]
    presets = [row.get("preset") for row in run_rows]
    if None in presets:
        raise ValueError(f"Run {first['run']!r} has rows without a preset; it did not run on a table.")
    unknown = [(row["stage"], p) for row, p in zip(run_rows, presets, strict=True) if p not in env.preset_names]
    if unknown:
        stage, preset = unknown[0]
        raise BenchmarkError(
            f"Stage {stage} of run {first['run']!r} played preset {preset!r}, which the table "
            f"does not have. Allowed: {list(env.preset_names)}"
        )
    return [env.preset_names.index(p) for p in presets]


def _score_instances(
    runs: Mapping[str, Sequence[ResultRow]], envs: Mapping[str, Any], depth: int, result: TabularScores
) -> TabularScores:
    """Scores on a table of problem instances (format 2): against the best static preset.

    Per (objective, instance) cell, on the instance's replicate means: the oracle and the
    best static preset chosen on validation, compared on test, paired by replicate
    (:meth:`~lossagent_env.tabular.TabularEnv.oracle_on_means`). A run's score is
    ``(J - J_static) / (J_oracle - J_static)`` with the means of its instance; cells where
    the oracle does not beat the best static preset by :data:`SCHEDULING_Z` standard
    errors on test have none. Objectives must pass :func:`admission`.
    """
    result.by_instance = True
    for label, env in envs.items():
        result.reference = env.preset_names[0]
        result.admission[label] = admission(env)
        for inst in env.instances:
            entry = env.oracle_on_means(instance=inst.name, z=SCHEDULING_Z)
            (value, se), (value_val, se_val) = entry["value"]["test"], entry["value"]["val"]
            j_oracle, j_static = entry["means"]["oracle"]["test"], entry["means"]["static"]["test"]
            j_ref = float(np.mean([env.final_objective([0] * depth, "test", tree=t) for t in inst.seeds]))
            result.cells.append(
                {
                    "objective": label, "instance": inst.name, "oracle": entry["presets"],
                    "static": entry["best_static"]["preset"], "J_oracle": j_oracle, "J_static": j_static,
                    "J_ref": j_ref, "value": value, "se": se, "value_val": value_val, "se_val": se_val,
                    "z": _z(value, se), "ties": entry["ties"], "replicates": entry["replicates"],
                    "defined": bool(value > 0 and _z(value, se) >= SCHEDULING_Z),
                }
            )
    cells = {(c["objective"], c["instance"]): c for c in result.cells}
    for run_rows, first, label, seed, env in _scored_runs(runs, envs):
        indices = _played(env, run_rows)
        tree = env.tree_of(seed)
        instance = env.table.instance_of(tree)
        cell = cells[(label, instance.name)]
        j = env.final_objective(indices, "test", tree=tree)
        static = env.final_objective([env.preset_names.index(cell["static"])] * depth, "test", tree=tree)
        spread, spread_ref = cell["J_oracle"] - cell["J_static"], cell["J_oracle"] - cell["J_ref"]
        result.runs.append(
            {
                "agent": first["agent"], "objective": label, "seed": seed, "instance": instance.name,
                "replicate": instance.seeds.index(tree), "presets": [env.preset_names[i] for i in indices],
                "J": j, "J_val": env.final_objective(indices, "val", tree=tree),
                "normalized": (j - cell["J_static"]) / spread if cell["defined"] else None,
                "normalized_ref": (j - cell["J_ref"]) / spread_ref if spread_ref > 0 else None,
                "gain_vs_static": j - static, "regret": cell["J_oracle"] - j,
                "budget": first.get("budget"),
            }
        )
    _beats_static(result)
    _aggregate(result, task_of=lambda run: (run["objective"], run["instance"]), run_of=lambda run: run["replicate"],
               admitted={o for o, a in result.admission.items() if a["admitted"]})
    return result


ADMIT_RANK = 0.8
"""An objective is kept in a table's aggregate only where validation ranks the sequences
as test does: the mean over instances of the Spearman correlation of their replicate-mean
``J`` on the two splits is at least this (agents choose on validation; they are scored on
test)."""


def admission(env: Any) -> dict[str, Any]:
    """Whether an objective passes the admission rule of a table of instances.

    The rule: (1) the val/test rank agreement (:data:`ADMIT_RANK`), measured on every
    instance of the table, train and test; (2) on at least one of the env's (test)
    instances, the oracle beats the best static preset by :data:`SCHEDULING_Z` standard
    errors on test (else no run has a score).

    Returns:
        ``{"rank_agreement": mean, "per_instance": {name: rho}, "beyond_noise": n,
        "instances": m, "admitted": bool, "reason": text}``.
    """
    from scipy.stats import spearmanr

    every = env.with_instances("all")
    per_instance: dict[str, float] = {}
    for inst in every.instances:
        means = every.sequence_means(inst.name)
        ok = np.isfinite(means["val"]) & np.isfinite(means["test"])
        per_instance[inst.name] = float(spearmanr(means["val"][ok], means["test"][ok]).statistic) if ok.sum() > 2 else math.nan
    rank = float(np.nanmean(list(per_instance.values()))) if per_instance else math.nan
    beyond = 0
    for inst in env.instances:
        (value, se) = env.oracle_on_means(instance=inst.name, z=SCHEDULING_Z)["value"]["test"]
        beyond += value > 0 and _z(value, se) >= SCHEDULING_Z
    reasons = []
    if not rank >= ADMIT_RANK:
        reasons.append(f"val/test rank agreement {rank:.2f} < {ADMIT_RANK:g}")
    if not beyond:
        reasons.append(f"scheduling beats the best static preset beyond noise on none of {len(env.instances)} instances")
    return {
        "rank_agreement": rank, "per_instance": per_instance, "beyond_noise": int(beyond),
        "instances": len(env.instances), "admitted": not reasons, "reason": "; ".join(reasons) or "passes",
    }


def _z(value: float, se: float) -> float:
    """``value / se``, infinite for a nonzero value without noise."""
    if se > 0:
        return value / se
    return math.copysign(math.inf, value) if value else 0.0


def _beats_static(result: TabularScores) -> None:
    """Per objective and agent: the mean gain over the best static preset, paired by tree."""
    gains: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in result.runs:
        gains[(run["objective"], run["agent"])].append(run["gain_vs_static"])
    for (objective, agent), values in gains.items():
        mean = float(np.mean(values))
        se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
        z = _z(mean, se) if math.isfinite(se) else math.nan
        verdict = "beats" if z >= SCHEDULING_Z else "below" if z <= -SCHEDULING_Z else "within noise"
        result.beats_static.setdefault(objective, {})[agent] = {
            "gain": mean, "se": se, "z": z, "runs": len(values), "verdict": verdict,
        }


def _cell(env: Any, label: str, seed: int, depth: int) -> dict[str, Any]:
    oracle = env.oracle(seed=seed)
    static = oracle["best_static"]["preset"]
    j_oracle = env.final_objective(oracle["actions"], split="test", seed=seed)
    j_static = env.final_objective([env.preset_names.index(static)] * depth, split="test", seed=seed)
    j_ref = env.final_objective([0] * depth, split="test", seed=seed)
    return {
        "objective": label, "seed": seed, "oracle": oracle["presets"],
        "J_oracle": j_oracle, "J_oracle_val": oracle["final_objective"],
        "static": static, "J_static": j_static, "J_static_val": oracle["best_static"]["final_objective"],
        "J_ref": j_ref, "defined": j_oracle > j_ref,
    }


def _aggregate(
    result: TabularScores,
    task_of: Callable[[dict[str, Any]], Any] = lambda run: run["objective"],
    run_of: Callable[[dict[str, Any]], Any] = lambda run: run["seed"],
    admitted: set[str] | None = None,
) -> None:
    """IQM, probability of improvement and performance profiles with rliable.

    Args:
        result: Scores with ``runs``; the aggregates are filled in.
        task_of: A run's task (rliable's columns): its objective, or (objective,
            instance) on a table of instances.
        run_of: A run's index within its task (rliable's rows): its seed, or its
            replicate on a table of instances.
        admitted: Objectives that may enter the aggregates (None: all).
    """
    from rliable import library as rly
    from rliable import metrics

    def objective_of(task: Any) -> str:
        return task[0] if isinstance(task, tuple) else task

    by_agent: dict[str, dict[tuple[Any, Any], float]] = defaultdict(dict)
    for run in result.runs:
        if run["normalized"] is not None and (admitted is None or run["objective"] in admitted):
            by_agent[run["agent"]][(task_of(run), run_of(run))] = run["normalized"]
    if not by_agent:
        return
    # Every agent on the same cells: those all of them have (equal budgets, same seeds).
    common = set.intersection(*(set(scores) for scores in by_agent.values()))
    tasks = sorted({task for task, _ in common}, key=str)
    rows = sorted({row for _, row in common})
    complete = [t for t in tasks if all((t, r) in common for r in rows)]
    matrices = {
        agent: np.array([[scores[(t, r)] for t in complete] for r in rows], np.float64)
        for agent, scores in by_agent.items()
    }  # (runs, tasks), as rliable expects
    if complete:
        result.iqm = {a: _triple(e) for a, e in interval_estimates(matrices, metrics.aggregate_iqm).items()}
        for objective in dict.fromkeys(map(objective_of, complete)):
            columns = [j for j, t in enumerate(complete) if objective_of(t) == objective]
            per = {a: m[:, columns] for a, m in matrices.items()}
            result.iqm_by_objective[objective] = {
                a: _triple(e) for a, e in interval_estimates(per, metrics.aggregate_iqm).items()
            }
        agents = list(matrices)
        # P(y > x) = 1 - P(x > y) (ties count one half): one estimate per unordered pair,
        # keyed by the pair itself (labels may hold any character)
        pairs = {(x, y): (matrices[x], matrices[y]) for i, x in enumerate(agents) for y in agents[i + 1 :]}
        improvement = interval_estimates(pairs, metrics.probability_of_improvement, reps=IMPROVEMENT_REPS)
        for (x, y), estimate in improvement.items():
            p, low, high = _triple(estimate)
            result.improvement[(x, y)] = (p, low, high)
            result.improvement[(y, x)] = (1.0 - p, 1.0 - high, 1.0 - low)
        tau = np.linspace(-0.5, 1.0, 61)
        with _global_rng_seeded():  # its intervals draw from NumPy's global RNG
            profiles, _ = rly.create_performance_profile(matrices, tau, reps=100)  # curves only
        result.profiles = {"tau": tau.tolist(), **{a: np.asarray(p).tolist() for a, p in profiles.items()}}


def tabular_markdown(scores: TabularScores, plots: Mapping[str, str]) -> str:
    """The report's section on scores against the optimum (one Markdown block)."""
    if scores.by_instance:
        return _instances_markdown(scores, plots)
    lines = ["## Scores against the optimum (test split)", ""]
    undefined = [c for c in scores.cells if not c["defined"]]
    lines += [
        f"Normalized score = (J - J_ref) / (J_oracle - J_ref), on the test split: 1 is the "
        f"validation oracle's sequence, 0 the reference preset `{scores.reference}` held for "
        "every stage. IQM: interquartile mean over seeds and objectives, [95% stratified "
        "bootstrap interval] (rliable).",
        "",
    ]
    if undefined:
        left_out = sorted({c["objective"] for c in undefined})
        lines += [
            f"{len(undefined)} of {len(scores.cells)} (objective, seed) cells have no normalized "
            "score: the validation oracle's sequence did not beat the reference preset on test "
            "(" + ", ".join(f"{markdown_text(c['objective'])}/{c['seed']}" for c in undefined) + "). The "
            "aggregates compare every agent on the same cells, so the objectives "
            f"{markdown_text(left_out)} are left out of them (their tables below still show J and regret).",
            "",
        ]
    if scores.iqm:
        lines += ["| agent | IQM normalized score | " + " | ".join(map(markdown_text, scores.iqm_by_objective)) + " |",
                  "|---|---|" + "---|" * len(scores.iqm_by_objective)]
        for agent, (point, low, high) in sorted(scores.iqm.items(), key=lambda kv: -kv[1][0]):
            per = [scores.iqm_by_objective[o].get(agent) for o in scores.iqm_by_objective]
            shown = " | ".join(f"{p[0]:.3f} [{p[1]:.3f}, {p[2]:.3f}]" if p else "-" for p in per)
            lines.append(f"| {markdown_text(agent)} | {point:.3f} [{low:.3f}, {high:.3f}] | {shown} |")
        lines.append("")
    lines += [
        "Per objective, means over seeds (test split): the oracle (the validation oracle's "
        "sequence), the best static preset (held for every stage, chosen on validation), "
        "the value of scheduling (oracle - best static, on test and on validation), and each "
        "agent's final J and regret (oracle - agent).",
        "",
    ]
    by_objective: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cell in scores.cells:
        by_objective[cell["objective"]].append(cell)
    for objective, cells in by_objective.items():
        statics = sorted({c["static"] for c in cells})
        lines += [
            f"### {markdown_text(objective)}",
            "",
            "| row | final J (test) | regret | normalized |",
            "|---|---|---|---|",
            f"| **oracle** | {_mean([c['J_oracle'] for c in cells]):.4g} | 0 | 1 |",
            f"| best static ({', '.join(statics)}) | {_mean([c['J_static'] for c in cells]):.4g} | "
            f"{_mean([c['J_oracle'] - c['J_static'] for c in cells]):.4g} | - |",
            f"| reference `{scores.reference}` | {_mean([c['J_ref'] for c in cells]):.4g} | "
            f"{_mean([c['J_oracle'] - c['J_ref'] for c in cells]):.4g} | 0 |",
        ]
        agents: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for run in scores.runs:
            if run["objective"] == objective:
                agents[run["agent"]].append(run)
        for agent, runs in agents.items():
            normalized = [r["normalized"] for r in runs if r["normalized"] is not None]
            lines.append(
                f"| {markdown_text(agent)} | {_mean([r['J'] for r in runs]):.4g} | {_mean([r['regret'] for r in runs]):.4g} | "
                f"{(_mean(normalized) if normalized else math.nan):.3f} |"
            )
        value_test = _mean([c["J_oracle"] - c["J_static"] for c in cells])
        value_val = _mean([c["J_oracle_val"] - c["J_static_val"] for c in cells])
        lines += [
            "",
            f"Value of scheduling (oracle - best static): {value_test:.4g} on test, "
            f"{value_val:.4g} on validation.",
            "",
        ]
    lines += _scheduling_markdown(scores.scheduling)
    lines += _improvement_markdown(scores)
    for title, path in plots.items():
        lines += [f"![{title}]({path})", ""]
    return "\n".join(lines).strip("\n")


def _improvement_markdown(scores: TabularScores) -> list[str]:
    if not scores.improvement:
        return []
    names = sorted({x for x, _ in scores.improvement})
    lines = ["Probability of improvement P(row > column) [95% interval]:", "",
             "| | " + " | ".join(map(markdown_text, names)) + " |", "|---|" + "---|" * len(names)]
    for x in names:
        cells = []
        for y in names:
            p = scores.improvement.get((x, y))
            cells.append("-" if p is None else f"{p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]")
        lines.append(f"| {markdown_text(x)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _interval(triple: Sequence[float] | None) -> str:
    return "-" if triple is None else f"{triple[0]:.3f} [{triple[1]:.3f}, {triple[2]:.3f}]"


def _instances_markdown(scores: TabularScores, plots: Mapping[str, str]) -> str:
    """The section on a table of problem instances: scores against the best static preset."""
    z = f"{SCHEDULING_Z:g}"
    lines = [
        "## Does anyone beat the best static preset, beyond noise? (test instances)",
        "",
        "Every run is scored on the test split of a test instance (problems whose images no "
        "agent tuned on). Per (objective, instance), on the mean over the instance's "
        "replicates (trainings that differ only in their randomness): the oracle (the best "
        "preset sequence) and the best static preset (one preset held for every stage) are "
        "chosen on validation and compared on test, paired by replicate. The value of "
        f"scheduling (oracle - best static) is beyond noise at {z} standard errors or more.",
        "",
        f"Normalized score = (J - J_static) / (J_oracle - J_static) on test: 1 is the oracle, "
        "0 the best static preset. Cells where scheduling is not beyond noise have no "
        f"normalized score and are counted below. Secondary: against the reference preset "
        f"`{scores.reference}` held for every stage, (J - J_ref) / (J_oracle - J_ref).",
        "",
        "### Objectives: the admission rule",
        "",
        f"An objective enters the aggregates when validation ranks the sequences as test does "
        f"(mean Spearman correlation over all instances >= {ADMIT_RANK:g}) and scheduling is "
        "beyond noise on at least one test instance.",
        "",
        "| objective | val/test rank agreement | instances beyond noise | admitted |",
        "|---|---|---|---|",
    ]
    for objective, entry in scores.admission.items():
        verdict = "yes" if entry["admitted"] else f"no: {entry['reason']}"
        lines.append(
            f"| {markdown_text(objective)} | {entry['rank_agreement']:.2f} | "
            f"{entry['beyond_noise']} of {entry['instances']} | {markdown_text(verdict)} |"
        )
    lines += [
        "",
        "### The value of scheduling, per test instance",
        "",
        f"Ties: the other sequences whose validation mean lies within {z} standard errors of the "
        "oracle's (the oracle is one of them, not the only one).",
        "",
        "| objective | instance | oracle | best static | value (test) ± se | z | value (val) ± se | ties | scored |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in scores.cells:
        lines.append(
            f"| {markdown_text(c['objective'])} | {markdown_text(c['instance'])} | {' > '.join(c['oracle'])} | "
            f"{c['static']} | {c['value']:.4g} ± {c['se']:.2g} | {c['z']:.1f} | "
            f"{c['value_val']:.4g} ± {c['se_val']:.2g} | {c['ties']} | {'yes' if c['defined'] else 'no (within noise)'} |"
        )
    excluded = [c for c in scores.cells if not c["defined"]]
    per_objective: dict[str, int] = defaultdict(int)
    for c in excluded:
        per_objective[c["objective"]] += 1
    if excluded:
        lines += ["", "Cells without a normalized score (scheduling within noise): " + ", ".join(
            f"{markdown_text(o)}: {n} of {sum(c['objective'] == o for c in scores.cells)}" for o, n in per_objective.items()
        ) + "."]
    lines += [
        "",
        "### Each agent against the best static preset",
        "",
        f"Mean gain of the agent's final J over the best static preset's on the same "
        f"replicate (test split) ± its standard error over the agent's runs; \"beats\" at "
        f"{z} standard errors or more.",
        "",
        "| objective | agent | gain ± se | z | runs | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for objective, agents in scores.beats_static.items():
        for agent, g in sorted(agents.items(), key=lambda kv: -kv[1]["gain"]):
            lines.append(
                f"| {markdown_text(objective)} | {markdown_text(agent)} | {g['gain']:.4g} ± {g['se']:.2g} | "
                f"{g['z']:.1f} | {g['runs']} | {g['verdict']} |"
            )
    lines += ["", "### IQM of the normalized scores", ""]
    if scores.iqm:
        objectives = list(scores.iqm_by_objective)
        secondary: dict[str, list[float]] = defaultdict(list)
        for run in scores.runs:
            if run["normalized_ref"] is not None:
                secondary[run["agent"]].append(run["normalized_ref"])
        lines += [
            "IQM over the scored (objective, instance, replicate) runs of admitted objectives "
            "[95% stratified bootstrap interval] (rliable); last column: the mean score "
            f"against the reference preset `{scores.reference}` (every run).",
            "",
            "| agent | IQM vs best static | " + " | ".join(map(markdown_text, objectives)) + " | mean vs reference |",
            "|---|---|" + "---|" * len(objectives) + "---|",
        ]
        for agent, triple in sorted(scores.iqm.items(), key=lambda kv: -kv[1][0]):
            per = " | ".join(_interval(scores.iqm_by_objective[o].get(agent)) for o in objectives)
            lines.append(
                f"| {markdown_text(agent)} | {_interval(triple)} | {per} | {_mean(secondary.get(agent, [])):.3f} |"
            )
    else:
        lines.append("No run has a normalized score: no admitted objective has a cell beyond noise.")
    budgets: dict[str, Any] = {}
    for run in scores.runs:
        budgets.setdefault(run["agent"], run.get("budget"))
    lines += [
        "",
        "### Training budgets (on the training instances)",
        "",
        "| agent | budget |",
        "|---|---|",
        *[f"| {markdown_text(a)} | {markdown_text(_budget_text(b))} |" for a, b in budgets.items()],
        "",
    ]
    lines += _improvement_markdown(scores)
    for title, path in plots.items():
        lines += [f"![{title}]({path})", ""]
    return "\n".join(lines).strip("\n")


def _budget_text(budget: Mapping[str, Any] | None) -> str:
    if not budget:
        return "none (zero-shot, or learns within the episode only)"
    return ", ".join(f"{k.replace('_', ' ')} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in budget.items())


def _scheduling_markdown(scheduling: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per objective: is the best schedule better than the best static preset, beyond noise?"""
    if not scheduling:
        return []
    replicates = sorted({int(entry["replicates"]) for entry in scheduling.values()})
    lines = [
        "### Does scheduling beat the best static preset, beyond noise?",
        "",
        f"The table's {', '.join(map(str, replicates))} seeds differ only in training randomness, so "
        "they are replicates of one problem. On the mean over them, the oracle and the best "
        "static preset are chosen on validation and compared on test, paired by seed: the value "
        "of scheduling (oracle - best static) ± its standard error. It is beyond noise when "
        f"it is at least {SCHEDULING_Z:g} standard errors from zero. Ties: other sequences "
        "within 2 standard errors of the oracle on validation.",
        "",
        "| objective | oracle (on means) | best static | value, test | value, validation | z (test) | verdict | ties |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for objective, entry in scheduling.items():
        (test, test_se), (val, val_se) = entry["value"]["test"], entry["value"]["val"]
        z = test / test_se if test_se > 0 else math.copysign(math.inf, test) if test else 0.0
        if z >= SCHEDULING_Z:
            verdict = "scheduling wins"
        elif z <= -SCHEDULING_Z:
            verdict = "static wins on test"
        else:
            verdict = "within noise"
        lines.append(
            f"| {markdown_text(objective)} | {' > '.join(entry['presets'])} | {entry['best_static']['preset']} | "
            f"{test:.4g} ± {test_se:.2g} | {val:.4g} ± {val_se:.2g} | {z:.1f} | {verdict} | {entry['ties']} |"
        )
    return [*lines, ""]


def plot_scores(scores: TabularScores, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The IQM of normalized scores (bars with intervals) and the performance profiles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    if not scores.iqm:
        return paths
    order = sorted(scores.iqm, key=lambda a: scores.iqm[a][0])
    fig = Figure(figsize=(6.4, 0.5 * len(order) + 1.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [scores.iqm[a][0] for a in order]
    errors = np.array([[scores.iqm[a][0] - scores.iqm[a][1], scores.iqm[a][2] - scores.iqm[a][0]] for a in order]).T
    ax.barh([plain_text(a) for a in order], points, xerr=errors, color="tab:blue", alpha=0.7, capsize=3)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="oracle")
    zero = "best static preset" if scores.by_instance else f"reference ({scores.reference})"
    ax.axvline(0.0, color="gray", linestyle=":", linewidth=1, label=zero)
    ax.set_xlabel("IQM of the normalized score (test split), 95% stratified bootstrap")
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    paths["normalized score"] = out_dir / "tabular__normalized_score.png"
    save_figure(fig, paths["normalized score"])

    if scores.profiles:
        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        tau = scores.profiles["tau"]
        for agent in order[::-1]:
            ax.plot(tau, scores.profiles[agent], label=plain_text(agent))
        ax.set_xlabel("normalized score tau")
        ax.set_ylabel("fraction of runs with score > tau")
        ax.set_title("Performance profiles (test split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        paths["performance profiles"] = out_dir / "tabular__profiles.png"
        save_figure(fig, paths["performance profiles"])
    return paths


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a Matplotlib figure as PNG atomically (:func:`benchmarks.results.write_atomic`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_atomic(path, buffer.getvalue())


def markdown_text(text: Any) -> str:
    """``text`` for one Markdown table cell or line: ``|`` escaped, no line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def plain_text(text: Any) -> str:
    """``text`` shown as written by Matplotlib (a ``$`` would start math mode)."""
    return str(text).replace("$", r"\$")


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan
