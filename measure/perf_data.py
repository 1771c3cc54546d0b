"""Data preparation of one paper-scale stage: the sampler against a per-patch reference.

    python -m measure.perf_data [--repeats 5] [--task sr|denoise|jpeg]

A paper-scale stage (``benchmarks/suites/paper.toml``) trains 500 iterations of 16
patches of 96 px, x4: 8,000 patches to cut, flip and degrade. This times, in one process
and alternately, ``PatchSampler.sample`` (one copy per patch with its flips, into a
reused buffer; the degradation on the whole batch) against a reference that cuts patch
by patch in Python, stacks them, degrades, then flips each subset with boolean masks,
and prints the medians and their ratio. Both draw the same random choices; the targets
are checked equal. Target: the sampler at least 3x faster than the reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lossagent_env.data import PatchSampler, load_dataset
from lossagent_env.tasks import TASKS


def reference_sample(sampler: PatchSampler, n: int, rng: np.random.Generator, generator: torch.Generator):
    """Patch by patch: cut, stack, degrade, then flip each subset with boolean masks."""
    p, s = sampler.patch_size, sampler.degradation.scale
    which = rng.choice(len(sampler.images), size=n, p=sampler.probabilities)
    u = rng.random((n, 2))
    flips = rng.random((n, 3)) < 0.5
    patches = []
    for k, i in enumerate(which):
        image = sampler.images[i]
        y = int(u[k, 0] * ((image.shape[1] - p) // s + 1)) * s
        x = int(u[k, 1] * ((image.shape[2] - p) // s + 1)) * s
        patches.append(image[:, y : y + p, x : x + p])
    hr = torch.stack(patches)
    lr = sampler.degradation(hr, generator)

    def flipped(batch: torch.Tensor) -> torch.Tensor:
        out = batch.clone()
        for axis, dims in ((0, (-1,)), (1, (-2,))):
            mask = torch.from_numpy(flips[:, axis])
            out[mask] = out[mask].flip(dims)
        mask = torch.from_numpy(flips[:, 2])
        out[mask] = out[mask].transpose(-1, -2)
        return out

    return flipped(lr), flipped(hr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m measure.perf_data", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--task", choices=TASKS.names(), default="sr")
    args = parser.parse_args(argv)
    task = TASKS.get(args.task)
    degradation = task.degradation({"sr": 4, "denoise": 25.0, "jpeg": 20}[args.task])
    sampler = PatchSampler(load_dataset("skimage").train, 96, degradation)
    n = 500 * 16
    times: dict[str, list[float]] = {"sampler": [], "reference": []}
    for repeat in range(args.repeats):
        order = ("sampler", "reference") if repeat % 2 else ("reference", "sampler")
        for name in order:
            rng, generator = np.random.default_rng(repeat), torch.Generator().manual_seed(repeat)
            start = time.perf_counter()
            if name == "sampler":
                sampler.sample(n, rng, generator, reuse_buffer=True)
            else:
                reference_sample(sampler, n, rng, generator)
            times[name].append(time.perf_counter() - start)
    _, a = sampler.sample(64, np.random.default_rng(0), torch.Generator())
    _, b = reference_sample(sampler, 64, np.random.default_rng(0), torch.Generator())
    sampler_s, reference_s = statistics.median(times["sampler"]), statistics.median(times["reference"])
    print(f"task {args.task}, {n} patches of 96 px, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"sampler: {sampler_s:.3f} s, reference: {reference_s:.3f} s, speed-up {reference_s / sampler_s:.2f}x; "
          f"same targets: {torch.equal(a, b)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
