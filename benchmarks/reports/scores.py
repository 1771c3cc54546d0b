"""Scores of a benchmark on a table replay: per test instance, paired by replicate.

Each run is scored on the table's held-out test split, per (track, objective, test
instance) *cell*, against references no agent can move (the first preset, the
transferred static, the best static in hindsight, the oracle and the exact random
expectation), paired by replicate; an objective enters the ranking only when admitted
(:data:`ADMIT_RANK`, and selection beyond noise on most test instances). The
references, the score, the gains, admission and ranking are described in docs/tables.md
("LossBench: the report of a tabular benchmark").

Statistics are :mod:`benchmarks.reports.stats`; the Markdown is :mod:`benchmarks.reports.render`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from benchmarks.errors import BenchmarkError
from benchmarks.execution.results import ResultRow
from benchmarks.execution.runs import RunSpec
from benchmarks.reports.stats import ALPHA, Estimate, holm, interval_estimates, paired, stratified, verdict
from benchmarks.suites.suite import objective_label

__all__ = [
    "ADMIT_RANK",
    "REFERENCES",
    "Admission",
    "AgentCell",
    "Cell",
    "TabularScores",
    "score_runs",
]

ADMIT_RANK = 0.8
"""Least mean val/test Spearman correlation of the sequences' replicate means for an
objective to be scored (agents choose on validation; they are scored on test)."""

REFERENCES = ("first", "transferred", "hindsight")
"""The references of the gains, in report order."""

TRACKS = {"tuned": "tuned objective", "new": "new objective"}


@dataclass
class Cell:
    """One (track, objective, test instance): its references per replicate (test split).

    Attributes:
        track: ``"tuned"`` or ``"new"``.
        objective: The objective's label.
        instance: The test instance.
        seeds: Its replicates (table seeds), in order; every array below follows them.
        presets: ``{"first": name, "transferred": name or None, "hindsight": name,
            "oracle": [names]}``.
        values: Test ``J`` per replicate of ``"first"``, ``"transferred"`` (absent
            without training instances), ``"hindsight"``, ``"oracle"`` and
            ``"random"`` (the exact expectation of a uniformly random schedule).
        spread: Best minus worst sequence (test, replicate means).
        noise: Median over sequences of the sd over replicates (test).
        rank_agreement: Spearman of the sequences' val and test replicate means here.
        selection: Best static in hindsight - random expectation (paired).
        selection_vs_transferred: Best static in hindsight - transferred static (paired;
            None without training instances).
        scheduling: Oracle - best static in hindsight (paired).
        selection_p: The p-value of ``selection`` after Holm across the test instances.
    """

    track: str
    objective: str
    instance: str
    seeds: tuple[int, ...]
    presets: dict[str, Any]
    values: dict[str, np.ndarray]
    spread: float
    noise: float
    rank_agreement: float
    selection: Estimate
    selection_vs_transferred: Estimate | None
    scheduling: Estimate
    selection_p: float = math.nan

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.track, self.objective, self.instance)

    @property
    def range(self) -> float:
        """The primary score's denominator: mean over replicates of oracle - random."""
        return float(np.mean(self.values["oracle"] - self.values["random"]))


@dataclass
class AgentCell:
    """One agent on one cell.

    Attributes:
        agent: Its label.
        cell: The cell.
        j: Test ``J`` per replicate it played (the mean of its runs on that replicate).
        runs: Its runs on this cell.
        score: The primary score (None where the cell's range is not positive).
        gains: Per reference, the paired gain in the metric's units.
        p: Per reference, the p-value after Holm across the test instances.
        verdicts: Per reference, ``"above"``, ``"below"``, ``"within noise"``,
            ``"identical"`` or ``"no test"``.
    """

    agent: str
    cell: Cell
    j: dict[int, float]
    runs: int
    score: Estimate | None = None
    gains: dict[str, Estimate] = field(default_factory=dict)
    p: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)

    def paired_with(self, reference: np.ndarray) -> np.ndarray:
        """The agent's ``J`` minus ``reference`` on each replicate it played."""
        index = {s: i for i, s in enumerate(self.cell.seeds)}
        return np.array([self.j[s] - reference[index[s]] for s in self.j])


@dataclass
class Admission:
    """Whether an objective of a track is scored, and why."""

    rank_agreement: float
    per_instance: dict[str, float]
    beyond_noise: int
    instances: int
    admitted: bool
    reason: str


