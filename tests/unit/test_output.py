"""``Output``: the one owner of a command's folder or file (check, create, lock, clean up)."""

from __future__ import annotations

import pytest

from benchmarks.errors import BenchmarkError
from benchmarks.execution.output import LOCK_FILE, Output, check_same


def _fail_inside(output: Output, keep: bool, **claim) -> None:
    with pytest.raises(RuntimeError, match="crash"):
        with output.claim(**claim):
            if keep:
                output.keep()
            raise RuntimeError("crash")


def test_a_new_folder_that_holds_nothing_computed_is_removed_on_failure(tmp_path):
    out = tmp_path / "new" / "bench"
    _fail_inside(Output(out, command="t", kind="folder"), keep=False, create=lambda p: (p / "suite.json").write_text("{}"))
    assert not out.exists()
    _fail_inside(Output(out, command="t", kind="folder"), keep=True)
    assert out.is_dir() and not (out / LOCK_FILE).exists()  # kept for --resume; its lock went with it


def test_an_empty_folder_given_to_run_is_emptied_again_not_removed(tmp_path):
    out = tmp_path / "given"
    out.mkdir()
    _fail_inside(Output(out, command="t", kind="folder", empty_ok=True), keep=False, create=lambda p: (p / "x").write_text("1"))
    assert out.is_dir() and list(out.iterdir()) == []
    (out / "user-file").write_text("mine")
    with pytest.raises(BenchmarkError, match="exists and is not empty"):
        Output(out, command="t", kind="folder", empty_ok=True).check()
    assert (out / "user-file").read_text() == "mine"


def test_a_new_file_is_removed_when_nothing_was_stored(tmp_path):
    out = tmp_path / "t.sqlite"
    _fail_inside(Output(out, command="t", kind="file"), keep=False, create=lambda p: p.write_text("header"))
    assert not out.exists()
    _fail_inside(Output(out, command="t", kind="file"), keep=True, create=lambda p: p.write_text("header"))
    assert out.read_text() == "header"
    with pytest.raises(BenchmarkError, match="already exists. Pass --resume"):
        Output(out, command="t", kind="file").check()


def test_a_resumed_output_is_never_removed_and_is_checked_under_the_lock(tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.jsonl").write_text("")
    seen = []
    _fail_inside(Output(out, command="t", kind="folder", resume=True), keep=False, check_resumable=seen.append)
    assert seen == [out] and (out / "results.jsonl").exists()
    with pytest.raises(BenchmarkError, match="Cannot resume"):
        Output(tmp_path / "missing", command="t", kind="folder", resume=True).check()


def test_a_refused_lock_leaves_nothing_behind(tmp_path):
    out = tmp_path / "t.sqlite"
    out.write_text("table")
    with Output(out, command="first", kind="file", resume=True).claim():
        with pytest.raises(BenchmarkError, match="in use by first"):
            with Output(out, command="second", kind="file", resume=True).claim():
                pass
    assert out.read_text() == "table"


def test_check_same_names_every_key_that_differs():
    check_same("o", {"a": 1, "build": "x"}, {"a": 1, "build": "y"}, what="table header", ignore=("build",))
    with pytest.raises(BenchmarkError, match=r"differs from this one in \['a', 'c'\] \(a: stored 1, now 2; c: stored None, now \[1\]\)"):
        check_same("o", {"a": 1}, {"a": 2, "c": (1,)}, what="suite")
