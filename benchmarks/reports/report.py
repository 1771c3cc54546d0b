"""The benchmark report, rebuilt from ``results.jsonl`` alone.

``build_report(out)`` writes, all under ``out``: ``summary.csv`` (one row per
(objective, agent) over the complete runs), ``plots/`` (per objective, the objective per
stage with its 95% stratified-bootstrap band and the stacked loss weights per agent;
names from :func:`plot_stems`), ``report.md``, and on a table replay ``scores.json``
(verdicts from :mod:`benchmarks.reports.scores`, rendered by :mod:`benchmarks.reports.render`).
Four steps: :func:`load_benchmark` reads and checks the rows, the stored suite and the
table; :func:`aggregate` groups the complete runs, summarizes them and scores a table
replay; :func:`render_markdown` fills in ``benchmarks/reports/templates/report.md``;
:func:`build_report` writes the files.

The columns of ``summary.csv``, the statistics and what the report accepts: see
docs/benchmarks.md ("The output folder").

Example:
    >>> from benchmarks.reports.report import build_report
    >>> paths = build_report("runs/smoke-20250101-120000")
    >>> paths["report"]
    PosixPath('runs/smoke-20250101-120000/report.md')
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any, Literal

import numpy as np

from benchmarks.errors import BenchmarkError
from benchmarks.execution.results import (
    RESULTS,
    SUITE_FILE,
    ResultRow,
    complete_runs,
    distinct_rows,
    read_numbered_rows,
    read_stored_suite,
    write_atomic,
    write_json,
)
from benchmarks.execution.runs import RunSpec, expand
from benchmarks.reports.render import markdown_text as _md
from benchmarks.reports.render import plain_text as _plain
from benchmarks.reports.render import plot_ranking, save_figure, scores_json, tabular_markdown
from benchmarks.reports.scores import TabularScores, score_runs
from benchmarks.reports.stats import BOOTSTRAP_REPS, interval_estimates
from benchmarks.reports.templates import fragments, join_blocks
from benchmarks.suites.suite import TABULAR_ENV_ID, Suite, TableIdentity, identify_table, safe_name, table_differs

__all__ = [
    "SUMMARY_COLUMNS",
    "TIMING_COLUMNS",
    "Aggregates",
    "Benchmark",
    "LLMTime",
    "aggregate",
    "build_report",
    "llm_time",
    "llm_time_line",
    "load_benchmark",
    "mean_intervals",
    "read_summary",
    "render_markdown",
    "summarize",
]

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = (
    "objective",
    "agent",
    "seeds",
    "final_mean",
    "final_ci_low",
    "final_ci_high",
    "best_mean",
    "best_ci_low",
    "best_ci_high",
    "auc_mean",
    "diverged",
    "wall_s_mean",
    "prompt_tokens_mean",
    "completion_tokens_mean",
    "retries",
    "fallbacks",
    "unmeasured",
    "final_unmeasured",
)
"""Columns of ``summary.csv``, in order. ``unmeasured`` counts stages whose objective
could not be measured (``objective_value`` NaN, e.g. a judge that kept failing): in the
best-so-far and the AUC such a stage counts with the last measured value before it,
and a run with no measured stage is left out of the means. The final J is the last
stage's own value: ``final_unmeasured`` counts the runs whose last stage is unmeasured,
which are left out of ``final_mean`` (NaN when every run's is)."""

TIMING_COLUMNS = ("wall_s_mean",)
"""Columns that depend on wall-clock time (everything else is reproducible)."""

# Agents that train the network beyond the episode's stages: said in the report so
# that "equal budget" is read correctly.
_EXTRA_TRAINING = {
    "ppo": "`ppo` first trains its policy on the env for `train_steps` extra stages "
    "(outside the episode; its wall time includes them).",
    "pbt": "`pbt` trains `population` members at every stage of its episode "
    "(population x stages in all; its wall time includes them).",
}


def mean_intervals(values: np.ndarray) -> np.ndarray:
    """The mean over runs of every column of ``values``, with its 95% interval.

    The interval is rliable's stratified bootstrap (:func:`benchmarks.reports.stats.interval_estimates`):
    each column is a task whose runs are resampled. A NaN is a run a column lacks:
    the columns measured by the same runs are estimated together on those runs.

    Args:
        values: ``(runs, columns)``.

    Returns:
        ``(3, columns)``: mean, low and high end of the interval (NaN for a column
        without a finite value).
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.full((3, values.shape[1]), np.nan)
    finite = np.isfinite(values)
    for mask in dict.fromkeys(map(tuple, finite.T)):
        rows = np.array(mask, dtype=bool)
        if not rows.any():
            continue
        columns = np.flatnonzero((finite.T == rows).all(axis=1))
        out[:, columns] = interval_estimates({0: values[rows][:, columns]}, lambda x: np.mean(x, axis=0))[0]
    return out


# --------------------------------------------------------------------------- summary


def _runs(rows: Iterable[ResultRow]) -> dict[str, list[ResultRow]]:
    """Rows of complete runs, grouped by run and sorted by stage."""
    rows = list(rows)
    done = complete_runs(rows)
    runs: dict[str, list[ResultRow]] = defaultdict(list)
    for row in rows:
        if row["run"] in done:
            runs[row["run"]].append(row)
    for stages in runs.values():
        stages.sort(key=lambda r: int(r["stage"]))
    return dict(runs)


def _note_total(stages: Iterable[ResultRow], key: str) -> float:
    values = ((row.get("notes") or {}).get(key) for row in stages)
    return sum((int(v) if isinstance(v, bool) else v for v in values if isinstance(v, (int, float))), 0.0)


@dataclasses.dataclass(frozen=True)
class LLMTime:
    """Where the chat model's time went in a benchmark.

    Attributes:
        decisions: Decisions that asked a model (stages whose notes hold ``latency_s``).
        median_s: Median latency of one decision, in seconds (retries included).
        p90_s: 90th percentile of the latency, in seconds.
        total_s: Sum of the latencies.
        run_wall_s: Sum of the wall time of every run in the rows.
        share: ``total_s / run_wall_s``: the part of the runs' time spent waiting for
            the model.
    """

    decisions: int
    median_s: float
    p90_s: float
    total_s: float
    run_wall_s: float
    share: float


def llm_time(rows: Iterable[ResultRow]) -> LLMTime | None:
    """The latency of the chat model's decisions and its share of the runs' wall time.

    Args:
        rows: Result rows (any runs, complete or not).

    Returns:
        The figures, or None when no stage asked a model.
    """
    latencies: list[float] = []
    wall: dict[str, float] = {}
    for row in rows:
        value = (row.get("notes") or {}).get("latency_s")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            latencies.append(float(value))
        run_wall = row.get("wall_s")
        if isinstance(run_wall, (int, float)) and math.isfinite(run_wall):
            wall[str(row.get("run"))] = max(wall.get(str(row.get("run")), 0.0), float(run_wall))
    if not latencies:
        return None
    total, run_wall = float(sum(latencies)), float(sum(wall.values()))
    return LLMTime(
        decisions=len(latencies),
        median_s=float(np.median(latencies)),
        p90_s=float(np.percentile(latencies, 90)),
        total_s=total,
        run_wall_s=run_wall,
        share=total / run_wall if run_wall > 0 else math.nan,
    )


def model_warnings(rows: Iterable[ResultRow]) -> list[str]:
    """The distinct lines the agents recorded under ``notes["warnings"]`` (what a user
    should know about how their model answered, such as the embedded model's server
    without its llama-cpp-python patches), in the order first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        lines = (row.get("notes") or {}).get("warnings")
        for line in lines if isinstance(lines, list) else []:
            seen.setdefault(str(line), None)
    return list(seen)


def llm_time_line(figures: LLMTime) -> str:
    """One line of :func:`llm_time`'s figures, for the report and the command line."""
    return (
        f"LLM decisions: {figures.decisions}, median {figures.median_s:.2f} s "
        f"(90th percentile {figures.p90_s:.2f} s); {figures.total_s:.1f} s in all, "
        f"{100 * figures.share:.0f}% of the runs' wall time ({figures.run_wall_s:.1f} s)"
    )


def summarize(
    rows: Iterable[ResultRow],
    agent_order: Sequence[str] | None = None,
    objective_order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One summary row per (objective, agent) over the complete runs in ``rows``.

    Args:
        rows: Stage rows of ``results.jsonl``.
        agent_order: Order of agents in the output (default: sorted); agents not in
            it come after, sorted.
        objective_order: Order of objectives likewise.

    Returns:
        Dicts with the keys of :data:`SUMMARY_COLUMNS`.
    """
    groups: dict[tuple[str, str], list[list[ResultRow]]] = defaultdict(list)
    for run_rows in _runs(rows).values():
        first = run_rows[0]
        groups[(first["objective"], first["agent"])].append(run_rows)

    def rank(order: Sequence[str] | None, name: str) -> tuple[int, str]:
        order = list(order or [])
        return (order.index(name), "") if name in order else (len(order), name)

    out = []
    for objective, agent in sorted(
        groups, key=lambda k: (rank(objective_order, k[0]), rank(agent_order, k[1]))
    ):
        runs = sorted(groups[(objective, agent)], key=lambda r: int(r[0]["seed"]))
        raw = [np.array([float(r["objective_value"]) for r in run]) for run in runs]
        unmeasured = int(sum(np.isnan(c).sum() for c in raw))
        curves = [c for c in map(_carried_forward, raw) if c.size]
        if not curves:
            logger.warning("No measured stage for %s on %s; left out of the summary.", agent, objective)
            continue
        final = [float(c[-1]) if c.size else math.nan for c in raw if np.isfinite(c).any()]
        final_unmeasured = sum(1 for c in raw if c.size and not np.isfinite(c[-1]))
        best = [float(np.max(c)) for c in curves]
        auc = [float(np.mean(c)) for c in curves]
        (final_mean, best_mean), lows, highs = mean_intervals(np.column_stack([final, best]))
        out.append(
            {
                "objective": objective,
                "agent": agent,
                "seeds": len(runs),
                "final_mean": float(final_mean),
                "final_ci_low": float(lows[0]),
                "final_ci_high": float(highs[0]),
                "best_mean": float(best_mean),
                "best_ci_low": float(lows[1]),
                "best_ci_high": float(highs[1]),
                "auc_mean": float(np.mean(auc)),
                "diverged": int(sum(bool(r.get("diverged")) for run in runs for r in run)),
                "wall_s_mean": float(np.mean([_wall_s(run) for run in runs])),
                "prompt_tokens_mean": float(np.mean([_note_total(run, "prompt_tokens") for run in runs])),
                "completion_tokens_mean": float(
                    np.mean([_note_total(run, "completion_tokens") for run in runs])
                ),
                "retries": int(sum(_note_total(run, "retries") for run in runs)),
                "fallbacks": int(sum(_note_total(run, "fallback") for run in runs)),
                "unmeasured": unmeasured,
                "final_unmeasured": final_unmeasured,
            }
        )
    return out


def _wall_s(run: Sequence[ResultRow]) -> float:
    """Wall time of a run: ``wall_s`` of its last stage (NaN where a row lacks it)."""
    value = run[-1].get("wall_s")
    return math.nan if value is None else float(value)


def _carried_forward(curve: np.ndarray) -> np.ndarray:
    """The curve with each unmeasured (NaN) stage given the last measured value before
    it; leading unmeasured stages are dropped (empty if nothing was measured)."""
    finite = np.isfinite(curve)
    if not finite.any():
        return curve[:0]
    index = np.where(finite, np.arange(curve.size), -1)
    np.maximum.accumulate(index, out=index)
    return curve[index[index >= 0]]


def write_summary_csv(summary: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write :func:`summarize` output as CSV (floats at full precision)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    for row in summary:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return write_atomic(path, text.getvalue().encode("utf-8"))


def read_summary(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``summary.csv`` back (numbers as int/float)."""
    counts = ("seeds", "diverged", "retries", "fallbacks", "unmeasured", "final_unmeasured")
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {k: v if k in ("objective", "agent") else int(v) if k in counts else float(v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


# --------------------------------------------------------------------------- plots


def plot_objective(
    runs_by_agent: Mapping[str, Sequence[Sequence[ResultRow]]],
    objective: str,
    path: str | os.PathLike[str],
) -> Path:
    """Objective per stage per agent: mean over seeds with a 95% stratified-bootstrap band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for agent, runs in runs_by_agent.items():
        stages = np.array([int(r["stage"]) for r in runs[0]])
        values = np.array([[float(r["objective_value"]) for r in run] for run in runs])  # (seed, stage)
        keep = np.isfinite(values).any(axis=0)  # stages no seed could measure are not drawn
        stages, values = stages[keep], values[:, keep]
        if not stages.size:
            continue
        mean, low, high = mean_intervals(values)
        (line,) = ax.plot(stages, mean, marker="o", markersize=3, label=_plain(agent))
        ax.fill_between(stages, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("stage")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"objective J ({_plain(objective)}, higher is better)")
    ax.set_title(f"Objective per stage: {_plain(objective)} (mean, 95% stratified bootstrap)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_weights(
    runs_by_agent: Mapping[str, Sequence[Sequence[ResultRow]]],
    objective: str,
    path: str | os.PathLike[str],
) -> Path:
    """Each agent's loss weights over the stages, stacked, mean over seeds.

    Weights are in action units (``[0, 1]`` per loss; the effective weight is this times
    the loss's ``scale``), so that losses of very different scales stay visible.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    agents = list(runs_by_agent)
    cols = min(3, len(agents))
    nrows = -(-len(agents) // cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * nrows + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    loss_names: list[str] = []
    for runs in runs_by_agent.values():
        for name in runs[0][0].get("loss_names") or []:
            if name not in loss_names:
                loss_names.append(name)
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)
    for ax, agent in zip(axes.flat, agents, strict=False):
        runs = runs_by_agent[agent]
        stages = np.array([int(r["stage"]) for r in runs[0]])
        # (seed, stage, loss) in the order of loss_names; a loss a run lacks counts 0
        actions = np.array([[_action_of(row, loss_names) for row in run] for run in runs], dtype=np.float64)
        if loss_names:
            ax.stackplot(stages, actions.mean(axis=0).T, labels=[_plain(n) for n in loss_names], alpha=0.85)
        ax.set_title(_plain(agent), fontsize="medium")
        ax.set_xlabel("stage")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(agents) :]:
        ax.set_visible(False)
    for row_axes in axes:
        row_axes[0].set_ylabel("weight (action units)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize="small")
    fig.suptitle(
        f"Loss weights per stage: {_plain(objective)} (mean over seeds; effective weight = weight x scale)",
        y=0.0,
        va="bottom",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1 - 0.35 / fig.get_figheight()))
    return save_figure(fig, path)


def _action_of(row: ResultRow, loss_names: Sequence[str]) -> list[float]:
    """A row's action in the order of ``loss_names`` (0 for a loss the row lacks)."""
    action = dict(zip(row.get("loss_names") or [], row.get("action") or [], strict=False))
    return [float(action.get(name, 0.0)) for name in loss_names]


# --------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def build_report(out: str | os.PathLike[str]) -> dict[str, Path]:
    """Rebuild ``summary.csv``, ``report.md`` and the plots of a benchmark directory
    (the steps: module docstring); nothing is written before every check has passed.

    Args:
        out: A directory holding ``results.jsonl`` (and ``suite.json`` if written by
            the runner; it gives the runs to expect, the agent and objective order and
            the description).

    Returns:
        ``{"summary": path, "report": path, "<objective>__objective": png, ...}``.
        Every file is written under ``out``.

    Raises:
        FileNotFoundError: ``out`` has neither ``results.jsonl`` nor ``suite.json``,
            or the table of a tabular benchmark is gone.
        BenchmarkError: A row that cannot be reported (bad field, conflicting
            duplicate, a run the suite does not have; the message names the line), or
            a tabular benchmark whose table file is not the one it ran on.
    """
    bench = load_benchmark(out)
    plots_dir = _plots_dir(bench.out)
    agg = aggregate(bench)
    paths = {"summary": write_summary_csv(agg.summary, bench.out / "summary.csv")}
    paths.update(_plot_objectives(agg.runs, agg.summary, agg.objectives, agg.stems, plots_dir))
    score_plots: dict[str, str] = {}
    if agg.scores is not None:
        plots = plot_ranking(agg.scores, plots_dir)
        paths.update({f"tabular__{k}": v for k, v in plots.items()})
        score_plots = {k: f"plots/{v.name}" for k, v in plots.items()}
        write_json(bench.out / "scores.json", scores_json(agg.scores))  # atomic: a link there is replaced
        paths["scores"] = bench.out / "scores.json"
    markdown = render_markdown(bench, agg, score_plots)
    paths["report"] = write_atomic(bench.out / "report.md", markdown.encode("utf-8"))
    logger.info("Report written to %s", paths["report"])
    return paths


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark directory, read and checked (:func:`load_benchmark`).

    Attributes:
        out: The directory.
        suite: Its stored suite (None without ``suite.json``).
        expected: The suite's runs (empty without a suite).
        rows: One row per (run, stage).
        duplicates: Exact duplicate rows dropped.
        table: The table file of a table replay, verified; else None.
    """

    out: Path
    suite: Suite | None
    expected: list[RunSpec]
    rows: list[ResultRow]
    duplicates: int
    table: VerifiedTable | None

    @property
    def agent_order(self) -> list[str]:
        """The suite's agent labels, in its order."""
        return [a.display for a in self.suite.agents] if self.suite is not None else []

    @property
    def objective_order(self) -> list[str]:
        """The suite's objective labels, in its order."""
        return [o.label for o in self.suite.objectives] if self.suite is not None else []


@dataclasses.dataclass(frozen=True)
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
    or a shipped table's name), the first that is the recorded table (the same file, or
    a rebuild with the same values: :func:`benchmarks.suites.suite.table_differs`) is
    used; if none is, its scores could silently change, and it is an error. A
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
    found = [identify_table(path) for path in dict.fromkeys(candidates)]
    now = next((f for f in found if table_differs(recorded, f) is None), None)
    if recorded is None:
        now = found[0]
        logger.warning("%s records no table file; scoring against %s (sha256 %s) unchecked.", suite_file, now.path, now.sha256)
    elif now is None:
        raise BenchmarkError(
            f"The table file {found[0].path!r} is not the table this benchmark ran on (recorded in "
            f"{str(suite_file)!r}): {table_differs(recorded, found[0])}. Restore that table file, or rerun "
            "the benchmark on this one."
        )
    path = Path(now.path)
    header = load_table(path).header
    built = header.get("env_config", {}).get("stage_iters", header.get("env_kwargs", {}).get("stage_iters"))
    identity = recorded or now.model_copy(update={"table": str(table)})
    return VerifiedTable(identity, path, header, None if built is None else int(built), recorded is not None)


def load_benchmark(out: str | os.PathLike[str]) -> Benchmark:
    """Read the rows and the stored suite of ``out`` and check them (see :func:`build_report`)."""
    out = Path(out)
    results = out / RESULTS
    # a benchmark killed before its first row has suite.json and no results.jsonl yet
    if not results.is_file() and not (out / SUITE_FILE).is_file():
        raise FileNotFoundError(
            f"{str(results)!r} does not exist: {str(out)!r} is not the output directory "
            "of a benchmark (run `lossagent bench --out DIR` first)."
        )
    numbered = read_numbered_rows(results)
    suite, recorded = read_stored_suite(out) if (out / SUITE_FILE).is_file() else (None, None)
    expected = expand(suite) if suite is not None else []
    if suite is not None:
        _check_rows_of_suite(numbered, expected, results)
    rows, duplicates = distinct_rows(numbered, results)
    table = None
    if suite is not None and suite.env_id == TABULAR_ENV_ID:
        table = verify_table(suite.env_kwargs["table"], recorded, out / SUITE_FILE)
    return Benchmark(out, suite, expected, rows, duplicates, table)


@dataclasses.dataclass(frozen=True)
class Aggregates:
    """What the report shows (:func:`aggregate`).

    Attributes:
        runs: Rows of each complete run, sorted by stage.
        summary: The rows of ``summary.csv`` (:func:`summarize`).
        objectives: Objective labels in report order.
        stems: Plot file stem of each objective (:func:`plot_stems`).
        scores: Scores against the optimum of a table replay with complete runs; else None.
        scores_missing: Why the scores of a table replay could not be computed (one
            sentence in the report instead of them), else None.
    """

    runs: dict[str, list[ResultRow]]
    summary: list[dict[str, Any]]
    objectives: list[str]
    stems: dict[str, str]
    scores: TabularScores | None
    scores_missing: str | None = None


def aggregate(bench: Benchmark) -> Aggregates:
    """Group the complete runs, summarize them and, on a table replay, score them.

    Raises:
        BenchmarkError: Runs of one agent on one objective with different budgets, or
            a run that played a preset its table does not have.
    """
    runs = _runs(bench.rows)
    _check_equal_budgets(runs)
    summary = summarize(bench.rows, bench.agent_order, bench.objective_order)
    objectives = list(dict.fromkeys([*bench.objective_order, *(r["objective"] for r in summary)]))
    scores, missing = None, None
    if bench.table is not None and bench.suite is not None and runs:
        specs = {spec.name: spec for spec in bench.expected}
        try:
            scores = score_runs(runs, specs, table=str(bench.table.path))
        except BenchmarkError:
            raise  # rows that contradict the table: nothing to report on
        except (ValueError, ArithmeticError) as e:  # a section that cannot be computed is left out
            missing = f"The verdicts on the table's test instances could not be computed: {e}"
            logger.warning("%s", missing)
    return Aggregates(runs, summary, objectives, plot_stems(objectives), scores, missing)


def render_markdown(bench: Benchmark, agg: Aggregates, score_plots: Mapping[str, str]) -> str:
    """``report.md``: the fragments of ``benchmarks/reports/templates/report.md`` filled in.

    Args:
        bench: The benchmark.
        agg: Its aggregates.
        score_plots: Title -> relative path of the plots of a table replay's scores.
    """
    title = bench.suite.name if bench.suite is not None else bench.out.name
    blocks = [_T["title"].substitute(title=_md(title))]
    if bench.suite is not None and bench.suite.description:
        blocks.append(_md(bench.suite.description))
    if agg.scores is not None:  # a table replay: the verdicts first
        assert bench.table is not None
        blocks.append(tabular_markdown(agg.scores, bench.table.identity.table, score_plots))
    elif agg.scores_missing is not None:
        blocks.append(_md(agg.scores_missing))
    blocks.append("\n".join([*_header_lines(bench), *_run_lines(bench, agg.runs)]))
    if bench.expected and len(agg.runs) < len(bench.expected):
        blocks.append(_missing_runs(agg.runs, bench.expected, {row["run"] for row in bench.rows}))
    if bench.table is not None:
        blocks.append(_T["run_details"].substitute())
    blocks.append(_T["how_to_read"].substitute(reps=f"{BOOTSTRAP_REPS:,}"))
    for objective in agg.objectives:
        blocks += _objective_blocks(objective, agg, bench.agent_order)
    blocks.append(_T["tensorboard"].substitute(tb=bench.out / "tb"))
    return join_blocks(blocks)


_T: dict[str, Template] = fragments("report.md")
"""The fragments of the report's Markdown."""


def _plots_dir(out: Path) -> Path:
    """``<out>/plots``, created if needed; a link there is refused (it could lead out of ``out``)."""
    plots_dir = out / "plots"
    if plots_dir.is_symlink() or (plots_dir.exists() and not plots_dir.is_dir()):
        raise BenchmarkError(
            f"{str(plots_dir)!r} is a link or a file; the report writes its plots only into a "
            "folder of that name inside --out. Remove it and run the report again."
        )
    plots_dir.mkdir(exist_ok=True)
    return plots_dir


def plot_stems(labels: Iterable[str]) -> dict[str, str]:
    """A distinct, file-system-safe file-name stem for each objective label.

    Every label goes through :func:`benchmarks.suites.suite.safe_name` (so ``../../x`` stays
    inside ``plots/``); one longer than 80 characters is cut and given a hash of the
    whole label, and a stem already taken gets ``-2``, ``-3``, ...
    """
    stems: dict[str, str] = {}
    used: set[str] = set()
    for label in labels:
        base = safe_name(label)
        if len(base) > 80:
            base = f"{base[:64]}-{hashlib.sha256(label.encode('utf-8', 'replace')).hexdigest()[:12]}"
        stem, n = base, 2
        while stem in used:
            stem, n = f"{base}-{n}", n + 1
        used.add(stem)
        stems[label] = stem
    return stems


def _check_rows_of_suite(
    numbered: Sequence[tuple[int, ResultRow]], expected: Sequence[RunSpec], results: Path
) -> None:
    """Every row belongs to a run of the stored suite and agrees with it."""
    specs = {spec.name: spec for spec in expected}
    for number, row in numbered:
        spec = specs.get(row["run"])
        if spec is None:
            raise BenchmarkError(
                f"{results}:{number}: run {row['run']!r} is not a run of the suite in "
                f"{SUITE_FILE} (agents x objectives x seeds); remove its rows."
            )
        fields: dict[Literal["agent", "objective", "seed", "max_stages"], object] = {
            "agent": spec.agent, "objective": spec.objective, "seed": spec.seed, "max_stages": spec.max_stages
        }
        for field, value in fields.items():
            if row[field] != value:
                raise BenchmarkError(
                    f"{results}:{number}: field {field!r} is {row[field]!r}, but run {spec.name!r} of the "
                    f"suite in {SUITE_FILE} has {field} {value!r}."
                )


def _check_equal_budgets(runs: Mapping[str, Sequence[ResultRow]]) -> None:
    """The complete runs of one agent on one objective have the same number of stages."""
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    for name, run_rows in runs.items():
        key = (run_rows[0]["objective"], run_rows[0]["agent"])
        stages = len(run_rows)
        other = seen.setdefault(key, (name, stages))
        if other[1] != stages:
            raise BenchmarkError(
                f"Runs {other[0]!r} ({other[1]} stages) and {name!r} ({stages} stages) of agent "
                f"{key[1]!r} on objective {key[0]!r} have different budgets; a report compares "
                "runs of equal budgets. Remove the rows of one of them."
            )


def _plot_objectives(
    runs: Mapping[str, Sequence[ResultRow]],
    summary: Sequence[Mapping[str, Any]],
    objectives: Sequence[str],
    stems: Mapping[str, str],
    plots_dir: Path,
) -> dict[str, Path]:
    """The two plots of every objective with a summary row."""
    by_objective: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for run_rows in runs.values():
        by_objective[run_rows[0]["objective"]][run_rows[0]["agent"]].append(run_rows)
    paths: dict[str, Path] = {}
    for objective in objectives:
        agents = [r["agent"] for r in summary if r["objective"] == objective]
        if not agents:
            continue
        ordered = {a: sorted(by_objective[objective][a], key=lambda r: int(r[0]["seed"])) for a in agents}
        stem = stems[objective]
        paths[f"{objective}__objective"] = plot_objective(ordered, objective, plots_dir / f"{stem}__objective.png")
        paths[f"{objective}__weights"] = plot_weights(ordered, objective, plots_dir / f"{stem}__weights.png")
    return paths


def _header_lines(bench: Benchmark) -> list[str]:
    """Environment, budget and seeds (nothing without a suite)."""
    suite, table = bench.suite, bench.table
    if suite is None:
        return []
    if table is not None:
        header = table.header
        lines = [
            _T["table_environment"].substitute(
                env_id=suite.env_id, table=_md(table.identity.table), path=_md(table.identity.path),
                sha256=table.identity.sha256[:16], built_id=header.get("env_id"),
                built_kwargs=json.dumps(header.get("env_kwargs", {}), sort_keys=True),
                max_stages=suite.max_stages,
                stage_iters=table.stage_iters if table.stage_iters is not None else "unknown",
            )
        ]
        if not table.recorded:
            lines.append(_T["unrecorded_table"].substitute(suite_file=SUITE_FILE))
    else:
        lines = [
            _T["environment"].substitute(
                env_id=suite.env_id, env_kwargs=json.dumps(suite.env_kwargs, sort_keys=True),
                max_stages=suite.max_stages, stage_iters=suite.stage_iters,
            )
        ]
    lines.append(_T["seeds"].substitute(seeds=suite.seeds))
    names = {a.name for a in suite.agents}
    lines += [_T["budget_note"].substitute(note=note) for name, note in _EXTRA_TRAINING.items() if name in names]
    return lines


def _run_lines(bench: Benchmark, runs: Mapping[str, Sequence[ResultRow]]) -> list[str]:
    """How many runs are complete, the LLM's time, and the duplicates dropped."""
    started = {row["run"] for row in bench.rows}
    incomplete = sorted(started - set(runs))
    if not bench.expected:  # no suite.json: the runs to expect are unknown
        lines = [
            _T["runs_unknown_incomplete" if incomplete else "runs_unknown"].substitute(
                complete=len(runs), incomplete=len(incomplete), runs=", ".join(_md(r) for r in incomplete)
            )
        ]
    elif len(runs) < len(bench.expected):
        not_started = [spec for spec in bench.expected if spec.name not in started]
        lines = [
            _T["runs_some"].substitute(
                complete=len(runs), expected=len(bench.expected), unfinished=len(incomplete),
                not_started=len(not_started), out=bench.out,
            )
        ]
    else:
        lines = [_T["runs_all"].substitute(complete=len(runs), expected=len(bench.expected))]
    figures = llm_time(bench.rows)
    if figures is not None:
        lines.append(_T["llm_time"].substitute(line=llm_time_line(figures)))
    lines += [_T["model_warning"].substitute(line=_md(line)) for line in model_warnings(bench.rows)]
    if bench.duplicates:
        lines.append(_T["duplicates"].substitute(count=bench.duplicates, results=RESULTS))
    return lines


def _missing_runs(runs: Mapping[str, Sequence[ResultRow]], expected: Sequence[RunSpec], started: set[str]) -> str:
    """The "Missing runs" table: per agent, its complete runs and the missing ones."""
    by_agent: dict[str, list[RunSpec]] = defaultdict(list)
    for spec in expected:
        by_agent[spec.agent].append(spec)
    rows = []
    for agent, specs in by_agent.items():
        done = sum(spec.name in runs for spec in specs)
        missing: dict[str, list[str]] = defaultdict(list)
        for spec in specs:
            if spec.name not in runs:
                missing[spec.objective].append(f"{spec.seed}{'*' if spec.name in started else ''}")
        count = f"{done} of {len(specs)}" + (" (no complete run)" if done == 0 else "")
        shown = "; ".join(f"{_md(o)}: {', '.join(seeds)}" for o, seeds in missing.items()) or "-"
        rows.append(_T["missing_row"].substitute(agent=_md(agent), count=count, missing=shown))
    return _T["missing_runs"].substitute(rows="\n".join(rows))


def _objective_blocks(objective: str, agg: Aggregates, agent_order: Sequence[str]) -> list[str]:
    """The section of one objective: a row per agent (the suite's agents without a
    complete, measured run shown as such) and the two plots."""
    summary = {row["agent"]: row for row in agg.summary if row["objective"] == objective}
    complete = Counter(r[0]["agent"] for r in agg.runs.values() if r[0]["objective"] == objective)
    rows = []
    for agent in dict.fromkeys([*agent_order, *summary]):
        row = summary.get(agent)
        if row is None:
            why = "no measured stage" if complete[agent] else "no complete run"
            rows.append(_T["objective_row_empty"].substitute(agent=_md(agent), seeds=complete[agent], why=why))
            continue
        prompt, completion = row["prompt_tokens_mean"], row["completion_tokens_mean"]
        rows.append(
            _T["objective_row"].substitute(
                agent=_md(agent), seeds=row["seeds"],
                final_mean=_fmt(row["final_mean"]), final_low=_fmt(row["final_ci_low"]),
                final_high=_fmt(row["final_ci_high"]), best_mean=_fmt(row["best_mean"]),
                final_note=(f" ({row['final_unmeasured']} of {row['seeds']} runs unmeasured at the last stage)"
                            if row.get("final_unmeasured") else ""),
                best_low=_fmt(row["best_ci_low"]), best_high=_fmt(row["best_ci_high"]),
                auc=_fmt(row["auc_mean"]), wall_s=f"{row['wall_s_mean']:.1f}",
                tokens=f"{prompt + completion:.0f}", prompt=f"{prompt:.0f}", completion=f"{completion:.0f}",
                retries=row["retries"], fallbacks=row["fallbacks"], diverged=row["diverged"],
            )
        )
    blocks = [_T["objective"].substitute(objective=_md(objective), rows="\n".join(rows))]
    if summary:
        blocks.append(_T["objective_plots"].substitute(stem=agg.stems[objective]))
    return blocks
