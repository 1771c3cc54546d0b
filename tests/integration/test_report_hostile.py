"""``lossagent report`` and ``bench`` on hostile or careless input: a table replaced after
the benchmark, a benchmark killed half-way, crafted rows in ``results.jsonl`` (bad
types, duplicates, labels that are paths or hold ``|`` or ``$``), and labels that
would leave ``--out``. Each gives a correct report or one clear line, and nothing is
ever written outside the benchmark's folder."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.execution.results import RESULTS, read_rows
from benchmarks.runner import run_suite
from benchmarks.suites.suite import load_suite_text
from lossagent_env.tabular.replay import TABLES_DIR

SUITE = """\
name = "hostile"
seeds = [123, 456]
objectives = ["psnr", "ssim"]

[env]
id = "LossAgent/Tabular-v0"
kwargs = {{ table = "{table}" }}

[budget]
max_stages = 2
stage_iters = 2

[[agents]]
name = "fixed"

[[agents]]
name = "ucb"
{extra}
"""
N_RUNS = 2 * 2 * 2  # agents x objectives x seeds


def _one_line_error(capsys, code: int, command: str, *expected: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"lossagent {command}: error: "), err
    for text in expected:
        assert text in lines[0], err
    return lines[0]


def _suite_file(folder: Path, table: Path | str, extra: str = "", name: str = "hostile") -> Path:
    path = folder / "hostile.toml"
    path.write_text(SUITE.format(table=table, extra=extra).replace('"hostile"', json.dumps(name)))
    return path


@pytest.fixture(scope="module")
def finished(small_table, tmp_path_factory) -> Path:
    """A finished tabular benchmark on its own copy of the small table."""
    folder = tmp_path_factory.mktemp("finished")
    table = folder / "table.sqlite"
    shutil.copy(small_table["path"], table)
    out = folder / "bench"
    assert main(["bench", "--suite", str(_suite_file(folder, table)), "--out", str(out)]) == 0
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished benchmark (its table stays where it is)."""
    out = tmp_path / "bench"
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns(".lock"))
    return out


