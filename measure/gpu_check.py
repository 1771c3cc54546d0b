"""One command that checks the CUDA path on a machine with a GPU (a few minutes).

    python -m measure.gpu_check [--out DIR] [--repeats 3]

It runs, and prints the outcome of, each part:

1. the CUDA tests (``pytest -m gpu``);
2. ``python -m measure.perf --config paper --device cuda`` without and with
   ``--amp``: ``env_overhead_ratio``, ``eval_share`` and the stage split (data
   preparation, training, evaluation);
3. a 2-env async vector env on CUDA with gymnasium's default start method (fork);
4. a 2-worker ``lossagent bench`` on CUDA (fixed and random agents, 2 seeds).

The exit code is 0 when every part passed. Without CUDA it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_VECTOR = """
import gymnasium as gym, numpy as np, lossagent_env
kw = dict(objective="psnr", patch_size=32, batch_size=4, stage_iters=10, max_stages=2,
          eval_images=2, eval_size=64, device="cuda")
vec = gym.make_vec("LossAgent/SuperResolution-v0", num_envs=2, vectorization_mode="async", **kw)
vec.reset(seed=0)
_, rewards, *_ = vec.step(np.full(vec.action_space.shape, 0.5, np.float32))
vec.close()
assert np.isfinite(rewards).all(), rewards
print("async vector env on cuda: rewards", rewards.tolist())
"""

_SUITE = """\
name = "gpu-check"
seeds = [0, 1]
objectives = ["psnr"]

[env]
id = "LossAgent/SuperResolution-v0"
kwargs = { scale = 2, backbone = "tiny", patch_size = 32, batch_size = 4, eval_images = 2, eval_size = 64, device = "cuda", losses = ["l1", "ssim", "gradient", "gan"] }

[budget]
max_stages = 3
stage_iters = 40

[[agents]]
name = "fixed"

[[agents]]
name = "random"
"""


def _step(name: str, command: list[str], timeout: float) -> tuple[bool, str]:
    print(f"\n=== {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OMP_NUM_THREADS", None)
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"--- {name}: TIMEOUT after {timeout:.0f} s", flush=True)
        return False, ""
    output = result.stdout + result.stderr
    print(output[-6000:], flush=True)
    ok = result.returncode == 0
    print(f"--- {name}: {'ok' if ok else f'FAILED (exit {result.returncode})'} in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return ok, result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m measure.gpu_check",
        description="Check the CUDA path: CUDA tests, paper-scale perf with and without "
        "amp, an async vector env and a 2-worker bench on the GPU.",
    )
    parser.add_argument("--out", default=None, help="where the bench writes [a temporary folder]")
    parser.add_argument("--repeats", type=int, default=3, help="perf repeats per setting [3]")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check.", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}, "
          f"bf16 native: {torch.cuda.is_bf16_supported(including_emulation=False)}")
    python = sys.executable
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-"))
    suite = out / "gpu_check.toml"
    out.mkdir(parents=True, exist_ok=True)
    suite.write_text(_SUITE)
    results = {}
    results["cuda tests"], _ = _step("cuda tests", [python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], 240)
    for amp in (False, True):
        name = f"perf paper cuda{' amp' if amp else ''}"
        command = [python, "-m", "measure.perf", "--config", "paper", "--device", "cuda",
                   "--repeats", str(args.repeats)] + (["--amp"] if amp else [])
        results[name], _ = _step(name, command, 300)
    results["async vector env"], _ = _step("async vector env", [python, "-c", _VECTOR], 180)
    bench_out = out / "bench"
    results["2-worker bench"], stdout = _step(
        "2-worker bench", [python, "-m", "benchmarks", "bench", "--suite", str(suite), "--workers", "2",
                           "--out", str(bench_out)], 300)
    if results["2-worker bench"]:
        rows = [json.loads(line) for line in (bench_out / "results.jsonl").read_text().splitlines()]
        devices = sorted({r["device"] for r in rows})
        print(f"bench rows: {len(rows)}, devices: {devices}")
        results["2-worker bench"] = all(d.startswith("cuda") for d in devices)
    print("\n=== summary")
    for name, ok in results.items():
        print(f"{'ok    ' if ok else 'FAILED'} {name}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
