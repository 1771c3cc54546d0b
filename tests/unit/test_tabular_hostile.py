"""LossAgent/Tabular-v0 and its table files under hostile or careless input: damaged
files, crafted headers and rows, bad argument types, seeds outside the table, and the
preset wrapper's spec."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence

import lossagent_env
from lossagent_env.registry import unknown_name_message
from lossagent_env.tabular import TableAnalysis, TableFormatError, read_table
from lossagent_env.tabular.replay import TABLES_DIR, shipped_tables
from lossagent_env.wrappers import PresetActions

ROOT = Path(__file__).resolve().parents[2]


def tabular(table, objective="psnr", **kwargs):
    return gym.make("LossAgent/Tabular-v0", table=str(table), objective=objective, **kwargs)


@pytest.fixture
def copy_of_small(small_table, tmp_path):
    """A private copy of the small table (K=3, T=2, seeds 123 and 456) to damage."""
    path = tmp_path / "copy.sqlite"
    shutil.copyfile(small_table["path"], path)
    return path


def edit(path: Path, *statements: str, params: tuple = ()) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("PRAGMA ignore_check_constraints = ON")
        for statement in statements:
            db.execute(statement, params if "?" in statement else ())
    db.close()


def set_header(path: Path, key: str, text: str) -> None:
    edit(path, "UPDATE header SET value = ? WHERE key = ?", params=(text, key))


# ------------------------------------------------------------------ damaged files


def test_a_damaged_page_is_one_table_error_naming_the_file(copy_of_small):
    nodes_page = sqlite3.connect(copy_of_small).execute(
        "SELECT rootpage FROM sqlite_schema WHERE name = 'nodes'"
    ).fetchone()[0]
    with open(copy_of_small, "r+b") as f:  # overwrite the nodes page; the header stays readable
        f.seek(4096 * (nodes_page - 1))
        f.write(b"\xab" * 4096)
    with pytest.raises(TableFormatError, match=r"'.*copy.sqlite' cannot be read \(DatabaseError: database disk image is malformed\)"):
        read_table(copy_of_small)


@pytest.mark.parametrize(
    ("key", "text", "match"),
    [
        ("presets", None, r"the header has no field 'presets'"),
        ("presets", "[{not json", r"header field 'presets' is not valid JSON"),
        ("presets", '[{"name": "pixel", "weights": [NaN, 0, 0]}]', r"header field 'presets\[0\]\.weights\[0\]' is nan: Input should be a finite number"),
        ("presets", '[{"name": "pixel", "weights": ["1.0", 0, 0]}]', r"header field 'presets\[0\]\.weights\[0\]' is '1.0': Input should be a valid number"),
        ("presets", '[{"name": "pixel", "weights": [1.5, 0, 0]}]', r"'presets\[0\]\.weights\[0\]' is 1.5: Input should be less than or equal to 1"),
        ("presets", '[{"name": "a", "weights": [1, 0]}]', r"header field 'presets\[0\]\.weights' has 2 weights; the table has 3 losses"),
        ("presets", '[{"name": "a", "weights": [1, 0, 0]}, {"name": "a", "weights": [0, 1, 0]}]', r"header field 'presets' repeats \['a'\]"),
        ("presets", "[]", r"header field 'presets' is \[\]: List should have at least 1 item"),
        ("stages", '"2"', r"header field 'stages' is '2': Input should be a valid integer"),
        ("stages", "true", r"header field 'stages' is True: Input should be a valid integer"),
        ("stages", "0", r"header field 'stages' is 0: Input should be greater than or equal to 1"),
        ("seeds", '["a", 456]', r"header field 'seeds\[0\]' is 'a': Input should be a valid integer"),
        ("seeds", "[-1, 456]", r"header field 'seeds\[0\]' is -1"),
        ("metrics", '["psnr", 3]', r"header field 'metrics\[1\]' is 3: Input should be a valid string"),
        ("losses", '[{"name": "l1", "scale": 1.0, "value_range": [1, 0]}]', r"header field 'losses\[0\]' .*low > high"),
        ("losses", '[{"name": "l1", "scale": 1.0}]', r"the header has no field 'losses\[0\]\.value_range'"),
        ("env_config", '"sr"', r"header field 'env_config' is 'sr'"),
        ("env_kwargs", '{"objective": "psnr"}', r"header field 'env_kwargs' sets \['objective'\], which a table fixes"),
        ("env_kwargs", '{"patch_size": "big"}', r"header field 'env_kwargs' is not a configuration of the live env \(EnvConfig.patch_size='big'"),
        ("env_kwargs", '{"no_such_field": 1}', r"header field 'env_kwargs' is not a configuration of the live env .*no_such_field"),
    ],
    ids=["no-presets", "not-json", "nan-weight", "text-weight", "weight-above-1", "weights-length",
         "repeated-preset", "no-preset", "text-stages", "bool-stages", "zero-stages", "text-seed",
         "negative-seed", "metric-number", "loss-range", "loss-no-range", "env-config",
         "env-kwargs-reserved", "env-kwargs-value", "env-kwargs-unknown"],
)
def test_a_crafted_header_names_the_file_and_the_field(copy_of_small, key, text, match):
    if text is None:
        edit(copy_of_small, "DELETE FROM header WHERE key = ?", params=(key,))
    else:
        set_header(copy_of_small, key, text)
    with pytest.raises(TableFormatError, match=match) as info:
        tabular(copy_of_small)
    assert str(info.value).startswith(f"Table {str(copy_of_small)!r}") or f"{str(copy_of_small.resolve())!r}" in str(info.value)


@pytest.mark.parametrize("stages", [9, 10**9])
def test_a_header_claiming_a_huge_tree_is_refused_before_any_allocation(copy_of_small, stages):
    set_header(copy_of_small, "stages", str(stages))
    tracemalloc.start()
    try:
        with pytest.raises(TableFormatError, match=r"header claims 2 seeds x \(1 \+ 3 \+ \.\.\. \+ 3\^.*the file holds 26 rows of nodes"):
            read_table(copy_of_small)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB allocated before the check"


def test_a_header_claiming_a_huge_panel_is_refused_before_any_allocation(copy_of_small):
    set_header(copy_of_small, "metrics", json.dumps([f"m{i}" for i in range(200_000)]))
    tracemalloc.start()
    try:
        with pytest.raises(TableFormatError, match=r"holds 156 rows of metrics; its 26 nodes need 10400000 \(header field 'metrics'\)"):
            read_table(copy_of_small)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB allocated before the check"


@pytest.mark.parametrize(
    ("statement", "match"),
    [
        ("UPDATE nodes SET path = '99' WHERE seed = 123 AND path = '2'",
         r"nodes row \(123, '99', 1, .*names seed 123 and path '99'; the header's seeds are \[123, 456\]"),
        ("UPDATE nodes SET seed = 99 WHERE seed = 123 AND path = '2'", r"nodes row \(99, '2', .*names seed 99"),
        ("UPDATE metrics SET value = 'abc' WHERE seed = 123 AND path = '1' AND split = 'val' AND metric = 'psnr'",
         r"metrics row \(123, '1', 'val', 'psnr', 'abc', 0\): column 'value' is 'abc': Input should be a valid number"),
        ("UPDATE metrics SET split = 'train' WHERE seed = 123 AND path = '1' AND metric = 'psnr' AND split = 'val'",
         r"column 'split' is 'train': Input should be 'val' or 'test'"),
        ("UPDATE losses SET value = 'x' WHERE seed = 456 AND path = '' AND loss = 'l1'", r"losses row \(456, '', 'l1', 'x'\): column 'value' is 'x'"),
        ("UPDATE nodes SET train_seconds = -1 WHERE seed = 456 AND path = '0'", r"column 'train_seconds' is -1.0: Input should be greater than or equal to 0"),
        ("UPDATE nodes SET depth = 2 WHERE seed = 456 AND path = '0'", r"nodes row \(456, '0', 2, .*column 'depth' is 2; path '0' has 1 presets"),
        ("UPDATE units SET nodes = 'many' WHERE seed = 456", r"units row \(456, 0, 'many'\): column 'nodes' is 'many'"),
        ("DELETE FROM metrics WHERE seed = 456 AND path = '0' AND metric = 'ssim' AND split = 'test'",
         r"holds 155 rows of metrics; its 26 nodes need 156 \(header field 'metrics'\)"),
        ("DROP TABLE losses", r"cannot be read \(OperationalError: no such table: losses\)"),
    ],
    ids=["unknown-path", "unknown-seed", "text-value", "unknown-split", "text-loss", "negative-seconds",
         "wrong-depth", "text-unit", "missing-value", "no-losses-table"],
)
def test_a_crafted_row_names_the_file_the_row_and_the_column(copy_of_small, statement, match):
    edit(copy_of_small, statement)
    with pytest.raises(TableFormatError, match=match) as info:
        read_table(copy_of_small)
    assert "copy.sqlite" in str(info.value)


def test_the_command_line_reports_a_damaged_table_in_one_line(copy_of_small):
    set_header(copy_of_small, "presets", '[{"name": "pixel", "weights": [NaN, 0, 0]}]')
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "run", "--env", "LossAgent/Tabular-v0",
         "--set", f"table={json.dumps(str(copy_of_small))}", "--agent", "random"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert "copy.sqlite" in lines[0] and "'presets[0].weights[0]' is nan" in lines[0]


def test_the_shipped_table_reads_as_before():
    table = read_table(TABLES_DIR / "smoke.sqlite")
    assert table.values["val"].shape == (13, 781, 4) and not np.isnan(table.values["val"]).any()
    assert table.preset_names == ("pixel", "structure", "edges", "adversarial", "mix")


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("seed", [True, np.bool_(False), 1.0, "1"])
def test_a_seed_that_is_not_an_integer_is_refused(seed):
    env = tabular("smoke")
    with pytest.raises(TypeError, match=rf"seed={seed!r} \({type(seed).__name__}\) is not a seed. Allowed: an integer >= 0"):
        env.reset(seed=seed)
    env.reset(seed=2)
    with pytest.raises(TypeError, match="is not a seed"):
        env.unwrapped.tree_of(seed)


@pytest.mark.parametrize(
    ("seeds", "error", "match"),
    [
        (3, TypeError, r"seeds=3 \(int\) is not allowed. Allowed: a non-empty list of the table's seeds \[0, 1, .*e.g. seeds=\[3\]"),
        ("12", TypeError, r"seeds='12' \(str\) is not allowed"),
        ({3: 1}, TypeError, r"seeds=\{3: 1\} \(dict\) is not allowed"),
        ([], ValueError, r"seeds=\[\] is empty: reset\(\) would have no seed to draw"),
        ([1, 1], ValueError, r"seeds=\[1, 1\] must be unique; repeated: \[1\]"),
        ([True], TypeError, r"seed=True \(bool\) is not a seed"),
        ([99], ValueError, r"Seed 99 is not in the table. Allowed: its seeds \[0, 1, 2"),
    ],
    ids=["int", "str", "dict", "empty", "repeated", "bool", "outside"],
)
def test_bad_seeds_are_refused_at_construction_naming_the_field(seeds, error, match):
    with pytest.raises(error, match=match):
        tabular("smoke", seeds=seeds)


def test_seeds_may_be_numpy_integers():
    env = tabular("smoke", seeds=np.array([4, 5]))
    assert env.unwrapped.seeds == (4, 5) and all(type(s) is int for s in env.unwrapped.seeds)
    env.reset()
    assert env.unwrapped.table_seed in (4, 5)


@pytest.mark.parametrize("table", [3, None, ["smoke"]], ids=["int", "none", "list"])
def test_a_table_of_the_wrong_type_is_refused(table):
    shipped = re.escape(repr(shipped_tables()))
    assert "'smoke'" in shipped and "'lossbench'" in shipped
    with pytest.raises(TypeError, match=rf"table={re.escape(repr(table))} .* is not allowed. Allowed: the path of a table file, or the name of a shipped table {shipped}"):
        gym.make("LossAgent/Tabular-v0", table=table, objective="psnr")


def test_a_directory_is_named_as_such(tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"table={str(tmp_path)!r} is a directory, not a table file"):
        tabular(tmp_path)


def test_a_shipped_name_wins_over_a_directory_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()
    assert tabular("smoke").unwrapped.table.stages == 4


@pytest.mark.parametrize("objective", [None, 3, ["psnr"]], ids=["none", "int", "list"])
def test_an_objective_a_table_cannot_replay_says_what_a_table_accepts(objective):
    with pytest.raises(ValueError, match=r"cannot be replayed from a table. Allowed: a panel metric name \(one of \['psnr', 'ssim', 'piqe', 'niqe'\]\)") as info:
        tabular("smoke", objective=objective)
    assert "restored" not in str(info.value)  # no function of the images: a table has none
    assert "f(metrics: dict[str, float]) -> float" in str(info.value)


def test_huge_objective_weights_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"Weights \{'psnr': 1e\+308, 'ssim': 1e\+308\} let \|J\| reach inf"):
        tabular("smoke", objective={"psnr": 1e308, "ssim": 1e308})


def test_env_id_suggestions_include_the_tabular_env():
    assert "LossAgent/Tabular-v0" in lossagent_env.ALL_ENV_IDS
    assert set(lossagent_env.ENV_IDS) < set(lossagent_env.ALL_ENV_IDS)
    assert all(env_id in gym.registry for env_id in lossagent_env.ALL_ENV_IDS)
    message = unknown_name_message("env id", "LossAgent/Tabular-v1", lossagent_env.ALL_ENV_IDS)
    assert "Did you mean 'LossAgent/Tabular-v0'?" in message


# ------------------------------------------------------------------ seeds outside the table


def test_check_env_passes_on_a_table_without_seeds_123_and_456():
    env = tabular("smoke", {"psnr": 1.0, "niqe": 0.5})
    assert not {123, 456} & set(env.unwrapped.table.seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_a_seed_outside_the_table_plays_a_table_seed_drawn_by_it():
    env = tabular("smoke", seeds=[3, 7, 11])
    trees = set()
    for seed in range(100, 140):
        first = env.reset(seed=seed)
        played = env.unwrapped.table_seed
        assert played in (3, 7, 11)
        trees.add(played)
        # the same seed plays the same tree, exactly as that table seed does
        assert data_equivalence(env.reset(seed=seed), first, exact=True)
        assert data_equivalence(env.reset(seed=played), first, exact=True)
        assert env.unwrapped.table_seed == played
    assert trees == {3, 7, 11}
    env.reset(seed=5)  # a tree outside seeds= is not played: 5 maps like any other seed
    assert env.unwrapped.table_seed == [3, 7, 11][5 % 3]
    env.reset(seed=7)  # a tree the env plays plays itself
    assert env.unwrapped.table_seed == 7


def test_a_pinned_seed_outside_the_table_is_an_error():
    analysis = TableAnalysis("smoke", "psnr")
    with pytest.raises(ValueError, match=r"Seed 123 is not in the table. Allowed: its seeds \[0, 1, 2"):
        analysis.oracle(seeds=[123])
    with pytest.raises(ValueError, match=r"Seed 123 is not in the table"):
        analysis.values([123], [0], "test")
    with pytest.raises(ValueError, match=r"Seed 123 is not in the table"):
        tabular("smoke", seeds=[0, 123])


# ------------------------------------------------------------------ PresetActions


def test_preset_actions_around_a_tabular_env_is_refused_at_construction():
    env = tabular("smoke")
    with pytest.raises(TypeError, match=r"needs an env whose action is a Box of 4 loss weights; .* has action space Discrete\(5\). It already plays presets \['pixel', 'structure'"):
        PresetActions(env, {"pixel": {"l1": 1.0}})
