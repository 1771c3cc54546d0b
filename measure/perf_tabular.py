"""Speed of ``LossAgent/Tabular-v0``: steps per second through ``gym.make``, and the oracle.

    python -m measure.perf_tabular --table PATH [--objective psnr] [--steps 20000]
                                      [--repeats 7] [--ppo] [--json]

Each repeat plays ``--steps`` steps of random presets (drawn beforehand) through the
env ``gym.make`` returns (with Gymnasium's default wrappers), resetting when an
episode is truncated, resets included in the time. It prints the median over the
repeats of:

    steps_per_second:  env steps (resets included in the time) per second
    oracle_ms:         one oracle of a tree: TableAnalysis(table, objective).oracle(seeds=[seed])
    make_ms:           gym.make of a table already read once (the file is cached)

With ``--ppo`` it also trains the tabular suite's PPO agent (``benchmarks/suites/
tabular.toml``) for its 20,000 steps on the table's first seeds and prints
``ppo_train_seconds``. The targets are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import gymnasium as gym
import numpy as np

import lossagent_env  # noqa: F401  (registers the ids)
from lossagent_env.tabular import TableAnalysis, TabularEnv


def _tabular(env: gym.Env) -> TabularEnv:
    """The :class:`TabularEnv` under the wrappers of ``gym.make``."""
    unwrapped = env.unwrapped
    assert isinstance(unwrapped, TabularEnv)  # the id's entry point
    return unwrapped


def measure(table: str, objective: str, steps: int, repeats: int, seed: int = 0) -> dict:
    """Median timings over ``repeats`` (see the module docstring)."""
    env = gym.make("LossAgent/Tabular-v0", table=table, objective=objective)
    u = _tabular(env)
    table_seed = u.seeds[0]
    actions = np.random.default_rng(seed).integers(len(u.preset_names), size=steps).tolist()
    rates, oracle_ms, make_ms = [], [], []
    for _ in range(repeats):
        env.reset(seed=table_seed)
        start = time.perf_counter()
        for action in actions:
            truncated = env.step(action)[3]
            if truncated:
                env.reset()
        rates.append(steps / (time.perf_counter() - start))
        start = time.perf_counter()
        TableAnalysis(table, objective).oracle(seeds=[table_seed])
        oracle_ms.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        gym.make("LossAgent/Tabular-v0", table=table, objective=objective)
        make_ms.append(1e3 * (time.perf_counter() - start))
    return {
        "table": table,
        "presets": len(u.preset_names),
        "stages": u.table.stages,
        "seeds": len(u.table.seeds),
        "objective": objective,
        "steps": steps,
        "repeats": repeats,
        "steps_per_second": statistics.median(rates),
        "oracle_ms": statistics.median(oracle_ms),
        "make_ms": statistics.median(make_ms),
    }


def ppo_train_seconds(table: str, objective: str) -> float:
    """Wall time of training the tabular suite's PPO agent on ``table``."""
    from agents import make_agent
    from benchmarks.suites.suite import load_suite

    suite = load_suite("tabular", check_names=False)
    kwargs = next(a.kwargs for a in suite.agents if a.name == "ppo")
    env = gym.make("LossAgent/Tabular-v0", table=table, objective=objective)
    seeds = list(_tabular(env).seeds)
    if _tabular(env).splits["train"]:  # PPO trains on the table's training instances
        kwargs = {k: v for k, v in kwargs.items() if k != "train_seeds"}
    else:
        kwargs = {**kwargs, "train_seeds": [s for s in kwargs.get("train_seeds", seeds[:1]) if s in seeds] or seeds[:1]}
    agent = make_agent("ppo", **kwargs)
    start = time.perf_counter()
    agent.train(env)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m measure.perf_tabular", description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True, help="table file or shipped table name")
    parser.add_argument("--objective", default="psnr", help="a panel metric (default psnr)")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ppo", action="store_true", help="also time the tabular suite's PPO training")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(args.table, args.objective, args.steps, args.repeats)
    if args.ppo:
        result["ppo_train_seconds"] = ppo_train_seconds(args.table, args.objective)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>17}: {value:.4g}" if isinstance(value, float) else f"{key:>17}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