@dataclass
class TabularScores:
    """Everything the tabular section of a report shows.

    Attributes:
        cells: Per (track, objective, test instance).
        agents: Per (track, objective, test instance, agent).
        overall: ``{(track, objective, agent, reference): (estimate, verdict)}``: the
            mean over the test instances of the per-instance mean gains.
        admission: ``{(track, objective): Admission}``.
        ranking: ``{track: [(agent, mean, low, high)]}`` best first: the mean primary
            score over the track's admitted cells and its 95% stratified-bootstrap
            interval (NaN where some replicate is missing).
        plays: ``{agent: {(track, objective, seed): [presets]}}``: what each run played.
        budgets: ``{agent: budget recorded in its rows (None: no training)}``.
        tune_on: The objective label the new-objective track tunes under.
        objectives: ``{track: [objective labels in suite order]}``.
        replicates: Replicates per test instance.
        first: The name of the table's first preset.
        iqm: ``{track: {agent: (iqm, low, high)}}``: rliable's interquartile mean of the
            per-replicate scores of the ranked cells, with its interval (secondary).
        improvement: ``{track: {(x, y): p}}``: rliable's probability that agent x
            improves on agent y on those scores (secondary; the point estimate).
        profiles: ``{track: {"tau": [...], agent: [fraction of runs with score > tau]}}``:
            rliable's performance profiles of those scores.
    """

    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    agents: dict[tuple[str, str, str, str], AgentCell] = field(default_factory=dict)
    overall: dict[tuple[str, str, str, str], tuple[Estimate, str]] = field(default_factory=dict)
    admission: dict[tuple[str, str], Admission] = field(default_factory=dict)
    ranking: dict[str, list[tuple[str, float, float, float]]] = field(default_factory=dict)
    plays: dict[str, dict[tuple[str, str, int], list[str]]] = field(default_factory=dict)
    budgets: dict[str, Any] = field(default_factory=dict)
    tune_on: str | None = None
    objectives: dict[str, list[str]] = field(default_factory=dict)
    replicates: dict[str, int] = field(default_factory=dict)
    first: str = ""
    iqm: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    improvement: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    profiles: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def instances(self, track: str, objective: str) -> list[str]:
        """The test instances of an objective, in table order."""
        return [c.instance for c in self.cells.values() if c.track == track and c.objective == objective]

    def agent_order(self, track: str) -> list[str]:
        """The agents of a track, best ranked first (then the unranked, by label)."""
        ranked = [a for a, *_ in self.ranking.get(track, [])]
        others = sorted({k[3] for k in self.agents if k[0] == track} - set(ranked))
        return ranked + others


def score_runs(runs: Mapping[str, Sequence[ResultRow]], specs: Mapping[str, RunSpec], table: str) -> TabularScores:
    """Score the complete runs of a tabular benchmark.

    Args:
        runs: Rows of each complete run, sorted by stage.
        specs: The suite's runs by name (:func:`benchmarks.execution.runs.expand`).
        table: The table file to score against (verified by the report).

    Raises:
        BenchmarkError: A run that played a preset the table does not have.
    """
    import gymnasium as gym

    import lossagent_env  # noqa: F401  (registers the ids)
    from lossagent_env.tabular import TableAnalysis, load_table

    whole = load_table(table)
    result = TabularScores(first=whole.preset_names[0])
    envs: list[Any] = []
    groups: dict[tuple[str, str], list[tuple[RunSpec, Sequence[ResultRow]]]] = defaultdict(list)
    for name, rows in runs.items():  # every run is one of the suite's (load_benchmark checked)
        groups[(specs[name].track, specs[name].objective)].append((specs[name], rows))
    order = {k: i for i, k in enumerate(dict.fromkeys((s.track, s.objective) for s in specs.values()))}
    for (track, objective), members in sorted(groups.items(), key=lambda kv: order[kv[0]]):  # the suite's order
        spec = members[0][0]
        env: Any = gym.make(spec.env_id, **spec.make_env_kwargs()).unwrapped
        envs.append(env)
        analysis = TableAnalysis(whole, spec.objective_spec, spec.max_stages)
        tune = spec.objective_spec if spec.train_objective is None else spec.train_objective
        train_analysis = analysis if spec.train_objective is None else TableAnalysis(whole, tune, spec.max_stages)
        result.objectives.setdefault(track, []).append(objective)
        if track == "new":
            result.tune_on = objective_label(tune)
        played = sorted({env.table.instance_of(env.tree_of(s.seed)).name for s, _ in members},
                        key=[i.name for i in whole.instances].index)
        cells = [_cell(analysis, train_analysis, track, objective, inst) for inst in played]
        for cell, p in zip(cells, holm([c.selection.p if c.selection.mean > 0 else 1.0 for c in cells])):
            cell.selection_p = p
            result.cells[cell.key] = cell
            result.replicates[cell.instance] = len(cell.seeds)
        result.admission[(track, objective)] = _admission(analysis, cells)
        per_agent: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        for spec, rows in members:
            tree = env.tree_of(spec.seed)
            instance = env.table.instance_of(tree).name
            indices = _played(env, rows)
            j = float(analysis.values([tree], indices, "test")[0])
            per_agent[spec.agent][instance][tree].append(j)
            result.plays.setdefault(spec.agent, {})[(track, objective, spec.seed)] = [env.preset_names[i] for i in indices]
            result.budgets.setdefault(spec.agent, rows[0].get("budget"))
        for agent, by_instance in per_agent.items():
            for instance, by_tree in by_instance.items():
                cell = result.cells[(track, objective, instance)]
                entry = AgentCell(agent, cell, {t: float(np.mean(v)) for t, v in by_tree.items()},
                                  sum(len(v) for v in by_tree.values()))
                result.agents[(track, objective, instance, agent)] = entry
    for key in dict.fromkeys(k[:2] + (k[3],) for k in result.agents):  # in a fixed order
        _gains(result, *key)
    for track in result.objectives:
        result.ranking[track] = _ranking(result, track)
    for env in envs:
        env.close()
    return result


