"""Screen for a table: preset sequences trained live per instance and replicate, every crop kept.

    python -m measure.screen --suite FILE --out screen.json [--workers 2] [--switching]
    python -m measure.screen --summary screen.json [--train a,b --test c,d] [--stages 4]

Before a table of problem instances is built (hours), this trains the cheap part of it
for real, on the suite's ``[table]`` (its instances, replicates, presets and stages):
every **static** sequence (one preset held for every stage: ``1 + K x T`` stages per
replicate, the static sequences of the table's trees) and, with ``--switching``, every
**half switch** (the first half of the stages with one preset, the second half with
another, for every ordered pair). After every stage it stores each panel metric of
**each crop** of the validation and test splits, so that a summary can ask what fewer
crops, fewer stages or fewer presets would give without training again.

``--summary`` prints, per instance and panel metric after the last stage (test split):
each preset's mean over replicates, the best static preset, the spread of the presets
and the best one's lead over the second (a paired t on replicates - 1 degrees of
freedom), the val/test rank agreement of the static sequences at every depth, the
preset best on the ``--train`` instances (the *transferred static*) and how far each
``--test`` instance's best is above it; and, for a screen with ``--switching``, the
best half switch against the best static preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.suites.table import load_table_spec
from lossagent_env.env import LossAgentEnv
from lossagent_env.metrics import create_metric, metric_info
from lossagent_env.tabular.build import TableSpec, make_build_env


def sequences(presets: Sequence[str], stages: int, switching: bool = False) -> dict[str, tuple[int, ...]]:
    """Static sequences (``"a x4"``), then, with ``switching``, first-half/second-half
    switches of every ordered pair (``"a x2 > b x2"``)."""
    out = {f"{name} x{stages}": (i,) * stages for i, name in enumerate(presets)}
    if switching:
        half = stages // 2
        for (i, a), (j, b) in itertools.permutations(enumerate(presets), 2):
            out[f"{a} x{half} > {b} x{stages - half}"] = (i,) * half + (j,) * (stages - half)
    return out


def screen_unit(spec: TableSpec, seed: int, switching: bool = False) -> dict[str, Any]:
    """Every sequence of the tree of ``seed``: per sequence, per stage, per split,
    ``{metric: [value per crop]}``, with the stage's training and evaluation seconds."""
    torch.set_num_threads(spec.threads)
    env = make_build_env(spec, seed)
    live = env.unwrapped
    assert isinstance(live, LossAgentEnv)  # what make_build_env wraps
    metrics = {name: create_metric(name) for name in spec.metrics}

    def crops() -> dict[str, dict[str, list[float]]]:
        out = {}
        for split in ("val", "test"):
            _, restored, target = live.restore(split)
            out[split] = {name: [float(v) for v in m(restored, target)] for name, m in metrics.items()}
        return out

    env.reset(seed=seed)
    root = crops()
    played: dict[str, list[dict[str, Any]]] = {}
    for label, sequence in sequences(list(spec.presets), spec.stages, switching).items():
        env.reset(seed=seed)
        stages = []
        for action in sequence:
            info = env.step(action)[-1]
            started = time.perf_counter()
            values = crops()
            stages.append({
                "diverged": bool(info["diverged"]), "train_seconds": live.timings["train_seconds"],
                "eval_seconds": live.timings["eval_seconds"], "crop_seconds": time.perf_counter() - started,
                **values,
            })
        played[label] = stages
    env.close()
    instance = spec.instance_of(seed)
    return {"instance": instance.name if instance else "default", "seed": seed, "root": root, "sequences": played}


def _run(args: tuple[TableSpec, int, bool]) -> dict[str, Any]:
    return screen_unit(*args)


