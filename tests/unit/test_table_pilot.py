"""Before a table is built: the node-cost benchmark and the pilot of preset sequences."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import pilot
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


def test_pilot_sequences_are_statics_then_half_switches():
    seqs = pilot.sequences(["a", "b", "c"], 4)
    assert list(seqs)[:3] == ["a x4", "b x4", "c x4"] and seqs["b x4"] == (1, 1, 1, 1)
    assert seqs["c x2 > a x2"] == (2, 2, 0, 0) and len(seqs) == 3 + 6


def test_pilot_summary_takes_each_metric_direction():
    results = {
        "a x2": {"psnr": [30.0, 30.2], "niqe": [6.0, 6.2]},
        "b x2": {"psnr": [29.0, 29.2], "niqe": [5.0, 5.2]},
        "a x1 > b x1": {"psnr": [30.5, 30.7], "niqe": [5.5, 5.7]},
        "b x1 > a x1": {"psnr": [28.0, 28.2], "niqe": [7.0, 7.2]},
    }
    psnr, niqe = pilot.summarize(results, ["psnr", "niqe"])
    assert psnr["best_static"] == "a x2" and psnr["best_static_value"] == pytest.approx(30.1)
    assert psnr["best_switching"] == "a x1 > b x1" and psnr["gain"] == pytest.approx(0.5)
    se = 0.2 / math.sqrt(2) / math.sqrt(2)  # stdev of two values 0.2 apart, over sqrt(2)
    assert psnr["z"] == pytest.approx(0.5 / math.hypot(se, se))
    assert psnr["static_spread"] == pytest.approx(1.0) and psnr["noise_se"] == pytest.approx(se)
    # NIQE: lower is better, so b is the best static and the switch loses 0.5
    assert niqe["best_static"] == "b x2" and niqe["best_static_value"] == pytest.approx(5.1)
    assert niqe["best_switching"] == "a x1 > b x1" and niqe["gain"] == pytest.approx(-0.5)


def test_pilot_runs_a_tiny_table_and_saves_every_replicate(tmp_path: Path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE, encoding="utf-8")
    out = tmp_path / "pilot.json"
    assert pilot.main([f"--suite={path}", "--stages=2", "--replicates=2", "--instance={}",
                       '--instance={"eval_images": 1}', f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("instance ") == 2 and "best static" in printed and "z = " in printed
    saved = json.loads(out.read_text())
    assert [entry["instance"] for entry in saved] == [{}, {"eval_images": 1}]
    values = saved[0]["results"]["pixel x2"]["psnr"]
    assert len(values) == 2 and values[0] != values[1]  # two replicates, different training noise


@pytest.mark.parametrize("argv, message", [
    (["--stages=1"], "both must be >= 2"),
    (["--instance=[1]"], "Allowed: a JSON object"),
    (["--instance={"], "is not JSON"),
    (["--presets=pixel,nope"], "are not in the table"),
])
def test_pilot_refuses_bad_arguments(argv, message, tmp_path: Path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE, encoding="utf-8")
    with pytest.raises(SystemExit):
        pilot.main([f"--suite={path}", *argv])
    assert message in capsys.readouterr().err
