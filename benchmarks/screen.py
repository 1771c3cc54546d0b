"""Screen for a table: every preset held for every stage, per instance and replicate, live.

    python -m benchmarks.screen --suite screen --out screen.json [--workers 2]
    python -m benchmarks.screen --summary screen.json [--train a,b --test c,d]

Before a table of problem instances is built (hours), this trains the cheap part of it
for real: for every candidate instance of the suite's ``[table]`` section, every
replicate seed and every preset, ``reset(seed)`` then the preset at each of the
``stages`` stages (``1 + K x T`` stages per replicate, the static sequences of the
table's trees). After every stage it stores each panel metric of **each crop** of the
validation and test splits, so that a summary can ask what fewer crops, fewer stages or
fewer presets would give without training again.

``--summary`` prints, per instance and panel metric after the last stage (test split):
each preset's mean over replicates, the best static preset, the spread of the presets
in standard errors of a paired difference (replicate noise, ``R - 1`` degrees of
freedom), the preset best on the ``--train`` instances (the *transferred static*) and
how far each ``--test`` instance's best is above it; and the val/test rank agreement of
the static sequences at every depth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.suite_table import load_table_spec
from lossagent_env.env import LossAgentEnv
from lossagent_env.metrics import create_metric, metric_info
from lossagent_env.tabular.build import TableSpec, make_build_env


def screen_unit(spec: TableSpec, seed: int) -> dict[str, Any]:
    """Every static sequence of the tree of ``seed``: per preset, per stage, per split,
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
    presets: dict[str, list[dict[str, Any]]] = {}
    for index, name in enumerate(spec.presets):
        env.reset(seed=seed)
        stages = []
        for _ in range(spec.stages):
            info = env.step(index)[-1]
            started = time.perf_counter()
            values = crops()
            stages.append({
                "diverged": bool(info["diverged"]), "train_seconds": live.timings["train_seconds"],
                "eval_seconds": live.timings["eval_seconds"], "crop_seconds": time.perf_counter() - started,
                **values,
            })
        presets[name] = stages
    env.close()
    instance = spec.instance_of(seed)
    return {"instance": instance.name if instance else "default", "seed": seed, "root": root, "presets": presets}


def _run(args: tuple[TableSpec, int]) -> dict[str, Any]:
    return screen_unit(*args)


def run_screen(spec: TableSpec, workers: int) -> list[dict[str, Any]]:
    """Every tree's static sequences, in ``workers`` spawned processes."""
    jobs = [(spec, seed) for seed in spec.seeds]
    if workers <= 1:
        return [_run(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        out = []
        for i, result in enumerate(pool.imap(_run, jobs)):
            out.append(result)
            print(f"{i + 1}/{len(jobs)} trees ({result['instance']}, seed {result['seed']})", flush=True)
        return out


# ----------------------------------------------------------------------------- summary


def _final(units: Sequence[Mapping[str, Any]], instance: str, preset: str, metric: str, split: str,
           stage: int, crops: int | None = None) -> np.ndarray:
    """Per replicate, the metric (higher is better) after ``stage`` stages of ``preset``,
    the mean over the first ``crops`` crops."""
    sign = -1.0 if metric_info(metric).lower_better else 1.0
    values = []
    for unit in units:
        if unit["instance"] == instance:
            per_crop = unit["presets"][preset][stage - 1][split][metric]
            values.append(sign * float(np.mean(per_crop[:crops])))
    return np.array(values)


def summarize(units: Sequence[Mapping[str, Any]], train: Sequence[str], test: Sequence[str],
              metrics: Sequence[str], stages: int | None = None) -> list[str]:
    """Lines of the summary (see the module docstring)."""
    from scipy import stats

    instances = list(dict.fromkeys(u["instance"] for u in units))
    presets = list(units[0]["presets"])
    depth = stages or len(next(iter(units[0]["presets"].values())))
    lines = []
    for metric in metrics:
        lines.append(f"== {metric} after {depth} stages (test split; higher is better; lower-is-better metrics negated)")
        means = {}
        for inst in instances:
            finals = {p: _final(units, inst, p, metric, "test", depth) for p in presets}
            means[inst] = {p: float(v.mean()) for p, v in finals.items()}
            best = max(presets, key=lambda p: means[inst][p])
            worst = min(presets, key=lambda p: means[inst][p])
            d = finals[best] - finals[worst]
            se = d.std(ddof=1) / math.sqrt(len(d))
            second = sorted(presets, key=lambda p: -means[inst][p])[1]
            d2 = finals[best] - finals[second]
            se2 = d2.std(ddof=1) / math.sqrt(len(d2))
            t2 = d2.mean() / se2 if se2 > 0 else math.inf
            p2 = 2 * stats.t.sf(abs(t2), len(d2) - 1)
            rho = [stats.spearmanr([_final(units, inst, p, metric, "val", s).mean() for p in presets],
                                   [_final(units, inst, p, metric, "test", s).mean() for p in presets]).statistic
                   for s in range(1, depth + 1)]
            lines.append(
                f"  {inst:>16}: " + " ".join(f"{p}={means[inst][p]:.4g}" for p in presets)
                + f" | best {best}, spread {d.mean():.3g} (se {se:.2g}); over 2nd ({second}) {d2.mean():.3g}"
                f" ± {se2:.2g} p={p2:.3f} | val/test rho by depth {' '.join(f'{r:.2f}' for r in rho)}"
            )
        if train:
            transferred = max(presets, key=lambda p: np.mean([means[i][p] for i in train]))
            lines.append(f"  transferred static (best on {', '.join(train)}): {transferred}")
            for inst in test:
                best = max(presets, key=lambda p: means[inst][p])
                d = _final(units, inst, best, metric, "test", depth) - _final(units, inst, transferred, metric, "test", depth)
                se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
                t = d.mean() / se if se > 0 else math.inf
                p = 2 * stats.t.sf(abs(t), len(d) - 1) if math.isfinite(t) else 0.0
                lines.append(f"    {inst}: best {best}, above transferred by {d.mean():.4g} ± {se:.2g} (t {t:.1f}, p {p:.4f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.screen", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="screen", help="a suite with a [table] section [default: screen]")
    parser.add_argument("--out", default="screen.json", help="where to write every crop's values")
    parser.add_argument("--workers", type=int, default=1, help="processes [default: 1]")
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
        split = [s for s in args.train.split(",") if s], [s for s in args.test.split(",") if s]
        print("\n".join(summarize(saved["units"], *split, saved["metrics"], args.stages)))
        return 0
    spec = load_table_spec(args.suite)
    started = time.perf_counter()
    units = run_screen(spec, args.workers)
    seconds = time.perf_counter() - started
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"suite": args.suite, "seconds": seconds, "workers": args.workers,
                   "metrics": list(spec.metrics), "spec": dataclasses.asdict(spec), "units": units}, f)
    print(f"{len(units)} trees in {seconds:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
