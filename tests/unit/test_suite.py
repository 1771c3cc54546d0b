"""Benchmark suites: loading, validation with file/line/key errors, expansion into runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.execution.runs import expand, run_name
from benchmarks.suites.suite import (
    Suite,
    SuiteError,
    load_suite,
    load_suite_text,
    objective_label,
    suite_names,
)

TINY = """\
name = "tiny"
description = "two agents, two objectives, two seeds"
seeds = [0, 1]
objectives = ["psnr", { psnr = 1.0, ssim = 10.0 }]

[env]
id = "LossAgent/SuperResolution-v0"
kwargs = { scale = 2, patch_size = 32, batch_size = 2, eval_images = 2, eval_size = 32 }

[budget]
max_stages = 2
stage_iters = 2

[[agents]]
name = "fixed"

[[agents]]
name = "random"
label = "rand"
kwargs = { }
"""


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def _error(text: str, check_names: bool = False) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        load_suite_text(text, "my_suite.toml", check_names=check_names)
    return info.value


@pytest.mark.parametrize("name", ["smoke", "quick", "paper"])
def test_shipped_suites_are_valid(name):
    suite = load_suite(name)
    assert suite.name == name and suite.path.name == f"{name}.toml"
    assert suite.max_stages >= 1 and suite.stage_iters >= 1 and suite.seeds


def test_shipped_suites_have_the_documented_shape():
    assert {"smoke", "quick", "paper"} <= set(suite_names())
    smoke = load_suite("smoke", check_names=False)
    assert [a.name for a in smoke.agents] == ["fixed", "random", "ucb", "dwa", "llm"]
    assert [o.label for o in smoke.objectives] == ["psnr", "piqe"]
    assert len(smoke.seeds) == 2 and smoke.env_kwargs["scale"] == 2
    quick = load_suite("quick", check_names=False)
    assert {"ppo", "pbt", "thompson", "egreedy"} <= {a.name for a in quick.agents}
    assert len(quick.seeds) == 3 and len(quick.objectives) > len(smoke.objectives)
    paper = load_suite("paper", check_names=False)
    assert paper.requires_data and paper.env_kwargs["scale"] == 4
    assert paper.env_kwargs["backbone"] == "edsr" and "niqe" in [o.label for o in paper.objectives]


def test_tiny_suite_loads_and_expands():
    suite = load_suite_text(TINY)
    assert [a.display for a in suite.agents] == ["fixed", "rand"]
    runs = expand(suite)
    assert len(runs) == 2 * 2 * 2
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert "LossAgent-SuperResolution-v0__rand__psnr+10ssim__1" in names
    assert all("/" not in n for n in names)
    assert {(r.max_stages, r.stage_iters) for r in runs} == {(2, 2)}  # equal budgets
    kwargs = runs[0].make_env_kwargs()
    assert kwargs["objective"] == "psnr" and kwargs["max_stages"] == 2 and kwargs["stage_iters"] == 2


def test_run_name_is_file_system_safe():
    assert run_name("LossAgent/JPEG-v0", "llm", "psnr", 3) == "LossAgent-JPEG-v0__llm__psnr__3"
    assert run_name("A/B", "x y", "a:b", 0) == "A-B__x-y__a-b__0"


def test_objective_label():
    assert objective_label("psnr") == "psnr"
    assert objective_label({"psnr": 1.0, "ssim": 10.0}) == "psnr+10ssim"
    assert objective_label({"niqe": -0.5}) == "-0.5niqe"


def test_round_trip_and_overrides():
    suite = load_suite_text(TINY)
    again = Suite.from_dict(suite.to_dict())
    assert again.to_dict() == suite.to_dict()
    changed = suite.replace(seeds=[5], env_kwargs={"device": "cpu"}, agent_kwargs={"random": {"x": 1}})
    assert changed.seeds == [5] and changed.env_kwargs["device"] == "cpu"
    assert changed.agents[1].kwargs == {"x": 1} and changed.agents[0].kwargs == {}
    assert suite.seeds == [0, 1]  # the original is unchanged


def test_toml_syntax_error_names_file_and_line():
    text = TINY.replace("[budget]", "[budget")
    error = _error(text)
    assert error.file == "my_suite.toml" and error.line == _line_of(text, "[budget")
    assert str(error).startswith(f"my_suite.toml:{error.line}: ")


def test_unknown_key_names_line_and_suggests():
    text = TINY.replace("max_stages = 2", "max_stage = 2")
    error = _error(text)
    assert error.key == "budget.max_stage" and error.line == _line_of(text, "max_stage =")
    assert "Did you mean 'max_stages'?" in str(error)


def test_missing_key_points_at_its_table():
    text = TINY.replace('name = "random"\n', "")
    error = _error(text)
    assert error.key == "agents[1].name"
    lines = text.splitlines()
    assert lines[error.line - 1] == "[[agents]]" and 'label = "rand"' in lines[error.line]


def test_bad_value_names_key_and_line():
    text = TINY.replace("stage_iters = 2", "stage_iters = 0")
    error = _error(text)
    assert error.key == "budget.stage_iters" and error.line == _line_of(text, "stage_iters = 0")
    assert "greater than or equal to 1" in str(error)


def test_bad_objective_entry():
    text = TINY.replace("ssim = 10.0", 'ssim = "ten"')
    error = _error(text)
    assert error.key == "objectives[1]" and error.line == _line_of(text, "objectives =")
    assert "not an objective" in str(error)


def test_duplicate_agent_label_is_an_error():
    text = TINY.replace('label = "rand"', 'label = "fixed"')
    error = _error(text)
    assert error.key == "agents[1]" and "duplicate agent label 'fixed'" in str(error)


def test_agent_labels_that_clash_in_file_names_are_an_error():
    # both would name their runs (rows, TensorBoard folders) "...__ucb-fast__..."
    text = TINY.replace('name = "fixed"', 'name = "ucb"\nlabel = "ucb/fast"').replace(
        'label = "rand"', 'label = "ucb-fast"'
    )
    error = _error(text)
    assert error.key == "agents[1].label" and error.line == _line_of(text, 'label = "ucb-fast"')
    assert "'ucb-fast'" in str(error) and "'ucb/fast'" in str(error) and "agents[0]" in str(error)


@pytest.mark.parametrize(
    "label, safe",
    [("psnr", "psnr"), ("LossAgent/JPEG-v0", "LossAgent-JPEG-v0"), ("../../x", "---..-x"),
     ("..", "--"), (".hidden", "-hidden"), ("", "-"), ("a b|c", "a-b-c")],
)
def test_safe_name_keeps_a_label_inside_its_folder(label, safe, tmp_path):
    from benchmarks.suites.suite import safe_name

    assert safe_name(label) == safe
    assert (tmp_path / safe_name(label)).resolve().parent == tmp_path.resolve()


def test_budget_keys_are_refused_in_env_kwargs():
    text = TINY.replace("eval_size = 32 }", "eval_size = 32, max_stages = 9 }")
    error = _error(text)
    assert error.key == "env.kwargs.max_stages" and "[budget]" in str(error)


def test_repeated_seeds_are_an_error():
    error = _error(TINY.replace("seeds = [0, 1]", "seeds = [0, 0]"))
    assert error.key == "seeds" and "repeated" in str(error)


@pytest.mark.parametrize(
    ("old", "new", "key", "hint"),
    [
        (
            '"LossAgent/SuperResolution-v0"',
            '"LossAgent/SuperResolutoin-v0"',
            "env.id",
            "Did you mean 'LossAgent/SuperResolution-v0'?",
        ),
        ('name = "random"', 'name = "randm"', "agents[1].name", "Did you mean 'random'?"),
        ('["psnr", {', '["psnrr", {', "objectives[0]", "Did you mean 'psnr'?"),
        ("eval_size = 32 }", "eval_sise = 32 }", "env.kwargs.eval_sise", "Did you mean 'eval_size'?"),
        (
            "eval_size = 32 }",
            'eval_size = 32, losses = ["l1", "ssmi"] }',
            "env.kwargs.losses[1]",
            "Did you mean 'ssim'?",
        ),
        (
            "eval_size = 32 }",
            'eval_size = 32, backbone = "edrs" }',
            "env.kwargs.backbone",
            "Did you mean 'edsr'?",
        ),
    ],
    ids=["env", "agent", "metric", "env-field", "loss", "backbone"],
)
def test_unknown_names_get_a_hint(old, new, key, hint):
    text = TINY.replace(old, new)
    assert text != TINY
    error = _error(text, check_names=True)
    assert error.key == key and hint in str(error)
    assert error.file == "my_suite.toml" and error.line == _line_of(text, new)


def test_unknown_suite_name_and_missing_file(tmp_path: Path):
    with pytest.raises(KeyError, match="Did you mean 'smoke'"):
        load_suite("smoek")
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_suite(tmp_path / "nope.toml")


def test_suite_file_errors_name_the_file(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text(TINY.replace("stage_iters = 2", "stage_iters = -1"))
    with pytest.raises(SuiteError, match=r"broken\.toml:\d+: key 'budget.stage_iters'"):
        load_suite(path)


_TABLE_TRACKS = (
    TINY.replace('"LossAgent/SuperResolution-v0"', '"LossAgent/Tabular-v0"')
    .replace('objectives = ["psnr", { psnr = 1.0, ssim = 10.0 }]', 'objectives = ["psnr"]\n\n[new_objective]\nSECTION\n')
    .replace("{ scale = 2, patch_size = 32, batch_size = 2, eval_images = 2, eval_size = 32 }", '{ table = "smoke" }')
)


@pytest.mark.parametrize(
    "section, key, line, words",
    [
        ('objectives = [{ ssim = "x" }]\ntune_on = "psnr"', "new_objective.objectives[0]", 0,
         '{\'ssim\': \'x\'} is not an objective. Allowed: a metric name or a table of {metric = weight} numbers'),
        ('objectives = [{ ssim = 1e400 }]\ntune_on = "psnr"', "new_objective.objectives[0]", 0,
         "objective weights must be finite and non-zero, got {'ssim': inf}"),
        ('objectives = ["piqe"]\ntune_on = {}', "new_objective.tune_on", 1, "an objective table must name at least one metric"),
        ('objectives = ["piqe"]\ntune_on = 3', "new_objective.tune_on", 1, "3 is not an objective"),
        ('objectives = ["piqe", "piqe"]\ntune_on = "psnr"', "new_objective.objectives[1]", 0, "duplicate objective 'piqe'"),
        ('objectives = ["piqe"]\ntune_on = "psnr"\nextra = 1', "new_objective.extra", 2, "Known: ['objectives', 'tune_on']"),
        ('objectives = ["piqe"]\ntune_on = "piqe"', "new_objective.tune_on", 1, "one of the track's objectives"),
        ('objectives = []\ntune_on = "psnr"', "new_objective.objectives", 0, "at least 1 item"),
    ],
)
def test_a_bad_new_objective_section_names_its_key_line_and_what_is_allowed(section, key, line, words):
    text = _TABLE_TRACKS.replace("SECTION", section)
    error = _error(text)
    assert error.key == key and words in str(error) and "Value error" not in str(error), str(error)
    assert error.line == _line_of(text, section.splitlines()[line]), str(error)


def test_a_good_new_objective_section_gives_the_track_its_labels():
    text = _TABLE_TRACKS.replace("SECTION", 'objectives = ["piqe", { ssim = 50, piqe = 0.1 }]\ntune_on = "psnr"')
    suite = load_suite_text(text, check_names=False)
    assert [o.label for o in suite.new_objectives] == ["piqe.new", "50ssim+0.1piqe.new"]
    assert suite.tune_on is not None and suite.tune_on.spec == "psnr"
