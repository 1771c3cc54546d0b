"""``lossagent tabulate --verify``: live training here against a table, in units of the
spread of its seeds (replicates)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from lossagent_env.tabular.check import band, check_against_live


def test_a_table_built_here_agrees_bit_for_bit(small_table):
    """On the machine (and code) that built a table, live training gives its very values."""
    checks = check_against_live(small_table["path"], samples=2, seed=1)
    assert len(checks) == 2
    for check in checks:
        assert len(check.presets) == 2 and check.seed in (123, 456)
        assert {(r["split"], r["metric"]) for r in check.rows} == {
            (s, m) for s in ("val", "test") for m in ("psnr", "ssim", "piqe")
        }
        assert all(r["live"] == r["table"] and r["distance"] == 0.0 for r in check.rows), check.rows
        assert check.inside and check.distance == 0.0


def test_distances_are_in_standard_deviations_over_the_seeds(small_table, monkeypatch):
    import lossagent_env.tabular.check as check_module

    stock = check_module.make_build_env

    def shifted(spec, seed=None):  # a "machine" whose PSNR reads 0.5 dB higher than the table's
        env = stock(spec, seed)
        live = env.unwrapped
        measure = live.measure

        def measure_shifted(objective, split="test"):
            out = measure(objective, split=split)
            out["metrics"] = {**out["metrics"], "psnr": out["metrics"]["psnr"] + 0.5}
            return out

        live.measure = measure_shifted
        return env

    monkeypatch.setattr(check_module, "make_build_env", shifted)
    (check,) = check_against_live(small_table["path"], samples=1, stages=1, seed=2)
    row = next(r for r in check.rows if (r["split"], r["metric"]) == ("test", "psnr"))
    assert row["live"] == pytest.approx(row["table"] + 0.5)
    assert row["distance"] == pytest.approx(0.5 / (math.sqrt(2) * row["sd"])) and row["sd"] > 0
    assert check.band == band(2)  # two replicates: Student's t on 1 degree of freedom
    assert check.distance == row["distance"] and check.inside == (row["distance"] <= check.band)


def test_the_band_is_students_t_on_the_replicates_degrees_of_freedom():
    from scipy.stats import t

    assert band(3) == pytest.approx(t.ppf(1 - 0.0027 / 2, 2)) and band(3) > 19
    assert band(5) == pytest.approx(t.ppf(1 - 0.0027 / 2, 4))
    assert band(10**6) == pytest.approx(3.0, abs=1e-3)  # a normal's 3 sd with many replicates
    with pytest.raises(ValueError, match="at least two"):
        band(1)


@pytest.mark.parametrize("kwargs, message", [
    ({"samples": 0}, "samples=0 is not allowed"),
    ({"stages": 3}, r"stages=3 is not allowed. Allowed: an integer in \[1, 2\]"),
])
def test_bad_arguments_name_the_value(small_table, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_against_live(small_table["path"], **kwargs)


def test_the_shipped_table_agrees_within_its_band_here(torch_home):
    """The command a user runs on a new machine: one short sequence of the shipped table
    ``lossbench``, trained live, lies within the band of its instance's replicates (bit
    for bit on the machine that built it; within the band elsewhere)."""
    env = {**os.environ, "TORCH_HOME": str(torch_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "tabulate", "--verify", "lossbench", "--samples", "1", "--stages", "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 1 live sequences inside the band" in done.stdout
    distance = float(done.stdout.split("largest distance ")[1].split(" ")[0])
    assert math.isfinite(distance) and distance <= band(3)  # lossbench: 3 replicates


def test_verify_refuses_build_options():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "tabulate", "--verify", "smoke", "--workers", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "leave out --workers" in done.stderr