def _cell(analysis: Any, train: Any, track: str, objective: str, instance: str) -> Cell:
    """The references of one test instance (see docs/tables.md)."""
    seeds = analysis.replicates(instance)
    static = analysis.static_sequences
    test = analysis.leaves(seeds, "test")
    hindsight = analysis.best_static(seeds)
    oracle = analysis.best_sequence(seeds)
    values = {
        "first": test[:, static[0]],
        "hindsight": test[:, static[hindsight]],
        "oracle": test[:, oracle],
        "random": analysis.random_expectation(seeds, "test"),
    }
    presets: dict[str, Any] = {
        "first": analysis.preset_names[0], "hindsight": analysis.preset_names[hindsight],
        "oracle": [analysis.preset_names[a] for a in analysis.actions(oracle)], "transferred": None,
    }
    training = [s for name in train.instances("train") for s in train.replicates(name)]
    transfer_gap = None
    if training:
        # the preset best on the training instances: the mean over them of their
        # replicate means, under the objective agents tune on
        means = np.mean([train.means(train.replicates(name), "val")[static] for name in train.instances("train")], axis=0)
        transferred = int(np.argmax(means))
        presets["transferred"] = analysis.preset_names[transferred]
        values["transferred"] = test[:, static[transferred]]
        transfer_gap = paired(values["hindsight"] - values["transferred"])
    means = test.mean(axis=0)
    return Cell(
        track=track, objective=objective, instance=instance, seeds=tuple(seeds), presets=presets, values=values,
        spread=float(np.nanmax(means) - np.nanmin(means)),
        noise=float(np.nanmedian(test.std(axis=0, ddof=1))) if len(seeds) > 1 else math.nan,
        rank_agreement=analysis.rank_agreement(seeds),
        selection=paired(values["hindsight"] - values["random"]),
        selection_vs_transferred=transfer_gap,
        scheduling=paired(values["oracle"] - values["hindsight"]),
    )


def _admission(analysis: Any, cells: Sequence[Cell]) -> Admission:
    """Rank agreement over every instance of the table; selection beyond noise on most
    test instances."""
    per_instance = {name: analysis.rank_agreement(analysis.replicates(name)) for name in analysis.instances()}
    finite = [v for v in per_instance.values() if math.isfinite(v)]
    rank = float(np.mean(finite)) if finite else math.nan
    beyond = sum(1 for c in cells if c.selection.mean > 0 and c.selection_p < ALPHA)
    reasons = []
    if not rank >= ADMIT_RANK:
        reasons.append(f"val/test rank agreement {rank:.2f} < {ADMIT_RANK:g}")
    if not beyond > len(cells) / 2:
        reasons.append(
            f"the choice of preset moves it beyond noise on {beyond} of {len(cells)} test instances "
            "(needs more than half)"
        )
    return Admission(rank, per_instance, beyond, len(cells), not reasons, "; ".join(reasons) or "admitted")


