"""The benchmark report, rebuilt from ``results.jsonl`` alone.

``build_report(out)`` writes:

- ``summary.csv``: one row per (objective, agent) over the complete runs;
- ``plots/<objective>__objective.png``: objective per stage per agent (mean over seeds,
  95% bootstrap band);
- ``plots/<objective>__weights.png``: each agent's effective loss weights over the
  stages as a stacked area (mean over seeds), one panel per agent;
- ``report.md``: per objective, a table of agents and the two plots.

Columns of ``summary.csv`` (the objective ``J`` is higher-is-better: lower-is-better
metrics enter it negated):

=======================  ==============================================================
``objective``            objective label
``agent``                agent label
``seeds``                number of complete runs (seeds)
``final_mean``           ``J`` after the last stage, mean over seeds
``final_ci_low/high``    95% bootstrap interval of that mean (10,000 resamples, fixed rng)
``best_mean``            best ``J`` seen in the run (best-so-far at the end), mean
``best_ci_low/high``     its 95% bootstrap interval
``auc_mean``             area under the ``J``-per-stage curve divided by the number of
                         stages (= mean ``J`` over stages 1..T), mean over seeds
``diverged``             diverged stages, total over seeds
``wall_s_mean``          wall time of a run (sum over its stages), mean over seeds
``prompt_tokens_mean``   LLM prompt tokens per run, mean (0 for agents without a model)
``completion_tokens_mean``  LLM completion tokens per run, mean
``retries``              LLM retries, total over seeds
``fallbacks``            LLM fallbacks to the previous weights, total over seeds
=======================  ==============================================================

Every column except ``wall_s_mean`` is a deterministic function of the rows.

Example:
    >>> from benchmarks.report import build_report
    >>> paths = build_report("runs/smoke-20250101-120000")
    >>> paths["report"]
    PosixPath('runs/smoke-20250101-120000/report.md')
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import RESULTS, SUITE_FILE, complete_runs, read_json, read_rows, write_json
from benchmarks.suite import TABULAR_ENV_ID
from benchmarks.tabular_report import plot_scores, score_tabular, tabular_markdown

__all__ = [
    "SUMMARY_COLUMNS",
    "TIMING_COLUMNS",
    "bootstrap_ci",
    "build_report",
    "read_summary",
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
)
"""Columns of ``summary.csv``, in order. ``unmeasured`` counts stages whose objective
could not be measured (``objective_value`` NaN, e.g. a judge that kept failing): such a
stage counts with the last measured value before it, and a run with no measured stage
is left out of the means."""

TIMING_COLUMNS = ("wall_s_mean",)
"""Columns that depend on wall-clock time (everything else is reproducible)."""

N_BOOTSTRAP = 10_000

# Agents that train the network beyond the episode's stages: said in the report so
# that "equal budget" is read correctly.
_EXTRA_TRAINING = {
    "ppo": "`ppo` first trains its policy on the env for `train_steps` extra stages "
    "(outside the episode; its wall time includes them).",
    "pbt": "`pbt` trains `population` members at every stage of its episode "
    "(population x stages in all; its wall time includes them).",
}


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean.

    Args:
        values: One value per seed.
        confidence: Coverage of the interval, in (0, 1).
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling rng (fixed, so reports are reproducible).

    Returns:
        ``(low, high)``; both equal the value when there is only one.

    Raises:
        ValueError: ``values`` is empty or ``confidence`` is outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value, got none.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} is not allowed. Allowed: 0 < confidence < 1")
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


# --------------------------------------------------------------------------- summary


def _runs(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows of complete runs, grouped by run and sorted by stage."""
    rows = list(rows)
    done = complete_runs(rows)
    runs: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["run"] in done:
            runs[row["run"]].append(row)
    for stages in runs.values():
        stages.sort(key=lambda r: int(r["stage"]))
    return dict(runs)


def _note_total(stages: Iterable[Mapping[str, Any]], key: str) -> float:
    total = 0.0
    for row in stages:
        value = (row.get("notes") or {}).get(key)
        if isinstance(value, bool):
            total += int(value)
        elif isinstance(value, (int, float)):
            total += value
    return total


