"""``lossagent bench`` on a table replay: runs in microseconds per step, and the report
scores every agent against the oracle on the test split."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import lossagent_env  # noqa: F401
from benchmarks.cli import main
from benchmarks.results import read_rows
from benchmarks.runner import run_suite
from benchmarks.suite import SuiteError, load_suite, load_suite_text

SUITE = """\
name = "tabular-test"
seeds = [123, 456]
objectives = ["psnr", {{ ssim = 1.0, piqe = 0.1 }}]

[env]
id = "LossAgent/Tabular-v0"
kwargs = {{ table = "{table}" }}

[budget]
max_stages = 2
stage_iters = 2

[[agents]]
name = "fixed"

[[agents]]
name = "random"

[[agents]]
name = "ucb"
{extra}
"""

PPO = """
[[agents]]
name = "ppo"
kwargs = { train_steps = 256, n_steps = 32, train_seeds = [123] }
"""


def _suite_file(tmp_path: Path, table: Path, extra: str = "") -> Path:
    path = tmp_path / "tabular_test.toml"
    path.write_text(SUITE.format(table=table, extra=extra))
    return path


def test_bench_on_a_table_scores_against_the_oracle(small_table, tmp_path, capsys):
    extra = PPO if __import__("importlib").util.find_spec("stable_baselines3") else ""
    out = tmp_path / "bench"
    assert main(["bench", "--suite", str(_suite_file(tmp_path, small_table["path"], extra)), "--out", str(out)]) == 0
    rows = read_rows(out / "results.jsonl")
    agents = 4 if extra else 3
    assert len(rows) == agents * 2 * 2 * 2  # agents x objectives x seeds x stages
    assert all(row["preset"] in ("pixel", "structure", "edges") for row in rows)
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["iqm"]) == {"fixed", "random", "ucb", *(["ppo"] if extra else [])}
    assert {c["objective"] for c in scores["cells"]} == {"psnr", "ssim+0.1piqe"}
    for run in scores["runs"]:  # on validation no agent ends above the oracle
        cell = next(c for c in scores["cells"] if (c["objective"], c["seed"]) == (run["objective"], run["seed"]))
        assert run["J_val"] <= cell["J_oracle_val"] + 1e-12
        env = gym.make("LossAgent/Tabular-v0", table=str(small_table["path"]),
                       objective="psnr" if run["objective"] == "psnr" else {"ssim": 1.0, "piqe": 0.1})
        indices = [env.unwrapped.preset_names.index(p) for p in run["presets"]]
        assert run["J"] == env.unwrapped.final_objective(indices, split="test", seed=run["seed"])
    fixed = [r for r in scores["runs"] if r["agent"] == "fixed" and r["normalized"] is not None]
    assert all(r["normalized"] == 0.0 for r in fixed)  # fixed plays the reference preset
    report = (out / "report.md").read_text()
    assert "| **oracle** |" in report and "Value of scheduling" in report
    # the value of scheduling on replicate means (the table's seeds), with its band
    assert set(scores["scheduling"]) == {"psnr", "ssim+0.1piqe"}
    expected = gym.make("LossAgent/Tabular-v0", table=str(small_table["path"]), objective="psnr",
                        max_stages=2).unwrapped.oracle_on_means()
    assert scores["scheduling"]["psnr"]["presets"] == expected["presets"]
    assert scores["scheduling"]["psnr"]["value"]["test"] == list(expected["value"]["test"])
    assert "Does scheduling beat the best static preset, beyond noise?" in report
    assert f"| psnr | {' > '.join(expected['presets'])} | {expected['best_static']['preset']} |" in report
    assert "IQM normalized score" in report
    assert (out / "plots" / "tabular__normalized_score.png").is_file()


def test_a_tabular_suite_checks_its_seeds_and_metrics(small_table, tmp_path):
    table = small_table["path"]
    with pytest.raises(SuiteError, match=r"seeds \[7\] are not in the table"):
        load_suite_text(SUITE.format(table=table, extra="").replace("[123, 456]", "[123, 7]"))
    with pytest.raises(SuiteError, match="Metric 'niqe' is not in the table's panel"):
        load_suite_text(SUITE.format(table=table, extra="").replace('"psnr", {', '"niqe", {'))
    with pytest.raises(SuiteError, match="Did you mean 'table'"):
        load_suite_text(SUITE.format(table=table, extra="").replace("kwargs = { table", "kwargs = { tabel"))


def test_run_on_a_table(small_table, capsys):
    table = str(small_table["path"])
    assert main(["run", "--env", "LossAgent/Tabular-v0", "--set", f'table="{table}"', "--agent", "ucb",
                 "--stages", "2", "--seed", "456"]) == 0
    assert "ucb on LossAgent/Tabular-v0 (psnr), seed 456: final J" in capsys.readouterr().out
    assert main(["run", "--env", "LossAgent/Tabular-v0", "--set", f'table="{table}"', "--stages", "3",
                 "--seed", "456"]) == 2
    assert "Allowed: an integer in [1, 2]" in capsys.readouterr().err


@pytest.mark.parametrize(
    "old, new, key, expected",
    [
        ("stage_iters = 2", "stage_iters = 5", "budget.stage_iters", "built with 2 iterations per stage"),
        ('table = "{table}" }', 'table = "{table}", device = "cuda" }', "env.kwargs.device",
         "the table fixes every other env setting"),
        ('name = "tabular-test"', 'name = "tabular-test"\nrequires_data = true', "requires_data",
         "a table replay reads no images"),
    ],
    ids=["stage-iters", "device", "data"],
)
@pytest.mark.parametrize("check_names", [True, False], ids=["load", "run"])
def test_a_tabular_suite_refuses_what_the_table_fixes(old, new, key, expected, check_names, small_table, tmp_path):
    table = small_table["path"]
    old, new = (x.replace("{table}", str(table)) for x in (old, new))
    text = SUITE.format(table=table, extra="")
    assert old in text
    text = text.replace(old, new)
    path = tmp_path / "fixed_by_table.toml"
    path.write_text(text)
    with pytest.raises(SuiteError) as info:
        suite = load_suite(path, check_names=check_names)
        run_suite(suite, tmp_path / "out")  # checks the values before creating anything
    error = info.value
    assert error.key == key and error.file == str(path) and expected in str(error)
    line = next(i for i, line in enumerate(text.splitlines(), start=1) if new.split("\n")[-1].split(" = ")[0] in line)
    assert error.line == line
    assert not (tmp_path / "out").exists()


INSTANCES_SUITE = """\
name = "instances-test"
seeds = [0, 1, 2, 3]
objectives = ["psnr", "ssim"]

