"""``lossagent bench`` on a table replay: runs in microseconds per step, and the report
scores every run on the test split of its instance, against references per replicate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lossagent_env  # noqa: F401
from benchmarks.cli import main
from benchmarks.execution.results import read_rows
from benchmarks.runner import run_suite
from benchmarks.suites.suite import SuiteError, load_suite, load_suite_text

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


def test_bench_on_a_table_scores_every_run_on_test(small_table, tmp_path, capsys):
    from lossagent_env.tabular import TableAnalysis

    extra = PPO if __import__("importlib").util.find_spec("stable_baselines3") else ""
    out = tmp_path / "bench"
    assert main(["bench", "--suite", str(_suite_file(tmp_path, small_table["path"], extra)), "--out", str(out)]) == 0
    rows = read_rows(out / "results.jsonl")
    agents = 4 if extra else 3
    assert len(rows) == agents * 2 * 2 * 2  # agents x objectives x seeds x stages
    assert all(row["preset"] in ("pixel", "structure", "edges") for row in rows)
    scores = json.loads((out / "scores.json").read_text())
    assert {(c["objective"], c["instance"]) for c in scores["cells"]} == {("psnr", "default"), ("ssim+0.1piqe", "default")}
    specs = {"psnr": "psnr", "ssim+0.1piqe": {"ssim": 1.0, "piqe": 0.1}}
    plays = scores["plays"]
    for entry in scores["agents"]:  # each agent's test J per tree is the table's, for what it played
        analysis = TableAnalysis(small_table["path"], specs[entry["objective"]], max_stages=2)
        for seed in (123, 456):
            presets = plays[entry["agent"]][f"tuned/{entry['objective']}/{seed}"]
            indices = [analysis.preset_names.index(p) for p in presets]
            assert entry["J"][str(seed)] == analysis.values([seed], indices, "test")[0]
            # on validation no agent ends above the oracle of its tree
            assert analysis.values([seed], indices, "val")[0] <= analysis.oracle(seeds=[seed])["final_objective"]
    fixed = [e for e in scores["agents"] if e["agent"] == "fixed"]
    assert all(e["gains"]["first"]["verdict"] == "identical" for e in fixed)  # fixed plays the first preset
    assert all("transferred" not in e["gains"] for e in scores["agents"])  # no training instance
    report = (out / "report.md").read_text()
    assert report.index("## Verdicts on the test instances") < report.index("- Runs:")
    assert "### Track: tuned objective" in report and "What the table says" in report


def test_a_tabular_suite_checks_its_seeds_and_metrics(small_table, tmp_path):
    table = small_table["path"]
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

[new_objective]
objectives = ["ssim"]
tune_on = "psnr"

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


def test_bench_on_a_table_of_instances_scores_each_test_instance_in_both_tracks(instance_table, tmp_path):
    import sqlite3

    import numpy as np

    from lossagent_env.tabular import TableAnalysis

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
    assert {row["objective"] for row in rows} == {"psnr", "ssim", "ssim.new"}
    budgets = {(row["agent"], row["objective"]): row["budget"] for row in rows}
    assert budgets[("fixed", "psnr")] is None and budgets[("random", "psnr")] is None
    ucb = budgets[("ucb", "psnr")]
    assert ucb["train_episodes"] == 20 and ucb["train_instances"] == ["photos", "scenes"]
    assert budgets[("transfer", "psnr")]["train_trees"] == [0, 1, 2, 3]

    scores = json.loads((out / "scores.json").read_text())
    cells = {(c["track"], c["objective"], c["instance"]): c for c in scores["cells"]}
    science = cells[("tuned", "psnr", "science")]
    analysis = TableAnalysis(table, "psnr", max_stages=2)
    assert science["presets"]["oracle"] == ["pixel", "edges"] == analysis.oracle(instance="science")["presets"]
    leaves = analysis.leaves([4, 5], "test")
    assert science["values"]["random"] == pytest.approx(leaves.mean(axis=1).tolist())
    assert science["values"]["oracle"] == pytest.approx(leaves[:, 1].tolist())  # pixel > edges
    assert science["scheduling"]["mean"] > 0
    entries = {(e["track"], e["objective"], e["instance"], e["agent"]): e for e in scores["agents"]}
    for agent in ("fixed", "random", "ucb", "transfer"):
        entry = entries[("tuned", "psnr", "science", agent)]
        j = np.array([entry["J"][str(t)] for t in (4, 5)])
        first = np.array(science["values"]["first"])
        assert entry["gains"]["first"]["mean"] == pytest.approx(float(np.mean(j - first)))
        rng = np.array(science["values"]["random"])
        span = float(np.mean(np.array(science["values"]["oracle"]) - rng))
        assert entry["score"]["mean"] == pytest.approx(float(np.mean(j - rng)) / span)
    # the new-objective track: scored on ssim, every budget tuned under psnr
    assert scores["tune_on"] == "psnr" and scores["objectives"]["new"] == ["ssim.new"]
    new_ucb = budgets[("ucb", "ssim.new")]
    assert new_ucb["train_episodes"] == 20
    assert ("new", "ssim.new", "science") in cells
    assert cells[("new", "ssim.new", "science")]["presets"]["transferred"] == cells[("tuned", "psnr", "science")]["presets"]["transferred"]

    report = (out / "report.md").read_text()
    for heading in ("## Verdicts on the test instances", "### Track: tuned objective", "### Track: new objective",
                    "What the table says", "Training budgets"):
        assert heading in report
    assert report.index("## Verdicts on the test instances") < report.index("## Run details")
    assert "| ucb | on test frozen, train episodes 20, train instances photos, scenes, train steps 40 |" in report


def test_a_table_of_one_tree_is_reported_with_no_test_instead_of_failing(tmp_path):
    """One replicate gives no noise band: the verdicts say "no test", and the report, every
    other section included, is written (it used to exit 2 after every run was done)."""
    from benchmarks.execution.tabulate import tabulate
    from tests.conftest import SMALL_TABLE_TOML

    suite = tmp_path / "one.toml"
    suite.write_text(SMALL_TABLE_TOML.replace("seeds = [123, 456]", "seeds = [0]"), encoding="utf-8")
    table = tmp_path / "one.sqlite"
    tabulate(suite, table, progress=False)
    bench = _suite_file(tmp_path, table).read_text().replace("seeds = [123, 456]", "seeds = [0]")
    (tmp_path / "bench.toml").write_text(bench)
    out = tmp_path / "bench"
    assert main(["bench", "--suite", str(tmp_path / "bench.toml"), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Verdicts on the test instances" in report and "no test" in report
    assert "## Objective: psnr" in report and "TensorBoard" in report
    assert main(["report", "--out", str(out)]) == 0