def summarize(
    rows: Iterable[Mapping[str, Any]],
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
    groups: dict[tuple[str, str], list[list[Mapping[str, Any]]]] = defaultdict(list)
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
        final = [float(c[-1]) for c in curves]
        best = [float(np.max(c)) for c in curves]
        auc = [float(np.mean(c)) for c in curves]
        final_ci = bootstrap_ci(final)
        best_ci = bootstrap_ci(best)
        out.append(
            {
                "objective": objective,
                "agent": agent,
                "seeds": len(runs),
                "final_mean": float(np.mean(final)),
                "final_ci_low": final_ci[0],
                "final_ci_high": final_ci[1],
                "best_mean": float(np.mean(best)),
                "best_ci_low": best_ci[0],
                "best_ci_high": best_ci[1],
                "auc_mean": float(np.mean(auc)),
                "diverged": int(sum(bool(r.get("diverged")) for run in runs for r in run)),
                "wall_s_mean": float(np.mean([float(run[-1]["wall_s"]) for run in runs])),
                "prompt_tokens_mean": float(np.mean([_note_total(run, "prompt_tokens") for run in runs])),
                "completion_tokens_mean": float(
                    np.mean([_note_total(run, "completion_tokens") for run in runs])
                ),
                "retries": int(sum(_note_total(run, "retries") for run in runs)),
                "fallbacks": int(sum(_note_total(run, "fallback") for run in runs)),
                "unmeasured": unmeasured,
            }
        )
    return out


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
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for row in summary:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return path


def read_summary(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``summary.csv`` back (numbers as int/float)."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                if key in ("objective", "agent"):
                    parsed[key] = value
                elif key in ("seeds", "diverged", "retries", "fallbacks", "unmeasured"):
                    parsed[key] = int(value)
                else:
                    parsed[key] = float(value)
            out.append(parsed)
    return out


# --------------------------------------------------------------------------- plots


def _stage_curves(runs: Sequence[Sequence[Mapping[str, Any]]]) -> tuple[np.ndarray, np.ndarray]:
    """(stages, values[seed, stage]) of the objective."""
    stages = np.array([int(r["stage"]) for r in runs[0]])
    values = np.array([[float(r["objective_value"]) for r in run] for run in runs])
    return stages, values


def plot_objective(
    runs_by_agent: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    objective: str,
    path: str | os.PathLike[str],
) -> Path:
    """Objective per stage per agent: mean over seeds with a 95% bootstrap band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for agent, runs in runs_by_agent.items():
        stages, values = _stage_curves(runs)
        measured = np.isfinite(values)
        keep = measured.any(axis=0)  # stages no seed could measure are not drawn
        stages, values, measured = stages[keep], values[:, keep], measured[:, keep]
        if not stages.size:
            continue
        mean = np.array([values[measured[:, j], j].mean() for j in range(values.shape[1])])
        bands = np.array([bootstrap_ci(values[measured[:, j], j]) for j in range(values.shape[1])])
        (line,) = ax.plot(stages, mean, marker="o", markersize=3, label=agent)
        ax.fill_between(stages, bands[:, 0], bands[:, 1], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("stage")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"objective J ({objective}, higher is better)")
    ax.set_title(f"Objective per stage: {objective} (mean, 95% bootstrap interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_weights(
    runs_by_agent: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
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
        for name in runs[0][0]["loss_names"]:
            if name not in loss_names:
                loss_names.append(name)
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)
    for ax, agent in zip(axes.flat, agents, strict=False):
        runs = runs_by_agent[agent]
        stages = np.array([int(r["stage"]) for r in runs[0]])
        # (seed, stage, loss) in the order of loss_names; a loss a run lacks counts 0
        actions = np.array(
            [
                [
                    [dict(zip(row["loss_names"], row["action"], strict=True)).get(n, 0.0) for n in loss_names]
                    for row in run
                ]
                for run in runs
            ],
            dtype=np.float64,
        )
        ax.stackplot(stages, actions.mean(axis=0).T, labels=loss_names, alpha=0.85)
        ax.set_title(agent, fontsize="medium")
        ax.set_xlabel("stage")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(agents) :]:
        ax.set_visible(False)
    for row_axes in axes:
        row_axes[0].set_ylabel("weight (action units)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize="small")
    fig.suptitle(
        f"Loss weights per stage: {objective} (mean over seeds; effective weight = weight x scale)",
        y=0.0,
        va="bottom",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1 - 0.35 / fig.get_figheight()))
    path = Path(path)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def build_report(out: str | os.PathLike[str]) -> dict[str, Path]:
    """Rebuild ``summary.csv``, ``report.md`` and the plots of a benchmark directory.

    Args:
        out: A directory holding ``results.jsonl`` (and ``suite.json`` if written by
            the runner; it gives the agent and objective order and the description).

    Returns:
        ``{"summary": path, "report": path, "<objective>__objective": png, ...}``.

    Raises:
        FileNotFoundError: ``out`` has no ``results.jsonl``.
    """
    out = Path(out)
    results = out / RESULTS
    if not results.is_file():
        raise FileNotFoundError(
            f"{str(results)!r} does not exist: {str(out)!r} is not the output directory "
            "of a benchmark (run `lossagent bench --out DIR` first)."
        )
    rows = read_rows(results)
    suite = read_json(out / SUITE_FILE, "The stored suite") if (out / SUITE_FILE).is_file() else {}
    agent_order = [a.get("label") or a["name"] for a in suite.get("agents", [])]
    from benchmarks.suite import objective_label

    objective_order = [objective_label(o) for o in suite.get("objectives", [])]
    summary = summarize(rows, agent_order, objective_order)
    paths = {"summary": write_summary_csv(summary, out / "summary.csv")}

    runs = _runs(rows)
    by_objective: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for run_rows in runs.values():
        by_objective[run_rows[0]["objective"]][run_rows[0]["agent"]].append(run_rows)
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    objectives = list(dict.fromkeys(r["objective"] for r in summary))
    for objective in objectives:
        agents = [r["agent"] for r in summary if r["objective"] == objective]
        ordered = {a: sorted(by_objective[objective][a], key=lambda r: int(r[0]["seed"])) for a in agents}
        paths[f"{objective}__objective"] = plot_objective(
            ordered, objective, plots_dir / f"{objective}__objective.png"
        )
        paths[f"{objective}__weights"] = plot_weights(
            ordered, objective, plots_dir / f"{objective}__weights.png"
        )

    all_runs = {row["run"] for row in rows}
    incomplete = sorted(all_runs - set(runs))
    lines = [f"# Benchmark report: {suite.get('name', out.name)}", ""]
    if suite.get("description"):
        lines += [suite["description"], ""]
    if suite:
        budget = suite["budget"]
        env_kwargs = json.dumps(suite["env"]["kwargs"], sort_keys=True)
        lines += [
            f"- Environment: `{suite['env']['id']}` with `{env_kwargs}`",
            f"- Budget (equal for every agent): {budget['max_stages']} stages x "
            f"{budget['stage_iters']} iterations",
            f"- Seeds: {suite.get('seeds')}",
        ]
    names = {a["name"] for a in suite.get("agents", [])}
    for name, note in _EXTRA_TRAINING.items():
        if name in names:
            lines.append(f"- Budget note: {note}")
    lines += [
        f"- Complete runs: {len(runs)}; incomplete: {len(incomplete)}"
        + (f" ({', '.join(incomplete)}; rerun with `--resume`)" if incomplete else ""),
        "",
        "Objective J is higher-is-better (lower-is-better metrics enter it negated). "
        "Final and best-so-far: mean over seeds [95% bootstrap interval]; AUC: mean J over "
        "the stages; wall time and LLM tokens: mean per run; retries, fallbacks and "
        "diverged stages: totals.",
        "",
    ]
    for objective in objectives:
        lines += [
            f"## Objective: {objective}",
            "",
            "| agent | seeds | final J | best-so-far J | AUC | wall time (s) "
            "| LLM tokens (prompt + completion) | retries | fallbacks | diverged |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in summary:
            if row["objective"] != objective:
                continue
            prompt, completion = row["prompt_tokens_mean"], row["completion_tokens_mean"]
            final = f"{_fmt(row['final_mean'])} [{_fmt(row['final_ci_low'])}, {_fmt(row['final_ci_high'])}]"
            best = f"{_fmt(row['best_mean'])} [{_fmt(row['best_ci_low'])}, {_fmt(row['best_ci_high'])}]"
            lines.append(
                f"| {row['agent']} | {row['seeds']} | {final} | {best} | {_fmt(row['auc_mean'])} "
                f"| {row['wall_s_mean']:.1f} | {prompt + completion:.0f} ({prompt:.0f} + {completion:.0f}) "
                f"| {row['retries']} | {row['fallbacks']} | {row['diverged']} |"
            )
        lines += [
            "",
            f"![objective per stage](plots/{objective}__objective.png)",
            "",
            f"![loss weights per stage](plots/{objective}__weights.png)",
            "",
        ]
    if suite.get("env", {}).get("id") == TABULAR_ENV_ID and runs:
        scores = score_tabular(runs, suite)
        plots = plot_scores(scores, plots_dir)
        paths.update({f"tabular__{k}": v for k, v in plots.items()})
        lines += tabular_markdown(scores, {k: f"plots/{v.name}" for k, v in plots.items()})
        write_json(out / "scores.json", _scores_json(scores))
        paths["scores"] = out / "scores.json"
    lines += [f"TensorBoard: `tensorboard --logdir {out / 'tb'}`", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    paths["report"] = report
    logger.info("Report written to %s", report)
    return paths


def _scores_json(scores: Any) -> dict[str, Any]:
    """The tabular scores as JSON (``scores.json``)."""
    return {
        "reference": scores.reference,
        "iqm": {a: list(v) for a, v in scores.iqm.items()},
        "iqm_by_objective": {o: {a: list(v) for a, v in per.items()} for o, per in scores.iqm_by_objective.items()},
        "probability_of_improvement": {f"{x} > {y}": list(v) for (x, y), v in scores.improvement.items()},
        "cells": scores.cells,
        "runs": scores.runs,
    }
