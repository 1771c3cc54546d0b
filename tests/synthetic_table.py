"""Synthetic tables whose answer is known: the real header and writer, made-up values.

``write_table(path, value)`` writes a complete table (format 2) of the
SuperResolution env with the losses ``l1`` and ``gradient``, the presets ``pixel`` and
``edges``, the panel ``psnr``, and the instances ``train-a`` (train), ``science`` and
``textures`` (test) with ``replicates`` trees each. ``value(instance, replicate, path,
split)`` gives PSNR after the presets ``path`` (a tuple of indices), so a test decides
exactly what an agent or a reference scores on each replicate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lossagent_env.tabular.build import InstanceSpec, TableSpec, make_build_env, table_header
from lossagent_env.tabular.format import NodeRecord, create_table, write_unit

Value = Callable[[str, int, tuple[int, ...], str], float]

INSTANCES = (("train-a", "train"), ("science", "test"), ("textures", "test"))
PRESETS = {"pixel": {"l1": 1.0}, "edges": {"l1": 1.0, "gradient": 1.0}}


def spec(replicates: int = 4, stages: int = 2, instances: Sequence[tuple[str, str]] = INSTANCES,
         kwargs: Mapping[str, dict] | None = None) -> TableSpec:
    return TableSpec(
        env_id="LossAgent/SuperResolution-v0",
        env_kwargs={
            "losses": ["l1", "gradient"], "patch_size": 16, "batch_size": 2, "eval_images": 1,
            "eval_size": 32, "stage_iters": 1, "dataset": "skimage:photos",
        },
        presets=PRESETS,
        metrics=("psnr",),
        seeds=(),
        stages=stages,
        instances=tuple(
            InstanceSpec(name, split, dict((kwargs or {}).get(name, {})), tuple(range(i * replicates, (i + 1) * replicates)))
            for i, (name, split) in enumerate(instances)
        ),
    )


def write_table(path: str | Path, value: Value, replicates: int = 4, stages: int = 2,
                instances: Sequence[tuple[str, str]] = INSTANCES, kwargs: Mapping[str, dict] | None = None,
                diverged: Callable[[str, tuple[int, ...]], bool] | None = None) -> Path:
    """Write the table (see the module docstring) and return its path; ``kwargs``: env
    settings of some instances; ``diverged(instance, path)``: the nodes whose stage diverged."""
    table = spec(replicates, stages, instances, kwargs)
    env = make_build_env(table)
    try:
        header = table_header(table, env)
    finally:
        env.close()
    path = Path(path)
    create_table(path, header)
    k = len(PRESETS)
    import sqlite3

    db = sqlite3.connect(path)
    try:
        for inst in table.instances:
            for replicate, seed in enumerate(inst.seeds):
                for first in range(k):
                    paths: list[tuple[int, ...]] = [(), (first,)]
                    level = [(first,)]
                    for _ in range(stages - 1):
                        level = [p + (a,) for p in level for a in range(k)]
                        paths += level
                    records = [
                        NodeRecord(
                            seed=seed, path=p, diverged=bool(diverged and diverged(inst.name, p)),
                            train_seconds=0.0, eval_seconds=0.0,
                            metrics={split: {"psnr": value(inst.name, replicate, p, split)} for split in ("val", "test")},
                            losses={"l1": 0.05, "gradient": 0.1},
                        )
                        for p in paths
                    ]
                    write_unit(db, seed, first, records)
    finally:
        db.close()
    return path
