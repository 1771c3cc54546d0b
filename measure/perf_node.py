"""Where the time of one table node goes: training, the two evaluation splits, each metric.

    python -m measure.perf_node [--suite tabular] [--nodes 20] [--json]

Builds the live env of the suite's ``[table]`` exactly as ``lossagent tabulate`` does
(its panel, presets and torch threads), then computes ``--nodes`` nodes as a unit does:
from one state, ``step(preset)`` (training, then the validation split) and the test
split, presets in turn. It prints the median over the nodes of (seconds):

    node:        one node, as a build worker computes it
    train:       the stage's training iterations
    eval_val:    the validation split (network on the crops, then the panel)
    eval_test:   the test split
    network:     the network's forward pass on the crops of one split
    metric_NAME: one metric on one split

and ``train_share``, the part of a node spent training. A table's build time is about
``nodes x node / workers`` (the suite's ``[table]`` comment records the measured one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

import torch

from benchmarks.suites.table import load_table_spec
from lossagent_env.env import LossAgentEnv
from lossagent_env.metrics.pyiqa_metric import Metric
from lossagent_env.tabular.build import make_build_env, panel_objective


def measure(suite: str, nodes: int) -> dict[str, float]:
    """Median seconds of each part of a node of ``suite``'s table (see the module doc)."""
    spec = load_table_spec(suite, max_nodes=None)  # times a few nodes, builds no table
    previous = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    spent: dict[str, float] = defaultdict(float)
    stock_call = Metric.__call__

    def timed_call(self: Metric, *args: Any, **kwargs: Any) -> torch.Tensor:
        started = time.perf_counter()
        try:
            return stock_call(self, *args, **kwargs)
        finally:
            spent[f"metric_{self.name}"] += time.perf_counter() - started

    samples: dict[str, list[float]] = defaultdict(list)
    env = make_build_env(spec)
    try:
        live = env.unwrapped
        assert isinstance(live, LossAgentEnv)  # what make_build_env wraps
        test_panel = panel_objective(spec.metrics)
        env.reset(seed=spec.seeds[0])
        env.step(0)  # a trained network, as below the root of a unit
        state = live.get_state()
        Metric.__call__ = timed_call  # type: ignore[method-assign]
        for k in range(nodes):
            live.set_state(state)
            spent.clear()
            started = time.perf_counter()
            env.step(k % spec.n_presets)
            val_metrics = sum(spent.values())
            stepped = time.perf_counter()
            live.measure(test_panel, split="test")
            done = time.perf_counter()
            test_metrics = sum(spent.values()) - val_metrics
            eval_val = float(live.timings["eval_seconds"])
            samples["node"].append(done - started)
            samples["train"].append(float(live.timings["train_seconds"]))
            samples["eval_val"].append(eval_val)
            samples["eval_test"].append(done - stepped)
            samples["network"].append(max(0.0, (done - stepped) - test_metrics))
            for name, seconds in spent.items():
                samples[name].append(seconds / 2)  # both splits: per split
    finally:
        Metric.__call__ = stock_call  # type: ignore[method-assign]
        env.close()
        torch.set_num_threads(previous)
    result = {key: statistics.median(values) for key, values in samples.items()}
    result["train_share"] = result["train"] / result["node"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m measure.perf_node", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="tabular", help="a suite with a [table] section [default: tabular]")
    parser.add_argument("--nodes", type=int, default=20, help="nodes to time [default: 20]")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error(f"--nodes {args.nodes} is not allowed. Allowed: an integer >= 1")
    result = measure(args.suite, args.nodes)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
