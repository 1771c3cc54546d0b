"""Before a table is built: the node-cost benchmark and the screen of preset sequences."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from measure import screen
from measure.perf_node import main, measure

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


def test_screen_sequences_are_statics_then_half_switches():
    assert list(screen.sequences(["a", "b"], 3)) == ["a x3", "b x3"]
    seqs = screen.sequences(["a", "b", "c"], 4, switching=True)
    assert list(seqs)[:3] == ["a x4", "b x4", "c x4"] and seqs["b x4"] == (1, 1, 1, 1)
    assert seqs["c x2 > a x2"] == (2, 2, 0, 0) and len(seqs) == 3 + 6


def test_screen_comparison_takes_each_metric_direction():
    results = {
        "a x2": {"psnr": [30.0, 30.2], "niqe": [6.0, 6.2]},
        "b x2": {"psnr": [29.0, 29.2], "niqe": [5.0, 5.2]},
        "a x1 > b x1": {"psnr": [30.5, 30.7], "niqe": [5.5, 5.7]},
        "b x1 > a x1": {"psnr": [28.0, 28.2], "niqe": [7.0, 7.2]},
    }
    psnr, niqe = screen.compare_sequences(results, ["psnr", "niqe"])
    assert psnr["best_static"] == "a x2" and psnr["best_static_value"] == pytest.approx(30.1)
    assert psnr["best_switching"] == "a x1 > b x1" and psnr["gain"] == pytest.approx(0.5)
    se = 0.2 / math.sqrt(2) / math.sqrt(2)  # stdev of two values 0.2 apart, over sqrt(2)
    assert psnr["z"] == pytest.approx(0.5 / math.hypot(se, se))
    assert psnr["static_spread"] == pytest.approx(1.0) and psnr["noise_se"] == pytest.approx(se)
    # NIQE: lower is better, so b is the best static and the switch loses 0.5
    assert niqe["best_static"] == "b x2" and niqe["best_static_value"] == pytest.approx(5.1)
    assert niqe["best_switching"] == "a x1 > b x1" and niqe["gain"] == pytest.approx(-0.5)


def test_the_screen_trains_every_sequence_keeps_every_crop_and_summarizes(tmp_path: Path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE.replace("seeds = [0]\nmetrics", "seeds = [0, 1]\nmetrics"), encoding="utf-8")
    out = tmp_path / "screen.json"
    assert screen.main([f"--suite={path}", f"--out={out}", "--switching"]) == 0
    saved = json.loads(out.read_text())
    assert [u["seed"] for u in saved["units"]] == [0, 1]
    unit = saved["units"][0]
    assert list(unit["sequences"]) == ["pixel x2", "structure x2", "pixel x1 > structure x1", "structure x1 > pixel x1"]
    stage = unit["sequences"]["pixel x2"][1]
    assert len(stage["val"]["psnr"]) == 2 and len(stage["test"]["ssim"]) == 2  # every crop, both splits
    first, second = (u["sequences"]["pixel x2"][1]["test"]["psnr"] for u in saved["units"])
    assert first != second  # two replicates, different training noise
    capsys.readouterr()
    assert screen.main([f"--summary={out}"]) == 0
    printed = capsys.readouterr().out
    assert "== psnr after 2 stages" in printed and "best switch" in printed and "val/test rho by depth" in printed


def test_the_screen_refuses_bad_arguments(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        screen.main(["--workers=0"])
    assert "--workers 0" in capsys.readouterr().err