def run_screen(spec: TableSpec, workers: int, switching: bool = False) -> list[dict[str, Any]]:
    """Every tree's sequences, in ``workers`` spawned processes."""
    jobs = [(spec, seed, switching) for seed in spec.seeds]
    if workers <= 1:
        return [_run(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        out = []
        for i, result in enumerate(pool.imap(_run, jobs)):
            out.append(result)
            print(f"{i + 1}/{len(jobs)} trees ({result['instance']}, seed {result['seed']})", flush=True)
        return out


# ----------------------------------------------------------------------------- summary


def finals(units: Sequence[Mapping[str, Any]], instance: str, label: str, metric: str, split: str,
           stage: int | None = None, crops: int | None = None) -> np.ndarray:
    """Per replicate, the metric (higher is better) after ``stage`` stages of the
    sequence ``label`` (default: its last), the mean over its first ``crops`` crops."""
    sign = -1.0 if metric_info(metric).lower_better else 1.0
    values = []
    for unit in units:
        if unit["instance"] == instance:
            stages = unit["sequences"][label]
            per_crop = stages[(stage or len(stages)) - 1][split][metric]
            values.append(sign * float(np.mean(per_crop[:crops])))
    return np.array(values)


def compare_sequences(results: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Per metric, from ``{sequence label: {metric: [value per replicate]}}``: the best
    static sequence, the best half switch and its gain in standard errors of a
    difference of two replicate means (``z``), the spread of the statics and the
    replicate noise (median standard error). Gains are in the metric's units, positive
    when better (for a lower-is-better metric, lower)."""
    rows = []
    for metric in metrics:
        sign = -1.0 if metric_info(metric).lower_better else 1.0

        def stats(label: str, metric: str = metric, sign: float = sign) -> tuple[float, float]:
            values = [sign * v for v in results[label][metric]]
            spread = statistics.stdev(values) if len(values) > 1 else math.nan
            return statistics.fmean(values), spread / math.sqrt(len(values))

        static = [label for label in results if " > " not in label]
        switching = [label for label in results if " > " in label]
        best_static = max(static, key=lambda label: stats(label)[0])
        best_switch = max(switching, key=lambda label: stats(label)[0]) if switching else None
        static_mean, static_se = stats(best_static)
        row: dict[str, Any] = {
            "metric": metric,
            "best_static": best_static,
            "best_static_value": sign * static_mean,
            "static_spread": static_mean - min(stats(label)[0] for label in static),
            "noise_se": statistics.median(stats(label)[1] for label in results),
        }
        if best_switch is not None:
            switch_mean, switch_se = stats(best_switch)
            gain = switch_mean - static_mean
            row.update(
                best_switching=best_switch, gain=gain,
                z=gain / math.hypot(static_se, switch_se) if static_se or switch_se else math.nan,
            )
        rows.append(row)
    return rows


def summarize(units: Sequence[Mapping[str, Any]], train: Sequence[str], test: Sequence[str],
              metrics: Sequence[str], stages: int | None = None) -> list[str]:
    """Lines of the summary (see the module docstring)."""
    from scipy import stats

    instances = list(dict.fromkeys(u["instance"] for u in units))
    labels = list(units[0]["sequences"])
    statics = [label for label in labels if " > " not in label]
    depth = stages or len(units[0]["sequences"][labels[0]])
    lines = []
    for metric in metrics:
        lines.append(f"== {metric} after {depth} stages (test split; higher is better; lower-is-better metrics negated)")
        means: dict[str, dict[str, float]] = {}
        for inst in instances:
            final = {p: finals(units, inst, p, metric, "test", depth) for p in statics}
            means[inst] = {p: float(v.mean()) for p, v in final.items()}
            order = sorted(statics, key=lambda p: -means[inst][p])
            best, second = order[0], order[1] if len(order) > 1 else order[0]
            d = final[best] - final[second]
            se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
            p = 2 * stats.t.sf(abs(d.mean() / se), len(d) - 1) if se > 0 else math.nan
            rho = [stats.spearmanr([finals(units, inst, q, metric, "val", s).mean() for q in statics],
                                   [finals(units, inst, q, metric, "test", s).mean() for q in statics]).statistic
                   for s in range(1, depth + 1)]
            lines.append(
                f"  {inst:>16}: " + " ".join(f"{q}={means[inst][q]:.4g}" for q in statics)
                + f" | best {best}, spread {means[inst][best] - min(means[inst].values()):.3g};"
                f" over 2nd ({second}) {d.mean():.3g} ± {se:.2g} p={p:.3f}"
                f" | val/test rho by depth {' '.join(f'{r:.2f}' for r in rho)}"
            )
            if len(statics) < len(labels):
                results = {q: {metric: list(finals(units, inst, q, metric, "test", depth))} for q in labels}
                row = compare_sequences(results, [metric])[0]
                lines.append(f"  {'':>16}  best switch {row['best_switching']}: {row['gain']:+.3g} (z {row['z']:.1f})")
        if train:
            transferred = max(statics, key=lambda q: np.mean([means[i][q] for i in train]))
            lines.append(f"  transferred static (best on {', '.join(train)}): {transferred}")
            for inst in test:
                best = max(statics, key=lambda q: means[inst][q])
                d = finals(units, inst, best, metric, "test", depth) - finals(units, inst, transferred, metric, "test", depth)
                se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
                t = d.mean() / se if se > 0 else math.inf
                p = 2 * stats.t.sf(abs(t), len(d) - 1) if math.isfinite(t) else 0.0
                lines.append(f"    {inst}: best {best}, above transferred by {d.mean():.4g} ± {se:.2g} (t {t:.1f}, p {p:.4f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m measure.screen", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="tabular", help="a suite with a [table] section [default: tabular]")
    parser.add_argument("--out", default="screen.json", help="where to write every crop's values")
    parser.add_argument("--workers", type=int, default=1, help="processes [default: 1]")
    parser.add_argument("--switching", action="store_true", help="also train every half switch")
    parser.add_argument("--summary", default=None, metavar="JSON", help="summarize a finished screen instead")
    parser.add_argument("--train", default="", help="comma-separated training instances (summary)")
    parser.add_argument("--test", default="", help="comma-separated test instances (summary)")
    parser.add_argument("--stages", type=int, default=None, help="depth to summarize [default: all]")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: allowed: an integer >= 1")
    if args.summary:
        with open(args.summary, encoding="utf-8") as f:
            saved = json.load(f)
        train, test = [s for s in args.train.split(",") if s], [s for s in args.test.split(",") if s]
        print("\n".join(summarize(saved["units"], train, test, saved["metrics"], args.stages)))
        return 0
    spec = load_table_spec(args.suite, max_nodes=None)  # the screen builds no table: no size limit
    started = time.perf_counter()
    units = run_screen(spec, args.workers, args.switching)
    seconds = time.perf_counter() - started
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"suite": args.suite, "seconds": seconds, "workers": args.workers,
                   "metrics": list(spec.metrics), "spec": dataclasses.asdict(spec), "units": units}, f)
    print(f"{len(units)} trees in {seconds:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
