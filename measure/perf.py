"""Overhead of the env over a bare PyTorch training loop, measured in one process.

    python -m measure.perf [--config smoke|paper] [--device cuda] [--amp]
                              [--repeats 9] [--stage-iters 40] [--action 0.5] [--json]

``--config`` is a shipped suite's configuration (``paper`` on the shipped photographs,
for a GPU), every loss of the repository active. Each repeat runs one env stage
(``env.step``) and, alternately before and after it, a bare loop doing as many Adam
iterations with the same network, active losses and weights, batch and patch size, on
tensors cut and degraded beforehand. It prints medians over the repeats:

    env_overhead_ratio: train part of an env stage (sampling, degradation, snapshot for
                        rollback, training) / the bare loop
    eval_share:         evaluation time / whole stage time
    stage split:        data preparation (cut, flip, degrade, copy to the device),
                        training and evaluation seconds of an env stage

Only the ratios within one run are meaningful; the targets, the paper scale and the
CUDA synchronisation are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time

import gymnasium as gym
import numpy as np
import torch

import lossagent_env  # noqa: F401  (registers the ids)
from lossagent_env.env import LossAgentEnv

CONFIGS = ("smoke", "paper")


def suite_configuration(name: str = "smoke") -> tuple[str, dict]:
    """The env id and keyword arguments of a shipped suite (``smoke`` or ``paper``).

    The paper suite's image folder (DIV2K) is replaced by the shipped photographs, so it
    runs offline; the objective is PSNR.
    """
    from benchmarks.suites.suite import load_suite

    suite = load_suite(name, check_names=False)
    kwargs = {**suite.env_kwargs, "stage_iters": suite.stage_iters, "objective": "psnr"}
    kwargs["dataset"] = "skimage"
    return suite.env_id, {**kwargs, "max_stages": 10_000}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model, losses, weights, inputs, targets, lr, amp: bool = False) -> float:
    """The reference: a plain Adam loop over prepared tensors. Returns seconds."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    active = [(loss, w) for loss, w in zip(losses, weights) if w > 0]
    model.train()
    bf16 = amp and inputs.is_cuda
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    _sync(inputs.device)
    start = time.perf_counter()
    for t in range(inputs.shape[0]):
        with autocast():
            output = model(inputs[t])
        output = output.float()
        loss = sum(w * term(output, targets[t]) for term, w in active)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for term, _ in active:
            if term.trainable:
                term.update(output.detach(), targets[t])
    _sync(inputs.device)
    return time.perf_counter() - start


def measure(env_id: str, kwargs: dict, repeats: int, action_value: float, seed: int = 0) -> dict:
    env = gym.make(env_id, **kwargs)
    env.reset(seed=seed)
    u = env.unwrapped
    assert isinstance(u, LossAgentEnv)  # the suites' ids all make one
    cfg = u.config
    action = np.full(len(u.loss_names), action_value, np.float32)
    weights = action.astype(np.float64) * np.array([u.losses[k].scale for k in u.loss_names])
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    env.step(action)  # warm-up of both paths
    ratios, shares, env_train, bare, prepare, evals = [], [], [], [], [], []
    for repeat in range(repeats):
        # Prepared beforehand, outside the timed region of the bare loop.
        lr_patches, hr_patches = u.sampler.sample(cfg.stage_iters * cfg.batch_size, rng, generator)
        shape = (cfg.stage_iters, cfg.batch_size)
        inputs = lr_patches.to(u.device).view(*shape, *lr_patches.shape[1:])
        targets = hr_patches.to(u.device).view(*shape, *hr_patches.shape[1:])
        model = copy.deepcopy(u.model)
        losses = [copy.deepcopy(u.losses[k]) for k in u.loss_names]

        # Alternate which runs first, so drifts of the machine hit both alike.
        if repeat % 2:
            t_bare = bare_loop(model, losses, weights, inputs, targets, cfg.lr, cfg.amp)
        _sync(u.device)
        env.step(action)  # the env synchronises CUDA at the ends of its timed parts
        t_env = u.timings["train_seconds"]
        t_eval = u.timings["eval_seconds"]
        if not repeat % 2:
            t_bare = bare_loop(model, losses, weights, inputs, targets, cfg.lr, cfg.amp)
        prepare.append(u.timings["prepare_seconds"])
        evals.append(t_eval)
        env_train.append(t_env)
        bare.append(t_bare)
        ratios.append(t_env / t_bare)
        shares.append(t_eval / (t_env + t_eval))
    env.close()
    return {
        "env_overhead_ratio": statistics.median(ratios),
        "eval_share": statistics.median(shares),
        "repeats": repeats,
        "env_train_seconds_median": statistics.median(env_train),
        "stage_split_seconds": {
            "prepare": statistics.median(prepare),
            "train": statistics.median(env_train) - statistics.median(prepare),
            "eval": statistics.median(evals),
        },
        "bare_loop_seconds_median": statistics.median(bare),
        "losses": list(u.loss_names),
        "action": action_value,
        "config": {k: v for k, v in cfg.to_dict().items() if k != "objective"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m measure.perf",
        description=__doc__.split("\n\n")[0],
        epilog="Example: python -m measure.perf --repeats 9",
    )
    parser.add_argument("--config", choices=CONFIGS, default="smoke", help="suite configuration [smoke]")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--stage-iters", type=int, help="override the suite's value")
    parser.add_argument("--action", type=float, default=0.5, help="value of every action entry")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto [cpu]")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA)")
    parser.add_argument("--json", action="store_true", help="also print the full result as JSON")
    args = parser.parse_args(argv)
    env_id, kwargs = suite_configuration(args.config)
    kwargs["device"] = args.device
    kwargs["amp"] = bool(args.amp)
    if args.stage_iters:
        kwargs["stage_iters"] = args.stage_iters
    result = measure(env_id, kwargs, args.repeats, args.action)
    split = result["stage_split_seconds"]
    print(f"config: {args.config} on {args.device}{' with amp' if args.amp else ''}, {result['repeats']} repeats")
    print(f"env_overhead_ratio: {result['env_overhead_ratio']:.3f}")
    print(f"eval_share: {result['eval_share']:.3f}")
    print(
        f"stage split (medians, s): prepare {split['prepare']:.3f}, train {split['train']:.3f}, "
        f"eval {split['eval']:.3f}"
    )
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
