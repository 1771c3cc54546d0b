"""A pilot for a table: is scheduling presets worth more than the training noise?

    python -m benchmarks.pilot [--suite tabular] [--stages 6] [--replicates 3]
        [--instance '{"task": "denoise"}' ...] [--presets pixel,adversarial,...]
        [--out pilot.json]

Before a table is sized and built (hours), this trains a few preset sequences live on
the suite's ``[table]`` env and measures, per instance and panel metric, on the test
split after the last stage:

* every **static** sequence (one preset held for every stage) and a few **switching**
  ones (the first half of the stages with one preset, the second half with another,
  for every ordered pair of presets);
* each sequence ``--replicates`` times, with seeds 0, 1, ...: the seed changes only the
  training randomness (minibatch order, the discriminator's start), not the network's
  start or the crops, so the spread of the replicates is the training noise.

It prints, per instance and metric, the best static preset, the best switching sequence,
their gain over the best static in standard errors of a difference of two replicate
means (``z``), and the replicate noise (median standard error); ``--out`` saves every
replicate. An instance is the table's env with some keyword arguments changed (a task,
a dataset folder); without ``--instance`` the only instance is the table's env, and
``--instance '{}'`` names it among others.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from benchmarks.suite_table import load_table_spec
from lossagent_env.env import LossAgentEnv
from lossagent_env.metrics import metric_info
from lossagent_env.tabular.build import make_build_env, panel_objective


def sequences(presets: Sequence[str], stages: int) -> dict[str, tuple[int, ...]]:
    """Static sequences, then first-half/second-half switches of every ordered pair."""
    half = stages // 2
    out = {f"{name} x{stages}": (i,) * stages for i, name in enumerate(presets)}
    for (i, a), (j, b) in itertools.permutations(enumerate(presets), 2):
        out[f"{a} x{half} > {b} x{stages - half}"] = (i,) * half + (j,) * (stages - half)
    return out


def run_instance(
    suite: str, overrides: Mapping[str, Any], stages: int, replicates: int, presets: Sequence[str] | None
) -> dict[str, dict[str, list[float]]]:
    """``{sequence: {metric: [test value per replicate]}}`` for one instance."""
    table = load_table_spec(suite)
    spec = dataclasses.replace(
        table,
        env_kwargs={**table.env_kwargs, **overrides},
        presets={name: table.presets[name] for name in (presets or list(table.presets))},
        stages=stages,
    )
    torch.set_num_threads(spec.threads)
    env = make_build_env(spec)
    live = env.unwrapped
    assert isinstance(live, LossAgentEnv)  # what make_build_env wraps
    test_panel = panel_objective(spec.metrics)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for label, sequence in sequences(list(spec.presets), stages).items():
            values: dict[str, list[float]] = {m: [] for m in spec.metrics}
            for seed in range(replicates):
                env.reset(seed=seed)
                for action in sequence:
                    env.step(action)
                measured = live.measure(test_panel, split="test")["metrics"]
                for metric in spec.metrics:
                    values[metric].append(float(measured[metric]))
            results[label] = values
    finally:
        env.close()
    return results


def summarize(results: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Per metric: best static and best switching sequence, the gain in standard errors.

    Spreads and gains are in the metric's units, positive when better (for a
    lower-is-better metric, lower)."""
    rows = []
    for metric in metrics:
        sign = -1.0 if metric_info(metric).lower_better else 1.0

        def stats(label: str, metric: str = metric, sign: float = sign) -> tuple[float, float]:
            values = [sign * v for v in results[label][metric]]
            spread = statistics.stdev(values) if len(values) > 1 else math.nan
            return statistics.fmean(values), spread / math.sqrt(len(values))

        static = [label for label, seq in results.items() if " > " not in label]
        switching = [label for label in results if " > " in label]
        best_static = max(static, key=lambda label: stats(label)[0])
        best_switch = max(switching, key=lambda label: stats(label)[0]) if switching else None
        (static_mean, static_se) = stats(best_static)
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
                best_switching=best_switch,
                gain=gain,
                z=gain / math.hypot(static_se, switch_se) if static_se or switch_se else math.nan,
            )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pilot", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="tabular", help="a suite with a [table] section [default: tabular]")
    parser.add_argument("--stages", type=int, default=6, help="stages of every sequence [default: 6]")
    parser.add_argument("--replicates", type=int, default=3, help="seeds per sequence [default: 3]")
    parser.add_argument("--instance", action="append", default=[], metavar="JSON",
                        help="env keyword arguments of a further instance, e.g. '{\"task\": \"denoise\"}'")
    parser.add_argument("--presets", default=None, help="comma-separated preset names [default: all]")
    parser.add_argument("--out", default=None, help="save every replicate as JSON")
    args = parser.parse_args(argv)
    if args.stages < 2 or args.replicates < 2:
        parser.error(f"--stages {args.stages} --replicates {args.replicates}: both must be >= 2")
    instances: list[dict[str, Any]] = []
    for text in args.instance or ["{}"]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            parser.error(f"--instance {text!r} is not JSON ({e}). Allowed: a JSON object of env keyword arguments")
        if not isinstance(value, dict):
            parser.error(f"--instance {text!r} is not allowed. Allowed: a JSON object of env keyword arguments")
        instances.append(value)
    presets = args.presets.split(",") if args.presets else None
    spec = load_table_spec(args.suite)
    unknown = sorted(set(presets or ()) - set(spec.presets))
    if unknown:
        parser.error(f"--presets {unknown} are not in the table. Allowed: {list(spec.presets)}")
    saved = []
    for overrides in instances:
        started = time.perf_counter()
        results = run_instance(args.suite, overrides, args.stages, args.replicates, presets)
        seconds = time.perf_counter() - started
        saved.append({"instance": overrides, "seconds": seconds, "results": results})
        print(f"instance {json.dumps(overrides)} ({seconds:.0f} s)")
        for row in summarize(results, spec.metrics):
            line = (f"  {row['metric']:>5}: best static {row['best_static']} = {row['best_static_value']:.4g}"
                    f" (spread of static presets {row['static_spread']:.3g}); noise SE {row['noise_se']:.3g}")
            if "best_switching" in row:
                line += f"; best switching {row['best_switching']}: gain {row['gain']:+.3g} (z = {row['z']:.1f})"
            print(line)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(saved, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