def _gains(result: TabularScores, track: str, objective: str, agent: str) -> None:
    """Per instance and overall: the gains against each reference, Holm across instances."""
    entries = [result.agents[(track, objective, i, agent)] for i in result.instances(track, objective)
               if (track, objective, i, agent) in result.agents]
    for entry in entries:
        cell = entry.cell
        if cell.range > 0:
            entry.score = paired(entry.paired_with(cell.values["random"])).scaled(1.0 / cell.range)
        for ref in REFERENCES:
            if ref in cell.values:
                entry.gains[ref] = paired(entry.paired_with(cell.values[ref]))
    for ref in REFERENCES:
        have = [e for e in entries if ref in e.gains]
        if not have:
            continue
        for entry, p in zip(have, holm([e.gains[ref].p for e in have])):
            entry.p[ref] = p
            entry.verdicts[ref] = verdict(entry.gains[ref], p)
        overall = stratified([e.paired_with(e.cell.values[ref]) for e in have])
        result.overall[(track, objective, agent, ref)] = (overall, verdict(overall))


def _ranking(result: TabularScores, track: str) -> list[tuple[str, float, float, float]]:
    """Agents by their mean primary score over the admitted cells of ``track``."""
    admitted = [o for o in result.objectives.get(track, []) if result.admission[(track, o)].admitted]
    cells = [c for c in result.cells.values() if c.track == track and c.objective in admitted and c.range > 0]
    agents = sorted({k[3] for k in result.agents if k[0] == track})
    means, matrices = {}, {}
    for agent in agents:
        found = [result.agents.get((*c.key, agent)) for c in cells]
        if not cells or any(e is None or e.score is None for e in found):
            continue
        entries = cast(list[AgentCell], found)  # every cell scored (checked above)
        means[agent] = float(np.mean([cast(Estimate, e.score).mean for e in entries]))
        columns = [[(entry.j[s] - r) / cell.range if s in entry.j else math.nan
                    for s, r in zip(cell.seeds, cell.values["random"])]
                   for cell, entry in zip(cells, entries)]
        if len({len(c) for c in columns}) == 1:
            matrices[agent] = np.array(columns, np.float64).T  # (replicates, cells)
    bounds: dict[str, tuple[float, float]] = {}
    complete = {a: m for a, m in matrices.items() if np.isfinite(m).all()}
    if complete:
        for agent, estimate in interval_estimates(complete, lambda x: np.mean(np.mean(x, axis=0))).items():
            bounds[agent] = (float(estimate[1, 0]), float(estimate[2, 0]))
        _secondary(result, track, complete)
    ranked = sorted(means, key=lambda a: (-means[a], a))
    return [(a, means[a], *bounds.get(a, (math.nan, math.nan))) for a in ranked]


def _secondary(result: TabularScores, track: str, matrices: Mapping[str, np.ndarray]) -> None:
    """rliable's interquartile mean (with its interval), probability of improvement (the
    point estimate: a bootstrap of it costs minutes) and performance profiles of the same
    scores. Secondary: the ranking is the mean, which keeps an agent below another on
    every cell below it."""
    from rliable import library as rly
    from rliable import metrics

    from benchmarks.reports.stats import global_rng_seeded

    result.iqm[track] = {
        a: (float(e[0, 0]), float(e[1, 0]), float(e[2, 0]))
        for a, e in interval_estimates(dict(matrices), metrics.aggregate_iqm).items()
    }
    agents = list(matrices)
    result.improvement[track] = {
        (x, y): float(metrics.probability_of_improvement(matrices[x], matrices[y]))
        for x in agents for y in agents if x != y
    }
    tau = np.linspace(-1.0, 1.5, 51)
    with global_rng_seeded():  # its (unused) intervals draw from NumPy's global RNG
        profiles, _ = rly.create_performance_profile(dict(matrices), tau, reps=10)
    result.profiles[track] = {"tau": tau.tolist(), **{a: np.asarray(p).tolist() for a, p in profiles.items()}}


def _played(env: Any, run_rows: Sequence[ResultRow]) -> list[int]:
    """The preset indices a run played.

    Raises:
        BenchmarkError: A row without a preset, or a preset the table does not have.
    """
    first = run_rows[0]
    presets = [row.get("preset") for row in run_rows]
    if None in presets:
        raise BenchmarkError(f"Run {first['run']!r} has rows without a preset; it did not run on a table.")
    unknown = [(row["stage"], p) for row, p in zip(run_rows, presets, strict=True) if p not in env.preset_names]
    if unknown:
        stage, preset = unknown[0]
        raise BenchmarkError(
            f"Stage {stage} of run {first['run']!r} played preset {preset!r}, which the table "
            f"does not have. Allowed: {list(env.preset_names)}"
        )
    return [env.preset_names.index(p) for p in presets]
