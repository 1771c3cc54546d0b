"""The node-cost benchmark runs on a table spec and its parts add up to a node."""

from __future__ import annotations

from pathlib import Path

from benchmarks.perf_node import main, measure

SUITE = """
name = "tiny-table"
description = "a two-metric table of the smoke env, 4 iterations per stage"
seeds = [0]
objectives = ["psnr"]

[env]
id = "LossAgent/Tabular-v0"
kwargs = { table = "smoke" }

[budget]
max_stages = 2
stage_iters = 4

[[agents]]
name = "fixed"

[table]
stages = 2
seeds = [0]
metrics = ["psnr", "ssim"]
threads = 1

[table.env]
id = "LossAgent/SuperResolution-v0"
kwargs = { scale = 2, backbone = "tiny", dataset = "skimage", losses = ["l1", "ssim"], patch_size = 32, batch_size = 2, eval_images = 2, eval_size = 64, device = "cpu", stage_iters = 4 }

[table.presets]
pixel = { l1 = 1.0 }
structure = { l1 = 1.0, ssim = 1.0 }
"""


def test_node_parts_are_measured_and_add_up(tmp_path: Path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE, encoding="utf-8")
    result = measure(str(path), nodes=3)
    assert {"node", "train", "eval_val", "eval_test", "network", "metric_psnr", "metric_ssim"} <= set(result)
    assert all(value > 0 for value in result.values())
    parts = result["train"] + result["eval_val"] + result["eval_test"]
    assert parts <= result["node"] * 1.05 and parts >= result["node"] * 0.5
    assert 0 < result["train_share"] < 1
    assert main([f"--suite={path}", "--nodes=1", "--json"]) == 0
    assert '"node":' in capsys.readouterr().out
