"""A suite locates a value the env refuses by the error's field, never by its text;
``lossagent run`` is a suite of one run and names the flag of a refused value."""

from __future__ import annotations

import pytest

from benchmarks.cli import main
from benchmarks.suites.suite import SuiteError, load_suite_text
from benchmarks.suites.tomlpos import decode_error_line, dotted, locate

TABLE_SUITE = """\
name = "located"
seeds = [123]
objectives = ["psnr"]

[env]
id = "LossAgent/Tabular-v0"
kwargs = {{ table = "{table}"{extra} }}

[budget]
max_stages = {stages}
stage_iters = 2

[[agents]]
name = "random"
"""


@pytest.mark.parametrize(
    "extra, stages, key, expected",
    [
        ("", 9, "budget.max_stages", "Allowed: an integer in [1, 2]"),
        (", seeds = [123, 99]", 2, "env.kwargs.seeds", "Seed 99 is not in the table"),
        (", seeds = [123, 123]", 2, "env.kwargs.seeds", "must be unique; repeated: [123]"),
    ],
    ids=["max-stages", "seed-not-in-table", "repeated-seed"],
)
def test_a_table_replay_refusal_is_located_by_its_field(extra, stages, key, expected, small_table):
    text = TABLE_SUITE.format(table=small_table["path"], extra=extra, stages=stages)
    with pytest.raises(SuiteError) as info:
        load_suite_text(text, source="located.toml")
    assert info.value.key == key and expected in str(info.value)
    assert info.value.line == locate(text, tuple(key.split(".")))


def test_an_objective_that_the_table_cannot_score_is_located_at_the_objective(small_table):
    text = TABLE_SUITE.format(table=small_table["path"], extra="", stages=2).replace('["psnr"]', '["psnr", "niqe"]')
    with pytest.raises(SuiteError) as info:
        load_suite_text(text, source="located.toml")
    assert info.value.key == "objectives[1]" and "niqe" in str(info.value)


def test_the_toml_position_helpers_are_public():
    text = 'name = "x"\n\n[env]\nid = "a"\nkwargs = { lr = 1 }\n\n[[agents]]\nname = "a"\n[[agents]]\nname = "b"\n'
    assert locate(text, ("env", "kwargs", "lr")) == 5
    assert locate(text, ("agents", 1, "name")) == 10
    assert dotted(("agents", 1, "kwargs")) == "agents[1].kwargs"
    import tomllib

    with pytest.raises(tomllib.TOMLDecodeError) as info:
        tomllib.loads("a = 1\nb = = 2\n")
    assert decode_error_line(info.value) == 2


@pytest.mark.parametrize(
    "args, start",
    [
        (["--objective", "ms_ssim"], "--objective ms_ssim: EnvConfig.eval_size=32 is too small"),
        (["--set", "patch_size=33"], "--set patch_size=...: EnvConfig.patch_size=33 is not"),
        (["--objective", "psnrr"], "--objective psnrr: No metric named 'psnrr'"),
        (["--agent", "rndom"], "--agent rndom: No agent named 'rndom'"),
        (["--set", "lr=0"], "--set lr=...: EnvConfig.lr=0 is not a finite number > 0"),
    ],
    ids=["eval-size", "patch-size", "metric", "agent", "lr"],
)
def test_run_names_the_flag_of_a_refused_value(args, start, capsys, tmp_path):
    out = tmp_path / "new"
    code = main(["run", "--stages", "1", "--iters", "1", "--set", "eval_size=32", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"lossagent run: error: {start}"), err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, extra, stages, iters, seeds",
    [
        (["--iters", "5"], "", 2, 5, "[123]"),
        (["--set", "patch_size=48"], ", patch_size = 48", 2, 2, "[123]"),
        (["--device", "cuda"], ', device = "cuda"', 2, 2, "[123]"),
        (["--stages", "9"], "", 9, 2, "[123]"),
        (["--set", "tabel=1"], ", tabel = 1", 2, 2, "[123]"),
    ],
    ids=["iters", "env-setting", "device", "stages", "typo"],
)
def test_run_on_a_table_refuses_as_the_suite_does(args, extra, stages, iters, seeds, small_table, capsys):
    table = str(small_table["path"])
    text = TABLE_SUITE.format(table=table, extra=extra, stages=stages).replace("stage_iters = 2", f"stage_iters = {iters}")
    with pytest.raises(SuiteError) as info:
        load_suite_text(text.replace("seeds = [123]", f"seeds = {seeds}"), source="located.toml")
    code = main(["run", "--env", "LossAgent/Tabular-v0", "--set", f'table="{table}"', "--agent", "random", *args])
    err = capsys.readouterr().err
    flag = " ".join(args) if args[0] != "--set" else f"--set {args[1].split('=')[0]}=..."
    assert code == 2 and err.strip() == f"lossagent run: error: {flag}: {info.value.message}", err


def test_a_table_replay_names_the_setting_the_table_fixes_and_its_value(small_table):
    text = TABLE_SUITE.format(table=small_table["path"], extra=", patch_size = 48", stages=2)
    with pytest.raises(SuiteError) as info:
        load_suite_text(text, source="located.toml")
    assert info.value.key == "env.kwargs.patch_size" and "the table fixes it at 32" in info.value.message
    assert info.value.line == locate(text, ("env", "kwargs", "patch_size"))