def _files(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


# ------------------------------------------------------------------ the table's identity
def test_the_table_file_is_recorded_in_suite_json(finished):
    record = json.loads((finished / "suite.json").read_text())["table_file"]
    table = finished.parent / "table.sqlite"
    assert record["path"] == str(table.resolve())
    assert record["sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()


def test_report_and_resume_refuse_a_replaced_table(small_table, tmp_path, capsys):
    table = tmp_path / "table.sqlite"
    shutil.copy(small_table["path"], table)
    out = tmp_path / "bench"
    assert main(["bench", "--suite", str(_suite_file(tmp_path, table)), "--out", str(out)]) == 0
    recorded = hashlib.sha256(table.read_bytes()).hexdigest()
    capsys.readouterr()
    # another table in its place: the same presets and seeds, other values
    with sqlite3.connect(table) as db:
        db.execute("UPDATE metrics SET value = value + 1.0 WHERE split = 'test' AND metric = 'psnr'")
    db.close()
    now = hashlib.sha256(table.read_bytes()).hexdigest()
    before = (out / "scores.json").read_text()
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "report", str(table), recorded, now)
    assert (out / "scores.json").read_text() == before  # nothing re-scored
    code = main(["bench", "--resume", "--out", str(out)])
    _one_line_error(capsys, code, "bench", str(table), recorded, now)


def test_a_table_rebuilt_with_the_same_values_is_accepted(small_table, tmp_path, capsys):
    """A rebuild of the same recipe on the same machine differs only in its seconds: the
    report and --resume accept it (its file differs, its values do not)."""
    table = tmp_path / "table.sqlite"
    shutil.copy(small_table["path"], table)
    out = tmp_path / "bench"
    assert main(["bench", "--suite", str(_suite_file(tmp_path, table)), "--out", str(out)]) == 0
    before = (out / "scores.json").read_text()
    recorded = hashlib.sha256(table.read_bytes()).hexdigest()
    with sqlite3.connect(table) as db:  # the wall-clock seconds of a rebuild
        db.execute("UPDATE nodes SET train_seconds = train_seconds * 1.5 + 0.25")
    db.close()
    assert hashlib.sha256(table.read_bytes()).hexdigest() != recorded
    capsys.readouterr()
    assert main(["report", "--out", str(out)]) == 0
    assert (out / "scores.json").read_text() == before
    assert main(["bench", "--resume", "--out", str(out)]) == 0


def test_a_shipped_table_is_hashed_where_the_package_keeps_it(tmp_path):
    suite = load_suite_text(
        SUITE.format(table="smoke", extra="").replace("[123, 456]", "[3]")
        .replace('"psnr", "ssim"', '"psnr"').replace("max_stages = 2", "max_stages = 1")
        .replace("stage_iters = 2", "stage_iters = 40")
    )
    run_suite(suite, tmp_path / "bench")
    record = json.loads((tmp_path / "bench" / "suite.json").read_text())["table_file"]
    shipped = TABLES_DIR / "smoke.sqlite"
    assert record["table"] == "smoke" and Path(record["path"]) == shipped.resolve()
    assert record["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()


def test_the_report_shows_the_tables_iterations(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    suite = json.loads((out / "suite.json").read_text())
    suite["budget"]["stage_iters"] = 5  # what an older version let a suite claim
    (out / "suite.json").write_text(json.dumps(suite))
    assert main(["report", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "2 stages x 2 iterations" in text and "x 5 iterations" not in text
    assert "fixed by the table" in text


def test_the_same_table_found_by_the_suites_path_is_accepted(finished, tmp_path):
    out = _copy(finished, tmp_path)
    suite = json.loads((out / "suite.json").read_text())
    other = tmp_path / "other.sqlite"  # where the record now points: another table
    shutil.copy(suite["table_file"]["path"], other)
    with sqlite3.connect(other) as db:
        db.execute("UPDATE metrics SET value = value + 1.0 WHERE split = 'test'")
    db.close()
    suite["table_file"]["path"] = str(other)
    (out / "suite.json").write_text(json.dumps(suite))
    assert main(["report", "--out", str(out)]) == 0  # the suite's table path holds the very file
    assert (out / "scores.json").read_text() == (finished / "scores.json").read_text()


def test_a_benchmark_that_recorded_no_table_is_reported_with_a_warning(finished, tmp_path):
    out = _copy(finished, tmp_path)
    suite = json.loads((out / "suite.json").read_text())
    del suite["table_file"]  # as an earlier version wrote it
    (out / "suite.json").write_text(json.dumps(suite))
    assert main(["report", "--out", str(out)]) == 0
    assert "suite.json records no table file" in (out / "report.md").read_text()
    assert (out / "scores.json").read_text() == (finished / "scores.json").read_text()


@pytest.mark.parametrize("command", ["report", "bench"])
def test_a_suite_json_that_is_not_an_object_is_one_line(command, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    (out / "suite.json").write_text("[1, 2]")
    args = ["report", "--out", str(out)] if command == "report" else ["bench", "--resume", "--out", str(out)]
    _one_line_error(capsys, main(args), command, f"{out / 'suite.json'}' is corrupt")


# ------------------------------------------------------------------ partial benchmarks
def test_a_killed_benchmark_says_how_many_runs_and_which_are_missing(finished, tmp_path):
    out = _copy(finished, tmp_path)
    rows = read_rows(out / RESULTS)
    fixed_psnr = [r for r in rows if r["agent"] == "fixed" and r["objective"] == "psnr"]
    half = [r for r in rows if r["agent"] == "fixed" and r["objective"] == "ssim" and r["seed"] == 123][:1]
    # as after a kill: two complete runs of `fixed` and one stage of a third
    (out / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in fixed_psnr + half))
    assert main(["report", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert f"Runs: 2 of {N_RUNS} complete; 1 started but unfinished, 5 not started" in text
    assert "## Missing runs" in text
    assert "| fixed | 2 of 4 | ssim: 123*, 456 |" in text
    assert "| ucb | 0 of 4 (no complete run) | psnr: 123, 456; ssim: 123, 456 |" in text
    # the agent without a complete run stays in its objective's table
    assert "| ucb | 0 | no complete run |" in text


def test_a_benchmark_killed_before_its_first_row_reports_every_run_missing(finished, tmp_path):
    out = _copy(finished, tmp_path)
    (out / RESULTS).unlink()
    assert main(["report", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert f"Runs: 0 of {N_RUNS} complete; 0 started but unfinished, {N_RUNS} not started" in text
    assert "| fixed | 0 of 4 (no complete run) | psnr: 123, 456; ssim: 123, 456 |" in text


def test_an_agent_whose_runs_all_failed_stays_in_the_report(small_table, tmp_path, capsys):
    broken = '\n[[agents]]\nname = "fixed"\nlabel = "broken"\nkwargs = { preset = "no-such-preset" }\n'
    out = tmp_path / "bench"
    code = main(["bench", "--suite", str(_suite_file(tmp_path, small_table["path"], broken)), "--out", str(out)])
    assert code == 1
    assert "4 of 12 runs failed" in capsys.readouterr().err
    text = (out / "report.md").read_text()
    assert "Runs: 8 of 12 complete" in text
    assert "| broken | 0 of 4 (no complete run) | psnr: 123, 456; ssim: 123, 456 |" in text
    assert text.count("| broken | 0 | no complete run |") == 2  # one per objective


# ------------------------------------------------------------------ crafted rows
def _replace_row(out: Path, index: int, **changes) -> int:
    """Change row ``index`` of results.jsonl (a value None deletes the key); its line."""
    lines = (out / RESULTS).read_text().splitlines()
    row = json.loads(lines[index])
    for key, value in changes.items():
        row[key] = value
    lines[index] = json.dumps(row)
    (out / RESULTS).write_text("\n".join(lines) + "\n")
    return index + 1


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"objective_value": "abc"}, "objective_value"),
        ({"objective_value": None}, "objective_value"),
        ({"objective_value": True}, "objective_value"),
        ({"seed": "123"}, "seed"),
        ({"stage": 3}, "stage 3 is above max_stages 2"),
        ({"wall_s": "slow"}, "wall_s"),
        ({"notes": ["not", "a", "dict"]}, "notes"),
        ({"action": [0.5]}, "'action' has 1 entries"),
        ({"agent": 7}, "agent"),
    ],
    ids=["text", "null", "bool", "seed-text", "stage-past-budget", "wall-text", "notes-list",
         "short-action", "agent-number"],
)
def test_a_bad_field_names_the_line_and_the_field(changes, field, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    line = _replace_row(out, 4, **changes)
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "report", f"{out / RESULTS}:{line}: ", field)


def test_an_exact_duplicate_row_is_dropped_with_a_warning(finished, tmp_path, caplog):
    out = _copy(finished, tmp_path)
    lines = (out / RESULTS).read_text().splitlines()
    (out / RESULTS).write_text("\n".join([*lines, lines[2]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="benchmarks.execution.results"):
        assert main(["report", "--out", str(out)]) == 0
    assert f"{out / RESULTS}:{len(lines) + 1}: an exact copy of line 3" in caplog.text
    text = (out / "report.md").read_text()
    assert "1 exact duplicate row(s) of results.jsonl ignored" in text
    assert f"Runs: {N_RUNS} of {N_RUNS} complete" in text
    assert (out / "scores.json").read_text() == (finished / "scores.json").read_text()


def test_a_conflicting_duplicate_names_the_run_the_stage_and_both_lines(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    lines = (out / RESULTS).read_text().splitlines()
    row = json.loads(lines[2])
    row["objective_value"] += 1.0
    (out / RESULTS).write_text("\n".join([*lines, json.dumps(row)]) + "\n")
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "report", f"{out / RESULTS}:{len(lines) + 1}: ",
                    f"stage {row['stage']} of run {row['run']!r} is already at line 3")


def test_a_row_of_a_run_the_suite_does_not_have_is_refused(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    line = _replace_row(out, 0, objective="../../evil")
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "report", f"{out / RESULTS}:{line}: ", "field 'objective'")
    line = _replace_row(out, 0, objective="psnr", run="elsewhere")
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "report", f"{out / RESULTS}:{line}: ", "'elsewhere' is not a run of the suite")


def test_a_preset_the_table_does_not_have_is_named(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    _replace_row(out, 0, preset="nope")
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "report", "played preset 'nope'", "Allowed: ['pixel', 'structure', 'edges']")


def _live_rows(objective: str = "psnr", agent: str = "ucb", max_stages: int = 2) -> list[dict]:
    """Rows of two complete runs, as ``lossagent run --out`` writes them (no suite.json)."""
    rows = []
    for seed in (0, 1):
        for stage in range(1, max_stages + 1):
            rows.append({
                "run": f"Env__{agent}__{objective}__{seed}", "agent": agent, "objective": objective,
                "seed": seed, "stage": stage, "max_stages": max_stages, "objective_value": 20.0 + stage + seed,
                "loss_names": ["l1", "ssim"], "action": [0.5, 0.25], "wall_s": 1.0 * stage, "notes": {},
                "diverged": False,
            })
    return rows


def _write_rows(out: Path, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("objective", ["../../evil", "../" * 40 + "x" * 300, "..", "/etc/evil"])
def test_labels_that_are_paths_stay_inside_out(objective, tmp_path, capsys):
    out = tmp_path / "deep" / "bench"
    _write_rows(out, _live_rows(objective))
    outside = _files(tmp_path)
    assert main(["report", "--out", str(out)]) == 0, capsys.readouterr().err
    written = {p for p, t in _files(tmp_path).items() if outside.get(p) != t}
    assert written and all(Path(p).is_relative_to(out) for p in written), written
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert len(plots) == 2 and all(len(name) < 100 for name in plots)
    text = (out / "report.md").read_text()
    assert f"(plots/{plots[0]})" in text and f"(plots/{plots[1]})" in text


@pytest.mark.parametrize("name", ["report.md", "summary.csv", "plots/psnr__objective.png", "summary.csv.tmp"])
def test_a_link_in_out_does_not_lead_the_report_outside(name, tmp_path):
    out = tmp_path / "bench"
    _write_rows(out, _live_rows())
    (out / "plots").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / name).symlink_to(victim)
    code = main(["report", "--out", str(out)])
    assert victim.read_text() == "keep me"
    if name.endswith(".tmp"):  # refused, not followed
        assert code == 2
    else:
        assert code == 0 and not (out / name).is_symlink()


def test_a_plots_link_is_refused(tmp_path, capsys):
    out = tmp_path / "bench"
    _write_rows(out, _live_rows())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "plots").symlink_to(elsewhere, target_is_directory=True)
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "report", f"{out / 'plots'}' is a link or a file")
    assert not any(elsewhere.iterdir())


def test_two_labels_that_look_alike_in_file_names_keep_their_own_plots(tmp_path):
    out = tmp_path / "bench"
    _write_rows(out, _live_rows("a/b") + _live_rows("a-b"))
    assert main(["report", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "a-b-2__objective.png", "a-b-2__weights.png", "a-b__objective.png", "a-b__weights.png",
    ]


@pytest.mark.parametrize("agent", ["ucb|fast", "$x^$", "a\nb"])
def test_labels_with_markup_characters_report_as_written(agent, tmp_path):
    out = tmp_path / "bench"
    rows = _live_rows(agent=agent)
    for row in rows[:2]:  # and a row without the optional fields
        for key in ("loss_names", "action", "wall_s", "notes", "diverged"):
            row.pop(key)
    _write_rows(out, rows)
    assert main(["report", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    shown = " ".join(agent.split()).replace("|", "\\|")
    assert f"| {shown} | 2 |" in text


def test_a_huge_budget_in_a_row_is_just_an_incomplete_run(tmp_path):
    out = tmp_path / "bench"
    rows = _live_rows()
    for row in rows[:2]:
        row["max_stages"] = 10**15
        row["run"] = "Env__ucb__psnr__9"
    _write_rows(out, rows)
    t0 = time.perf_counter()
    assert main(["report", "--out", str(out)]) == 0
    assert time.perf_counter() - t0 < 60
    assert "incomplete: 1 (Env__ucb__psnr__9" in (out / "report.md").read_text()


def test_runs_of_one_agent_with_different_budgets_are_named(tmp_path, capsys):
    out = tmp_path / "bench"
    longer = [dict(r, run="Env__ucb__psnr__7", seed=7) for r in _live_rows(max_stages=3) if r["seed"] == 0]
    rows = _live_rows() + longer
    _write_rows(out, rows)
    code = main(["report", "--out", str(out)])
    _one_line_error(capsys, code, "report", "'Env__ucb__psnr__7' (3 stages)", "(2 stages)")


# ------------------------------------------------------------------ labels in bench
def test_a_label_with_a_bar_runs_and_reports(small_table, tmp_path):
    extra = '\n[[agents]]\nname = "ucb"\nlabel = "ucb|fast"\nkwargs = { c = 0.5 }\n'
    out = tmp_path / "bench"
    assert main(["bench", "--suite", str(_suite_file(tmp_path, small_table["path"], extra)), "--out", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert "ucb|fast" in scores["plays"] and any(e["agent"] == "ucb|fast" for e in scores["agents"])
    text = (out / "report.md").read_text()
    assert "| ucb\\|fast |" in text
    assert main(["report", "--out", str(out)]) == 0


def test_a_suite_name_that_is_a_path_stays_under_runs(small_table, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = _suite_file(tmp_path, small_table["path"], name="../escape")
    assert main(["bench", "--suite", str(suite)]) == 0
    made = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [p.name for p in made] == ["runs"]
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("---escape-") and (folder / "report.md").is_file()
