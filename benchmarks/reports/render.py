"""Rendering of the reports: Markdown text and plots, no statistics.

The helpers of every report (:func:`markdown_text`, :func:`plain_text`,
:func:`save_figure`), and a table replay's section (:func:`tabular_markdown`),
``scores.json`` (:func:`scores_json`) and plots (:func:`plot_ranking`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.execution.results import write_atomic
from benchmarks.reports.scores import REFERENCES, TRACKS, TabularScores
from benchmarks.reports.stats import ALPHA, Estimate

__all__ = ["markdown_text", "plain_text", "plot_ranking", "save_figure", "scores_json", "tabular_markdown"]


def markdown_text(text: Any) -> str:
    """``text`` for one Markdown table cell or line: ``|`` escaped, no line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def plain_text(text: Any) -> str:
    """``text`` shown as written by Matplotlib (a ``$`` would start math mode)."""
    return str(text).replace("$", r"\$")


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a Matplotlib figure as PNG atomically (:func:`benchmarks.execution.results.write_atomic`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_atomic(path, buffer.getvalue())


_md = markdown_text

_WORDS = {"above": "**above**", "below": "**below**"}  # the other verdicts are shown as they are


def _played_clause(played: list[int], replicates: list[int]) -> str:
    """What the header adds where the agents played fewer replicates than the table has."""
    if not played or played == replicates:
        return ""
    count = str(played[0]) if len(played) == 1 else f"{played[0]} to {played[-1]}"
    return f"; the agents played {count} of them"


def _gain(estimate: Estimate | None, word: str | None) -> str:
    """``-0.986 ±0.048 **below**``: mean, half-width of the 95% interval, verdict."""
    if estimate is None or not math.isfinite(estimate.mean):
        return "-"
    if word == "identical":
        return "0 identical"
    width = f" ±{estimate.half_width:.2g}" if math.isfinite(estimate.half_width) else ""
    return f"{estimate.mean:+.3g}{width} {_WORDS.get(word or '', word or '')}"


def _interval(mean: float, low: float, high: float) -> str:
    if not math.isfinite(mean):
        return "-"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _estimate(e: Estimate | None) -> str:
    """``0.50 ±0.013 (p 0.0001)``."""
    if e is None or not math.isfinite(e.mean):
        return "-"
    if not math.isfinite(e.half_width):
        return f"{e.mean:+.3g} (one replicate)"
    return f"{e.mean:+.3g} ±{e.half_width:.2g} (p {e.p:.2g})"


def tabular_markdown(scores: TabularScores, table: str, plots: Mapping[str, str]) -> str:
    """The report's section on a table replay, one Markdown block: its first lines answer,
    per test instance and overall, which agent is above or below each reference beyond
    noise, with the ranking; then what the table says (spread, noise, the values of
    selection and of scheduling), the admission of the objectives, the training budgets
    and the agents whose plays were identical.

    Args:
        scores: The scores.
        table: How the report names the table.
        plots: Title -> relative path of the plots.
    """
    instances = list(dict.fromkeys(c.instance for c in scores.cells.values()))
    replicates = sorted(set(scores.replicates.values()))
    played = sorted({len(a.j) for a in scores.agents.values()})
    lines = [
        "## Verdicts on the test instances",
        "",
        f"Table `{_md(table)}`, test instances {', '.join(f'`{_md(i)}`' for i in instances)} "
        f"({' or '.join(map(str, replicates))} replicates each{_played_clause(played, replicates)}). Every number below is "
        "on the test split (crops no agent saw), per (objective, test instance) and paired by replicate: the "
        "same training randomness under the agent's choices and under the reference's."
        + (" A verdict needs two replicates of an instance: where an agent played one, its gains say *no test* "
           "(give the suite at least two seeds per test instance)." if played and played[0] < 2 else ""),
        "",
        f"- Gains: agent - reference in the metric's units (higher is better), mean over replicates ± half "
        f"the 95% interval, Student's t on replicates - 1 degrees of freedom; **above** or **below** when "
        f"beyond noise (p < {ALPHA:g}, Holm-adjusted across the test instances); *overall*: the mean of the "
        "per-instance means, t on Welch-Satterthwaite degrees of freedom (no sd is pooled across instances).",
        f"- References: the first preset `{_md(scores.first)}` held for every stage; the *transferred static*, the "
        "preset best held on the training instances (what tuning elsewhere gives); the *best static in "
        "hindsight*, the preset best held on this instance (no agent knows it before its episode).",
        "- Score: (J - E[J_random]) / (J_oracle - E[J_random]), 1 = the oracle's sequence (chosen on "
        "validation), 0 = a uniformly random schedule (its expectation, exact over all sequences). Ranking: the "
        "mean score over the admitted cells [95% stratified-bootstrap interval, replicates resampled within "
        "each cell, rliable].",
        "",
    ]
    for track in scores.objectives:
        lines += _track(scores, track)
    lines += _budgets(scores)
    lines += _identical(scores)
    for title, path in plots.items():
        lines += [f"![{title}]({path})", ""]
    return "\n".join(lines).strip("\n")


def _track(scores: TabularScores, track: str) -> list[str]:
    objectives = scores.objectives[track]
    if track == "new":
        title = (f"### Track: new objective (agents with a training budget tuned under `{_md(scores.tune_on)}` on the "
                 "training instances, never under the objective they are scored on)")
    else:
        title = "### Track: tuned objective (agents tune under the objective they are scored on)"
    lines = [title, ""]
    admitted = [o for o in objectives if scores.admission[(track, o)].admitted]
    cells = [c for c in scores.cells.values() if c.track == track and c.objective in admitted]
    ranking = scores.ranking.get(track, [])
    if ranking:
        iqm = scores.iqm.get(track, {})
        header = ["rank", "agent", "score"] + [f"{_md(c.objective)}: {_md(c.instance)}" for c in cells] + ["IQM"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for agent, mean, low, high in ranking:
            rank = 1 + sum(other > mean for _, other, _, _ in ranking)  # equal scores share a rank
            per = []
            for cell in cells:
                entry = scores.agents.get((*cell.key, agent))
                per.append("-" if entry is None or entry.score is None else f"{entry.score.mean:.3f}")
            lines.append(
                f"| {rank} | {_md(agent)} | {_interval(mean, low, high)} | " + " | ".join(per)
                + f" | {_interval(*iqm[agent]) if agent in iqm else '-'} |"
            )
        lines += ["", "IQM: rliable's interquartile mean of the per-replicate scores [95% stratified bootstrap "
                  "interval], secondary; the ranking is the mean, which keeps an agent that is below another on "
                  "every cell below it.", ""]
    else:
        lines += ["No ranking: no objective of this track is admitted (see the admission table below).", ""]
    for objective in objectives:
        lines += _gains_table(scores, track, objective)
    lines += _findings(scores, track)
    lines += _improvement(scores.improvement.get(track, {}), [a for a, *_ in ranking])
    return lines


def _improvement(improvement: Mapping[tuple[str, str], float], agents: list[str]) -> list[str]:
    """rliable's probability of improvement, P(row > column), the point estimate."""
    if not improvement:
        return []
    lines = ["Probability of improvement, P(row > column), on the ranked cells' per-replicate scores (rliable; "
             "the point estimate, secondary):", "",
             "| | " + " | ".join(map(_md, agents)) + " |", "|---|" + "---|" * len(agents)]
    for x in agents:
        cells = [f"{improvement[(x, y)]:.2f}" if (x, y) in improvement else "-" for y in agents]
        lines.append(f"| {_md(x)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _gains_table(scores: TabularScores, track: str, objective: str) -> list[str]:
    instances = scores.instances(track, objective)
    cells = [scores.cells[(track, objective, i)] for i in instances]
    admission = scores.admission[(track, objective)]
    note = "" if admission.admitted else f" (not admitted: {admission.reason}; shown, not ranked)"
    lines = [f"#### {_md(objective)}{note}", ""]
    names = {
        "first": f"`{_md(scores.first)}`",
        "transferred": "transferred " + "/".join(sorted({f"`{_md(c.presets['transferred'])}`" for c in cells if c.presets["transferred"]})),
        "hindsight": "best static in hindsight",
    }
    refs = [r for r in REFERENCES if any(r in c.values for c in cells)]
    header = ["agent"] + [f"vs {names[r]}: {_md(i)}" for r in refs for i in [*instances, "overall"]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for agent in scores.agent_order(track):
        row = [_md(agent)]
        for ref in refs:
            for instance in instances:
                entry = scores.agents.get((track, objective, instance, agent))
                row.append("-" if entry is None else _gain(entry.gains.get(ref), entry.verdicts.get(ref)))
            overall = scores.overall.get((track, objective, agent, ref))
            row.append("-" if overall is None else _gain(*overall))
        lines.append("| " + " | ".join(row) + " |")
    hindsight = ", ".join(f"{_md(c.instance)} `{_md(c.presets['hindsight'])}`" for c in cells)
    lines += ["", f"Best static in hindsight: {hindsight}.", ""]
    return lines


def _findings(scores: TabularScores, track: str) -> list[str]:
    lines = [
        "What the table says (test split, per instance; values of selection and of scheduling are "
        "findings, not gates):",
        "",
        "| objective | instance | spread over sequences | replicate sd | best static - random | "
        "best static - transferred | oracle - best static | oracle | val/test rank agreement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in scores.cells.values():
        if cell.track != track:
            continue
        lines.append(
            f"| {_md(cell.objective)} | {_md(cell.instance)} | {cell.spread:.3g} | {cell.noise:.2g} | "
            f"{_estimate(cell.selection)} | {_estimate(cell.selection_vs_transferred)} | {_estimate(cell.scheduling)} | "
            f"{' > '.join(map(_md, cell.presets['oracle']))} | {cell.rank_agreement:.2f} |"
        )
    lines += [
        "",
        "| objective | val/test rank agreement (mean over the table's instances) | choice of preset beyond noise | admitted |",
        "|---|---|---|---|",
    ]
    for (t, objective), a in scores.admission.items():
        if t == track:
            lines.append(
                f"| {_md(objective)} | {a.rank_agreement:.2f} | on {a.beyond_noise} of {a.instances} test instances | "
                f"{'yes' if a.admitted else 'no: ' + _md(a.reason)} |"
            )
    return [*lines, ""]


def _budgets(scores: TabularScores) -> list[str]:
    lines = [
        "### Training budgets",
        "",
        "Every agent plays the same episodes (the same stages per episode); before them, agents with a "
        "training budget tune on the table's training instances only, as recorded in their rows:",
        "",
        "| agent | training budget |",
        "|---|---|",
    ]
    for agent, budget in scores.budgets.items():
        lines.append(f"| {_md(agent)} | {_md(_budget_text(budget))} |")
    return [*lines, ""]


def _budget_text(budget: Mapping[str, Any] | None) -> str:
    if not budget:
        return "none (zero-shot, or learns within the episode only)"
    return ", ".join(
        f"{k.replace('_', ' ')} {', '.join(map(str, v)) if isinstance(v, list) else f'{v:,}' if isinstance(v, int) else v}"
        for k, v in budget.items()
    )


def _identical(scores: TabularScores) -> list[str]:
    """Agents whose plays were the same on every run (and what they played)."""
    groups: dict[str, list[str]] = {}
    for agent, plays in scores.plays.items():
        key = repr(sorted(plays.items()))
        groups.setdefault(key, []).append(agent)
    lines = []
    for agents in groups.values():
        plays = scores.plays[agents[0]]
        sequences = {tuple(p) for p in plays.values()}
        what = (f"`{' > '.join(next(iter(sequences)))}` on every run" if len(sequences) == 1
                else f"{len(sequences)} different sequences")
        if len(agents) > 1:
            lines.append(f"- {', '.join(f'`{_md(a)}`' for a in agents)} played identically: {_md(what)}.")
        elif len(sequences) == 1:
            lines.append(f"- `{_md(agents[0])}` played {_md(what)}.")
    if not lines:
        return []
    return ["### Identical plays", "", *lines, ""]


def plot_ranking(scores: TabularScores, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The ranking of each track: mean primary score per agent with its interval."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths: dict[str, Path] = {}
    for track, ranking in scores.ranking.items():
        if not ranking:
            continue
        order = ranking[::-1]
        fig = Figure(figsize=(6.4, 0.45 * len(order) + 1.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        means = np.array([m for _, m, _, _ in order])
        errors = np.array([[m - lo if math.isfinite(lo) else 0.0, hi - m if math.isfinite(hi) else 0.0]
                           for _, m, lo, hi in order]).T
        ax.barh([plain_text(a) for a, *_ in order], means, xerr=errors, color="tab:blue", alpha=0.7, capsize=3)
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="oracle")
        ax.axvline(0.0, color="gray", linestyle=":", linewidth=1, label="random schedule")
        ax.set_xlabel("mean score (test split), 95% stratified bootstrap")
        ax.set_title(f"Track: {TRACKS.get(track, track)}")
        ax.legend(fontsize="small", loc="lower right")
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        title = f"ranking, {TRACKS.get(track, track)}"
        paths[title] = save_figure(fig, Path(out_dir) / f"tabular__ranking_{track}.png")
        profile = scores.profiles.get(track)
        if profile:
            fig = Figure(figsize=(6.4, 4.0), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            for agent, *_ in ranking:
                if agent in profile:
                    ax.plot(profile["tau"], profile[agent], label=plain_text(agent))
            ax.set_xlabel("score tau (test split)")
            ax.set_ylabel("fraction of replicates with score > tau")
            ax.set_title(f"Performance profiles (rliable), track: {TRACKS.get(track, track)}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            fig.tight_layout()
            title = f"performance profiles, {TRACKS.get(track, track)}"
            paths[title] = save_figure(fig, Path(out_dir) / f"tabular__profiles_{track}.png")
    return paths


def scores_json(scores: TabularScores) -> dict[str, Any]:
    """The tabular scores as plain data (``scores.json``)."""

    def est(e: Estimate | None) -> dict[str, Any] | None:
        return None if e is None else {k: getattr(e, k) for k in ("mean", "se", "df", "n", "low", "high", "p", "identical")}

    return {
        "first": scores.first,
        "tune_on": scores.tune_on,
        "objectives": scores.objectives,
        "ranking": {t: [{"agent": a, "mean": m, "low": lo, "high": hi} for a, m, lo, hi in r]
                    for t, r in scores.ranking.items()},
        "admission": [{"track": t, "objective": o, **vars(a)} for (t, o), a in scores.admission.items()],
        "cells": [
            {"track": c.track, "objective": c.objective, "instance": c.instance, "seeds": list(c.seeds),
             "presets": c.presets, "values": {k: v.tolist() for k, v in c.values.items()},
             "spread": c.spread, "noise": c.noise, "rank_agreement": c.rank_agreement,
             "selection": est(c.selection), "selection_vs_transferred": est(c.selection_vs_transferred),
             "scheduling": est(c.scheduling), "selection_p_holm": c.selection_p}
            for c in scores.cells.values()
        ],
        "agents": [
            {"track": k[0], "objective": k[1], "instance": k[2], "agent": k[3], "runs": e.runs,
             "J": {str(s): v for s, v in e.j.items()}, "score": est(e.score),
             "gains": {r: {**(est(g) or {}), "p_holm": e.p.get(r), "verdict": e.verdicts.get(r)} for r, g in e.gains.items()}}
            for k, e in scores.agents.items()
        ],
        "overall": [
            {"track": k[0], "objective": k[1], "agent": k[2], "reference": k[3], **(est(e) or {}), "verdict": v}
            for k, (e, v) in scores.overall.items()
        ],
        "iqm": {t: {a: list(v) for a, v in per.items()} for t, per in scores.iqm.items()},
        "probability_of_improvement": {
            t: {f"{x} > {y}": v for (x, y), v in per.items()} for t, per in scores.improvement.items()
        },
        "profiles": scores.profiles,
        "budgets": scores.budgets,
        "plays": {a: {f"{t}/{o}/{s}": p for (t, o, s), p in plays.items()} for a, plays in scores.plays.items()},
    }