[env]
id = "LossAgent/Tabular-v0"
kwargs = {{ table = "{table}", instances = "test" }}

[budget]
max_stages = 2
stage_iters = 2

[[agents]]
name = "fixed"

[[agents]]
name = "random"

[[agents]]
name = "ucb"
kwargs = {{ train_episodes = 20 }}

[[agents]]
name = "transfer"
"""


def test_bench_on_a_table_of_instances_scores_against_the_best_static_preset(instance_table, tmp_path):
    import sqlite3

    from lossagent_env.tabular import TabularEnv

    table = tmp_path / "instances.sqlite"
    table.write_bytes(instance_table["path"].read_bytes())
    db = sqlite3.connect(table)
    with db:  # on 'science', pixel then edges beats every static sequence on PSNR, beyond noise
        for seed, plus in ((4, 1.0), (5, 1.3)):
            db.execute(
                "UPDATE metrics SET value = value + ? WHERE metric = 'psnr' AND path = '0.1' AND seed = ?", (plus, seed)
            )
    db.close()
    suite = tmp_path / "instances.toml"
    suite.write_text(INSTANCES_SUITE.format(table=table))
    out = tmp_path / "bench"
    assert main(["bench", "--suite", str(suite), "--out", str(out)]) == 0

    rows = read_rows(out / "results.jsonl")
    assert {row["instance"] for row in rows} == {"science", "noisy"}
    budgets = {row["agent"]: row["budget"] for row in rows}
    assert budgets["fixed"] is None and budgets["random"] is None
    assert budgets["ucb"]["train_episodes"] == 20 and budgets["ucb"]["train_instances"] == ["photos", "scenes"]
    assert budgets["transfer"]["train_trees"] == [0, 1, 2, 3]

    scores = json.loads((out / "scores.json").read_text())
    assert scores["by_instance"] is True
    cells = {(c["objective"], c["instance"]): c for c in scores["cells"]}
    science = cells[("psnr", "science")]
    assert science["oracle"] == ["pixel", "edges"] and science["defined"] and science["z"] >= 3
    env = gym.make("LossAgent/Tabular-v0", table=str(table), objective="psnr", instances="test").unwrapped
    assert isinstance(env, TabularEnv)
    static = [env.preset_names.index(science["static"])] * 2
    j_static = sum(env.final_objective(static, "test", tree=t) for t in (4, 5)) / 2
    j_oracle = sum(env.final_objective([0, 1], "test", tree=t) for t in (4, 5)) / 2
    scored = [r for r in scores["runs"] if r["objective"] == "psnr" and r["instance"] == "science"]
    assert len(scored) == 8  # 4 agents x 2 seeds of this instance
    for run in scored:
        tree = env.tree_of(run["seed"])
        j = env.final_objective([env.preset_names.index(p) for p in run["presets"]], "test", tree=tree)
        assert run["normalized"] == pytest.approx((j - j_static) / (j_oracle - j_static))
        assert run["gain_vs_static"] == pytest.approx(j - env.final_objective(static, "test", tree=tree))
    unscored = [r for r in scores["runs"] if not cells[(r["objective"], r["instance"])]["defined"]]
    assert unscored and all(r["normalized"] is None for r in unscored)
    assert scores["admission"]["psnr"]["admitted"] and scores["admission"]["psnr"]["beyond_noise"] >= 1
    assert set(scores["iqm"]) == {"fixed", "random", "ucb", "transfer"}
    assert set(scores["iqm_by_objective"]) <= {o for o, a in scores["admission"].items() if a["admitted"]}

    report = (out / "report.md").read_text()
    for heading in ("Does anyone beat the best static preset, beyond noise?", "the admission rule",
                    "The value of scheduling, per test instance", "Each agent against the best static preset",
                    "IQM of the normalized scores", "Training budgets"):
        assert heading in report
    assert "| ucb | on test frozen, train episodes 20, train instances photos, scenes, train steps 40 |" in report
