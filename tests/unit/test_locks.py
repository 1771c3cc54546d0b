"""``OutputLock``: one lock per resolved output, never written through a link, never
over a file that is not a lock file, and messages that say what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.errors import BenchmarkError
from benchmarks.execution.output import LOCK_FILE, OutputLock


def test_a_released_lock_can_be_taken_again_and_names_its_holder(tmp_path):
    with OutputLock(tmp_path, "lossagent bench"):
        assert f"lossagent bench (pid {os.getpid()}," in (tmp_path / LOCK_FILE).read_text()
    with OutputLock(tmp_path, "lossagent report"):
        assert "lossagent report" in (tmp_path / LOCK_FILE).read_text()


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_symlinked_lock_file_is_refused_and_its_target_is_untouched(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    if kind == "folder":
        out = tmp_path / "bench"
        out.mkdir()
        lock = OutputLock(out, "lossagent report")
        (out / LOCK_FILE).symlink_to(victim)
    else:
        out = tmp_path / "t.sqlite"
        lock = OutputLock.for_file(out, "lossagent tabulate")
        Path(f"{out}.lock").symlink_to(victim)
    with pytest.raises(BenchmarkError, match="is a symbolic link; .* Remove the link, or choose another --out"):
        lock.acquire()
    assert victim.read_text() == "keep me\n"


def test_a_dangling_symlink_as_lock_file_creates_nothing(tmp_path):
    (tmp_path / LOCK_FILE).symlink_to(tmp_path / "nowhere")
    with pytest.raises(BenchmarkError, match="is a symbolic link"):
        OutputLock(tmp_path).acquire()
    assert not (tmp_path / "nowhere").exists()


def test_a_file_that_is_not_a_lock_file_is_never_overwritten(tmp_path):
    lock_file = tmp_path / "t.sqlite.lock"
    lock_file.write_text("my own notes\n")
    with pytest.raises(BenchmarkError, match="is not a lossagent lock file"):
        OutputLock.for_file(tmp_path / "t.sqlite").acquire()
    assert lock_file.read_text() == "my own notes\n"


def test_a_hard_link_as_lock_file_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("")
    os.link(victim, tmp_path / LOCK_FILE)
    with pytest.raises(BenchmarkError, match="is a hard link to another file"):
        OutputLock(tmp_path).acquire()
    assert victim.read_text() == ""


def test_a_fifo_as_lock_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / LOCK_FILE)
    with pytest.raises(BenchmarkError, match="is not a regular file"):
        OutputLock(tmp_path).acquire()


def test_a_file_and_a_symlink_to_it_share_one_lock(tmp_path):
    target = tmp_path / "real.sqlite"
    target.write_text("")
    link = tmp_path / "link.sqlite"
    link.symlink_to(target)
    refused = pytest.raises(BenchmarkError, match="'.*real.sqlite' is in use by lossagent tabulate")
    with OutputLock.for_file(link, "lossagent tabulate"), refused:
        OutputLock.for_file(target, "lossagent tabulate").acquire()
    refused = pytest.raises(BenchmarkError, match="'.*link.sqlite' is in use by lossagent tabulate")
    with OutputLock.for_file(target, "lossagent tabulate"), refused:
        OutputLock.for_file(link, "lossagent tabulate").acquire()


def test_a_folder_and_a_symlink_to_it_share_one_lock(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    (tmp_path / "alias").symlink_to(folder)
    refused = pytest.raises(BenchmarkError, match="is in use by lossagent bench")
    with OutputLock(tmp_path / "alias", "lossagent bench"), refused:
        OutputLock(folder, "lossagent report").acquire()


def test_a_missing_folder_is_named_as_missing(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(BenchmarkError) as info:
        OutputLock.for_file(missing / "t.sqlite").acquire()
    assert f"the folder {str(missing)!r} does not exist. Create it, or choose another --out." in str(info.value)
    with pytest.raises(BenchmarkError, match="does not exist. Create it"):
        OutputLock(missing).acquire()


def test_a_file_where_the_folder_should_be_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(BenchmarkError, match="'.*file' is not a folder. Choose another --out"):
        OutputLock.for_file(tmp_path / "file" / "t.sqlite").acquire()


def test_a_released_lock_removes_its_file_and_a_stale_one_is_taken_over(tmp_path):
    table = tmp_path / "t.sqlite"
    for lock in (OutputLock(tmp_path, "lossagent report"), OutputLock.for_file(table, "lossagent tabulate")):
        with lock:
            assert lock.path.is_file()
        assert not lock.path.exists()
    stale = Path(f"{table}.lock")  # left by a holder killed with SIGKILL
    stale.write_text("lossagent tabulate (pid 1, started 2026-01-01 00:00:00, command: lossagent tabulate)\n")
    with OutputLock.for_file(table, "lossagent tabulate"):
        assert f"pid {os.getpid()}," in stale.read_text()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_removed_by_its_holder_after_it_was_opened_is_not_a_lock(tmp_path, monkeypatch):
    """A process that opened the lock file just before its holder removed it must not
    hold a lock on that file without a name while a third process locks the new one."""
    import benchmarks.execution.output as output

    first = OutputLock(tmp_path, "first").acquire()
    unnamed = open(tmp_path / LOCK_FILE, "r+", encoding="utf-8")  # opened while first holds it
    first.release()
    opened = []

    def open_lock_file(path, target):
        opened.append(path)
        return unnamed if len(opened) == 1 else real(path, target)

    real = output._open_lock_file
    monkeypatch.setattr(output, "_open_lock_file", open_lock_file)
    with OutputLock(tmp_path, "second"):
        assert len(opened) == 2 and "second" in (tmp_path / LOCK_FILE).read_text()
        with pytest.raises(BenchmarkError, match="in use by second"):
            OutputLock(tmp_path, "third").acquire()
    assert unnamed.closed
