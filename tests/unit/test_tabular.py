"""Tabular replay: the table file, LossAgent/Tabular-v0 against the live env, the oracle,
the test split, and the [table] section of suite files."""

from __future__ import annotations

import itertools
import json
import os
import platform
import re
import sqlite3
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env, data_equivalence

import lossagent_env  # noqa: F401  (registers the env ids)
from benchmarks.cli import main as lossagent
from benchmarks.execution.tabulate import TabulateError, table_spec_from_text, tabulate
from benchmarks.suites.suite import SuiteError
from lossagent_env.data import eval_crop_positions, heldout_crop_positions, load_dataset
from lossagent_env.objectives import CompositeObjective, MetricObjective
from lossagent_env.tabular import TableAnalysis, load_table
from lossagent_env.wrappers import PresetActions
from tests.conftest import SMALL_TABLE_TOML

OBJECTIVES = {
    "psnr": "psnr",
    "ssim+0.1piqe": {"ssim": 1.0, "piqe": 0.1},
    # weights that are not powers of two, so a different order of operations rounds
    # differently; a part with two metrics, so the prefixed names are exercised
    "composite": lambda: CompositeObjective(
        {"psnr": 0.3, MetricObjective({"ssim": 1.0, "piqe": 0.1}): 0.7}
    ),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The table was built with torch.set_num_threads(1) (its header's torch_threads);
    # float32 reductions depend on the thread count, so the live env must run with the
    # same count for bit-equal results.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def table(small_table):
    return load_table(small_table["path"])


def objective(name):
    spec = OBJECTIVES[name]
    return spec() if callable(spec) else spec


def live_env(table, spec, max_stages=None):
    header = table.header
    env = gym.make(
        header["env_id"], **header["env_kwargs"], objective=spec,
        max_stages=max_stages or header["stages"],
    )
    return PresetActions(env, dict(zip(table.preset_names, table.preset_weights)))


def replay_env(small_table, spec, **kwargs):
    return gym.make("LossAgent/Tabular-v0", table=str(small_table["path"]), objective=spec, **kwargs)


def assert_same(replayed, live):
    """Observation (arrays: same dtype, array_equal), reward, flags and info (floats ==)."""
    assert data_equivalence(replayed, live, exact=True), (replayed, live)
    assert list(replayed[-1]) == list(live[-1])  # the same info keys, in the same order


# ------------------------------------------------------------------ the file


def test_the_file_is_plain_sqlite_with_every_node(small_table, table):
    db = sqlite3.connect(small_table["path"])
    header = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM header")}
    k, stages, seeds = 3, 2, [123, 456]
    assert header["format"] == "lossagent-table" and header["format_version"] == 1
    assert [p["name"] for p in header["presets"]] == ["pixel", "structure", "edges"]
    assert header["presets"][2]["weights"] == [1.0, 0.0, 0.5]
    assert header["metrics"] == ["psnr", "ssim", "piqe"] and header["seeds"] == seeds
    assert header["stages"] == stages and header["torch_threads"] == 1
    assert header["env_config"]["stage_iters"] == 2 and header["env_config"]["max_stages"] == 2
    assert set(header["versions"]) == {"python", "torch", "numpy", "pyiqa", "gymnasium", "lossagent_env"}
    machine = header["build"]["machine"]  # where it was built: bit-equal replays hold only there
    assert set(machine) == {"cpu", "arch", "simd", "cores", "torch_cpu_capability"}
    assert machine["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["arch"] == platform.machine() and machine["cores"] == os.cpu_count()
    nodes = db.execute("SELECT seed, path, depth FROM nodes ORDER BY seed, depth, path").fetchall()
    paths = [""] + [str(a) for a in range(k)] + [f"{a}.{b}" for a in range(k) for b in range(k)]
    assert nodes == [(s, p, p.count(".") + (p != "")) for s in seeds for p in paths]
    count = db.execute("SELECT COUNT(*) FROM metrics WHERE split = 'test'").fetchone()[0]
    assert count == len(nodes) * 3
    assert db.execute("SELECT COUNT(*) FROM units").fetchone()[0] == len(seeds) * k
    assert table.values["val"].shape == (2, 13, 3) and not np.isnan(table.values["test"]).any()


# ------------------------------------------------------------------ replay == live


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_replay_equals_the_live_env_on_every_action_sequence(small_table, table, name):
    replay, live = replay_env(small_table, objective(name)), live_env(table, objective(name))
    assert replay.observation_space == live.observation_space
    assert replay.action_space == live.action_space
    for seed in table.seeds:
        for actions in itertools.product(range(3), repeat=2):
            assert_same(replay.reset(seed=seed), live.reset(seed=seed))
            assert replay.unwrapped.timings["train_seconds"] == 0.0
            for action in actions:
                assert_same(replay.step(action), live.step(action))
            node = table.node_index(actions)
            s = table.seeds.index(seed)
            assert replay.unwrapped.timings == {
                "train_seconds": table.train_seconds[s, node],
                "eval_seconds": table.eval_seconds[s, node],
            }


def test_a_shorter_episode_equals_the_live_env_with_that_max_stages(small_table, table):
    replay = replay_env(small_table, "ssim", max_stages=1)
    live = live_env(table, "ssim", max_stages=1)
    assert_same(replay.reset(seed=456), live.reset(seed=456))
    out = replay.step(2)
    assert out[3] is True  # truncated after max_stages
    assert_same(out, live.step(2))


def test_a_diverged_stage_replays_as_the_live_env_reports_it(small_table):
    # A learning rate of 1e30 makes every training stage diverge (checked below), so the
    # penalty, the carried metrics and the reference J are compared against the live env.
    folder = small_table["path"].parent
    suite = folder / "diverging.toml"
    text = SMALL_TABLE_TOML.replace("stage_iters = 2,", "stage_iters = 2, lr = 1e30,")
    text = text.replace("seeds = [123, 456]", "seeds = [0]").replace("edges = [1.0, 0.0, 0.5]\n", "")
    suite.write_text(text)
    tabulate(suite, folder / "diverging.sqlite", progress=False)
    table = load_table(folder / "diverging.sqlite")
    assert table.diverged[0, 1:].all(), "lr=1e30 should make every stage diverge"
    replay = replay_env({"path": folder / "diverging.sqlite"}, "psnr")
    live = live_env(table, "psnr")
    for actions in itertools.product(range(2), repeat=2):
        assert_same(replay.reset(seed=0), live.reset(seed=0))
        for action in actions:
            out = replay.step(action)
            assert_same(out, live.step(action))
            assert out[1] == -1.0 and out[-1]["diverged"] is True


def test_check_env_passes_without_warnings(small_table):
    env = replay_env(small_table, {"psnr": 1.0, "piqe": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_a_callable_over_panel_metrics_is_one_metric(small_table, table):
    def fidelity(metrics):
        return metrics["psnr"] + 10 * metrics["ssim"]

    env = replay_env(small_table, fidelity)
    obs, info = env.reset(seed=123)
    psnr, ssim, _ = table.values["val"][0, 0]
    assert info["metrics"] == {"fidelity": psnr + 10 * ssim} and info["objective"] == psnr + 10 * ssim
    assert list(obs["metrics"]) == ["fidelity"]
    _, reward, _, _, info = env.step(1)
    psnr1, ssim1, _ = table.values["val"][0, 2]
    assert reward == (psnr1 + 10 * ssim1) - (psnr + 10 * ssim)


def test_reset_without_a_seed_draws_one_of_the_given_seeds(small_table):
    env = replay_env(small_table, "psnr", seeds=[456])
    for _ in range(5):
        env.reset()
        assert env.unwrapped.table_seed == 456


# ------------------------------------------------------------------ oracle


@pytest.mark.parametrize("name", ["psnr", "ssim+0.1piqe"])
def test_the_oracle_is_the_best_sequence_and_the_live_env_reaches_it(small_table, table, name):
    replay = replay_env(small_table, objective(name))
    analysis = TableAnalysis(table, objective(name))
    for seed in table.seeds:
        oracle = analysis.oracle(seeds=[seed])
        finals = {}
        for actions in itertools.product(range(3), repeat=2):
            replay.reset(seed=seed)
            for action in actions:
                info = replay.step(action)[-1]
            finals[actions] = info["objective"]
        assert max(finals.values()) == oracle["final_objective"]
        assert finals[tuple(oracle["actions"])] == oracle["final_objective"]
        assert oracle["presets"] == [table.preset_names[a] for a in oracle["actions"]]
        static = {name: finals[(i, i)] for i, name in enumerate(table.preset_names)}
        best = max(static, key=static.get)
        assert oracle["best_static"] == {"preset": best, "final_objective": static[best]}

        live = live_env(table, objective(name))
        live.reset(seed=seed)
        for action in oracle["actions"]:
            info = live.step(action)[-1]
        assert info["objective"] == oracle["final_objective"]
        # the test split: J of the live network measured on the held-out crops
        measured = live.unwrapped.measure(objective(name), split="test")["objective"]
        assert analysis.values([seed], oracle["actions"], "test")[0] == measured
        assert analysis.values([seed], oracle["actions"], "val")[0] == info["objective"]


def test_the_oracle_of_a_shorter_episode_searches_that_depth(small_table, table):
    oracle = TableAnalysis(table, "psnr", max_stages=1).oracle(seeds=[123])
    depth1 = table.values["val"][0, 1:4, 0]
    assert oracle["actions"] == [int(np.argmax(depth1))]
    assert oracle["final_objective"] == depth1.max()


# ------------------------------------------------------------------ errors


def test_a_pinned_seed_outside_the_table_names_the_table_seeds(small_table):
    env = replay_env(small_table, "psnr")
    env.reset(seed=7)  # any seed plays one of the table's trees (see "Starting State")
    assert env.unwrapped.table_seed in (123, 456)
    with pytest.raises(ValueError, match=r"Seed 7 is not in the table. Allowed: its seeds \[123, 456\]"):
        TableAnalysis(small_table["path"], "psnr").oracle(seeds=[7])
    with pytest.raises(ValueError, match=r"Seed 5 is not in the table"):
        replay_env(small_table, "psnr", seeds=[123, 5])


@pytest.mark.parametrize(
    "spec",
    ["lpips", {"psnr": 1.0, "niqe": 1.0}, {"niqe": 1.0, "psnr": 1.0}, "no_such_metric"],
    ids=["name", "dict", "dict-first", "unknown"],
)
def test_a_metric_outside_the_panel_names_the_panel(small_table, spec):
    with pytest.raises(ValueError, match=r"is not in the table's panel. Allowed: the panel metrics \['psnr', 'ssim', 'piqe'\]"):
        replay_env(small_table, spec)


def test_a_composite_reading_outside_the_panel_names_the_panel(small_table):
    with pytest.raises(ValueError, match=r"Metric 'niqe' is not in the table's panel"):
        replay_env(small_table, CompositeObjective({"psnr": 1.0, "niqe": 1.0}))


def test_bad_arguments_and_actions_raise(small_table):
    with pytest.raises(ValueError, match=r"max_stages=3 is not allowed. Allowed: an integer in \[1, 2\]"):
        replay_env(small_table, "psnr", max_stages=3)
    with pytest.raises(FileNotFoundError, match="no shipped table of that name"):
        gym.make("LossAgent/Tabular-v0", table="no-such-table", objective="psnr")
    env = replay_env(small_table, "psnr")
    env.reset(seed=123)
    with pytest.raises(ValueError, match=r"Allowed: an integer in \[0, 3\)"):
        env.step(3)
    env.step(0)
    env.step(0)
    with pytest.raises(gym.error.ResetNeeded, match="truncated after max_stages=2 stages"):
        env.step(0)
    with pytest.raises(ValueError, match="3 actions given; the table holds 2 stages"):
        TableAnalysis(small_table["path"], "psnr").values([123], [0, 0, 0], "test")


# ------------------------------------------------------------------ test split, measure


def test_the_test_crops_overlap_no_validation_crop():
    images = load_dataset("skimage")
    for count, size in [(2, 64), (4, 96), (9, 48)]:
        val = eval_crop_positions(images, count, size, 2)
        test = heldout_crop_positions(images, count, size, 2)
        assert len(test) == count and len(set(test)) == count
        for i, y, x in test:
            assert all(j != i or abs(y - ty) >= size or abs(x - tx) >= size for j, ty, tx in val)
    with pytest.raises(ValueError, match="room for 0 test crops of side 300"):
        heldout_crop_positions(images, 3, 300, 2)


def test_measure_changes_nothing(tiny_kwargs):
    measured, plain = (gym.make("LossAgent/SuperResolution-v0", **tiny_kwargs) for _ in range(2))
    action = np.full(len(measured.unwrapped.loss_names), 0.5, np.float32)
    measured.reset(seed=0)
    plain.reset(seed=0)
    info = measured.step(action)[-1]
    plain.step(action)
    test = measured.unwrapped.measure({"psnr": 1.0, "ssim": 1.0}, split="test")
    val = measured.unwrapped.measure("psnr", split="val")
    assert val["metrics"] == info["metrics"] and val["loss_values"] == info["loss_values"]
    assert test["metrics"]["psnr"] != info["metrics"]["psnr"]  # other crops
    assert data_equivalence(measured.step(action), plain.step(action), exact=True)
    with pytest.raises(ValueError, match="split='train' is not supported"):
        measured.unwrapped.measure("psnr", split="train")


# ------------------------------------------------------------------ [table] and tabulate


@pytest.mark.parametrize(
    ("edit", "key", "match"),
    [
        (("stages = 2", "stage = 2"), "table.stage", "No key named 'stage'. Did you mean 'stages'?"),
        (("pixel = { l1 = 1.0 }", "pixel = { l2 = 1.0 }"), "table.presets.pixel", "No loss named 'l2'"),
        (("edges = [1.0, 0.0, 0.5]", "edges = [1.0, 0.5]"), "table.presets.edges", "has 2 weights"),
        (('"piqe"]', '"piqee"]'), "table.metrics[2]", "No metric named 'piqee'"),
        (("device = \"cpu\"", "max_stages = 3"), "table.env.kwargs.max_stages", "set by the table"),
        (("seeds = [123, 456]", "seeds = [0, 0]"), "table.seeds", "repeated: [0]"),
        (("[table", "[tables"), "table", "no [table] section"),
    ],
    ids=["unknown-key", "unknown-loss", "length", "unknown-metric", "reserved", "seeds", "no-table"],
)
def test_a_bad_table_section_names_file_line_and_key(edit, key, match):
    text = SMALL_TABLE_TOML.replace(*edit)
    assert text != SMALL_TABLE_TOML
    with pytest.raises(SuiteError, match=rf"^small.toml(:[0-9]+)?: key {re.escape(repr(key))}") as info:
        table_spec_from_text(text, source="small.toml")
    assert match in str(info.value)


def test_a_table_is_never_overwritten_nor_resumed_with_another_spec(small_table, tmp_path):
    with pytest.raises(TabulateError, match="already exists. Pass --resume"):
        tabulate(small_table["suite"], small_table["path"], progress=False)
    other = table_spec_from_text(SMALL_TABLE_TOML.replace("stage_iters = 2", "stage_iters = 3"))
    with pytest.raises(TabulateError, match=r"table header differs from this one in \['env_config', 'env_kwargs'\]"):
        tabulate(other, small_table["path"], resume=True, progress=False)
    result = tabulate(small_table["suite"], small_table["path"], resume=True, progress=False)
    assert (result.units, result.skipped, result.computed) == (6, 6, 0)


def test_the_command_line_reports_errors_with_exit_status_2(small_table, tmp_path, capsys):
    assert lossagent(["tabulate", "--suite", str(tmp_path / "none.toml"), "--out", str(tmp_path / "t.sqlite")]) == 2
    assert "none.toml' does not exist" in capsys.readouterr().err
    assert lossagent(["tabulate", "--suite", str(small_table["suite"]), "--out", str(small_table["path"])]) == 2
    assert "already exists. Pass --resume" in capsys.readouterr().err


def test_a_table_being_built_is_locked(small_table, tmp_path):
    from benchmarks.errors import BenchmarkError
    from benchmarks.execution.output import OutputLock

    out = tmp_path / "locked.sqlite"
    with OutputLock.for_file(out, "lossagent tabulate"):
        with pytest.raises(BenchmarkError, match="locked.sqlite' is in use by lossagent tabulate"):
            tabulate(small_table["suite"], out, progress=False)
    assert not out.exists()


def test_a_shipped_table_suite_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    from benchmarks.execution.tabulate import load_table_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tabular").mkdir()  # a folder named like the shipped suite
    assert load_table_spec("tabular").stages == 4


def test_a_build_that_stores_no_unit_removes_its_new_file(tmp_path, monkeypatch):
    import benchmarks.execution.tabulate as tabulate_module
    from benchmarks.execution.tabulate import UnitsFailedError

    def broken(spec, seed, first, on_node=None):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tabulate_module, "compute_unit", broken)
    out = tmp_path / "t.sqlite"
    with pytest.raises(UnitsFailedError, match="6 of 6 units failed .nothing was stored") as info:
        tabulate(table_spec_from_text(SMALL_TABLE_TOML), out, progress=False)
    assert [(f.seed, f.first) for f in info.value.failures][:2] == [(123, 0), (123, 1)]
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ oracle on replicate means
@pytest.mark.parametrize("objective", ["psnr", "piqe"])
def test_the_oracle_on_replicate_means_matches_brute_force_over_every_sequence(objective):
    import statistics

    analysis = TableAnalysis("smoke", objective, max_stages=2)
    seeds = [3, 4, 5, 6, 7]
    k = len(analysis.preset_names)
    sequences = list(itertools.product(range(k), repeat=2))
    j = {q: [float(v) for v in analysis.values(seeds, q, "val")] for q in sequences}
    best = max(sequences, key=lambda q: (statistics.fmean(j[q]), [-a for a in q]))
    static = max(range(k), key=lambda p: (statistics.fmean(j[(p, p)]), -p))
    result = analysis.oracle(seeds=seeds)
    assert tuple(result["actions"]) == best
    assert result["final_objective"] == pytest.approx(statistics.fmean(j[best]), abs=1e-12)
    assert result["best_static"]["preset"] == analysis.preset_names[static]
    expectation = analysis.random_expectation(seeds, "test")
    for i, seed in enumerate(seeds):
        every = [analysis.values([seed], q, "test")[0] for q in sequences]
        assert expectation[i] == pytest.approx(statistics.fmean(every), abs=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": [3, 99]}, "Seed 99 is not in the table"),
    ({"seeds": []}, "is empty"),
    ({}, "give one"),
    ({"instance": "nope"}, "no instance 'nope'"),
])
def test_the_oracle_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TableAnalysis("smoke", "psnr", max_stages=2).oracle(**kwargs)
