"""The output of a command: one owner that checks, creates, locks, resumes and cleans up.

``lossagent bench`` and ``lossagent run --out`` write a folder, ``lossagent tabulate`` a
table file; all three go through :class:`Output`:

1. :meth:`Output.check`, before anything is created: a new output must not exist (``run``
   also takes an empty folder), a resumed one must; the refusal says what will work.
2. :meth:`Output.claim` creates a new folder (a new file is created by the caller, see
   ``create``), takes :class:`OutputLock`, and then checks a resumed output with the
   caller's ``check_resumable`` or creates its first files with ``create``.
3. The caller marks the output :meth:`Output.keep` once it holds something computed (a
   row, a unit). If the command fails before that, everything it created is removed, so
   the corrected command runs as it is; a kept output stays for ``--resume``.

Ownership: every command that writes into an output (``lossagent report`` too) first
takes :class:`OutputLock`, held until it ends; a second process is refused with a
message naming the holder (docs/benchmarks.md, "Resume, ownership, failures").

:func:`check_same` is the one comparison of what a resumed output was started with
(``suite.json``, a table's header) with what the command would write now.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from benchmarks.errors import BenchmarkError

__all__ = ["LOCK_FILE", "Output", "OutputLock", "check_same"]

LOCK_FILE = ".lock"
"""The lock file of an output folder; a file ``T`` is locked in ``T.lock`` beside it."""


class Output:
    """The output of one command: a folder or a file, new or resumed.

    Args:
        path: The folder or file (``--out``).
        command: The command, for lock messages (``"lossagent bench"``).
        kind: ``"folder"`` or ``"file"``.
        resume: Continue what ``path`` holds instead of starting a new output.
        empty_ok: A new folder may be an existing empty one (``lossagent run``).
        error: The error class of the refusals (a :class:`BenchmarkError`).
        noun: What a file output is, for messages (``"table file"``).

    Attributes:
        created: Whether this command created ``path`` (it removes it again when it
            fails before :meth:`keep`).
        kept: Whether the output holds something computed by this command.

    Example:
        >>> output = Output(out, command="lossagent bench", kind="folder")
        >>> output.check()
        >>> with output.claim(create=write_first_files, check_resumable=same_suite):
        ...     for row in rows:
        ...         write(row)
        ...         output.keep()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        command: str,
        kind: Literal["folder", "file"],
        resume: bool = False,
        empty_ok: bool = False,
        error: type[BenchmarkError] = BenchmarkError,
        noun: str = "file",
    ):
        self.error = error
        self.noun = noun
        self.path = Path(path)
        self.command = command
        self.kind = kind
        self.resume = resume
        self.empty_ok = empty_ok
        self.created = False
        self.kept = False
        self._existed_empty = False

    # ---------------------------------------------------------------- before anything

    def check(self) -> None:
        """Refuse an output this command cannot use; create nothing.

        Raises:
            BenchmarkError: The message says what is wrong and what will work.
        """
        if self.kind == "folder":
            self._check_folder()
        else:
            self._check_file()

    def _check_folder(self) -> None:
        out = self.path
        if self.resume:
            if not out.is_dir():
                raise self.error(
                    f"Cannot resume: {str(out)!r} does not exist or is not a folder. Start a new "
                    "one without --resume."
                )
            return
        if self.empty_ok:
            if out.exists() and not out.is_dir():
                raise self.error(f"--out {str(out)!r} is a file. Allowed: a new or empty folder.")
            if out.is_dir() and any(out.iterdir()):
                raise self.error(f"--out {str(out)!r} exists and is not empty. Choose another --out.")
            return
        if out.exists() or out.is_symlink():
            raise self.error(
                f"Output directory {str(out)!r} already exists. Pass --resume to continue "
                "in it, or choose another --out."
            )

    def _check_file(self) -> None:
        out, folder = self.path, self.path.parent
        if out.is_dir():
            raise self.error(
                f"--out {str(out)!r} is a folder; --out is the {self.noun} to write, e.g. "
                f"{str(out / 'table.sqlite')!r}."
            )
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise self.error(
                f"Cannot write {str(out)!r}: its folder {str(folder)!r} {what}. Create the "
                "folder, or choose another --out."
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise self.error(
                f"Cannot write {str(out)!r}: the folder {str(folder)!r} is not writable. "
                "Choose an --out in a folder you can write."
            )
        if self.resume:
            if not out.exists():
                dangling = " (a symbolic link to a missing file)" if out.is_symlink() else ""
                raise self.error(
                    f"Cannot resume: {str(out)!r} does not exist{dangling}. Start without --resume "
                    "to write a new one."
                )
            return
        if out.is_symlink() and not out.exists():
            raise self.error(
                f"--out {str(out)!r} is a symbolic link to a missing file. Remove the link, or "
                "choose another --out."
            )
        if out.exists():
            raise self.error(
                f"{str(out)!r} already exists. Pass --resume to finish it, or choose another --out."
            )

    # ---------------------------------------------------------------- owning it

    @contextlib.contextmanager
    def claim(
        self,
        *,
        create: Callable[[Path], None] | None = None,
        check_resumable: Callable[[Path], None] | None = None,
    ) -> Iterator[Output]:
        """Create (a folder), lock, then check or start the output; clean up on failure.

        Args:
            create: Writes the first files of a new output (called under the lock).
            check_resumable: Raises :class:`BenchmarkError` if a resumed output cannot
                be continued by this command (called under the lock).

        Raises:
            BenchmarkError: The folder cannot be created, or the lock is refused (then
                nothing is left behind).
        """
        self.check()
        if self.kind == "folder" and not self.resume:
            self._make_folder()
        lock = OutputLock(self.path, self.command) if self.kind == "folder" else OutputLock.for_file(
            self.path, self.command
        )
        try:
            lock.acquire()
        except BaseException:
            self._remove_created()
            raise
        try:
            if self.resume:
                if check_resumable is not None:
                    check_resumable(self.path)
            elif create is not None:
                create(self.path)
                if self.kind == "file":
                    self.created = True
            yield self
        except BaseException:
            lock.release()
            if not self.kept:
                self._remove_created()
            raise
        finally:
            lock.release()

    def keep(self) -> None:
        """Mark the output as holding computed results: it stays even if the command fails."""
        self.kept = True

    def _make_folder(self) -> None:
        out = self.path
        self._existed_empty = out.is_dir()
        try:
            out.mkdir(parents=True, exist_ok=self.empty_ok)
        except OSError as e:
            raise self.error(f"Cannot create the output directory {str(out)!r}: {e.strerror or e}.") from None
        self.created = not self._existed_empty

    def _remove_created(self) -> None:
        """Remove what this command created: a new folder or file, or the contents of an
        empty folder it was given."""
        if self.kind == "file":
            if self.created:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        elif self.created:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self._existed_empty and self.path.is_dir():
            for child in self.path.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() and not child.is_symlink() else child.unlink()
        self.created = False


def check_same(
    path: str | os.PathLike[str],
    stored: Mapping[str, Any],
    fresh: Mapping[str, Any],
    *,
    what: str,
    ignore: Collection[str] = (),
    error: type[BenchmarkError] = BenchmarkError,
) -> None:
    """Refuse to resume ``path`` when what it was started with differs from what the
    command would write now.

    Args:
        path: The output, for the message.
        stored: What the output records (``suite.json``, a table's header).
        fresh: The same record for this command.
        what: What the record describes, for the message (``"suite"``, ``"table"``).
        ignore: Keys not compared (how a build was started, format versions).
        error: The error class to raise.

    Raises:
        BenchmarkError: One short line: the keys that differ, and the first few values
            that differ within them (``instances[1].env_kwargs.dataset: stored 'a', now
            'b'``), each shortened.
    """
    fresh = json.loads(json.dumps(fresh))  # as it reads back from the file
    keys = (set(stored) | set(fresh)) - set(ignore)
    changed = sorted(k for k in keys if stored.get(k) != fresh.get(k))
    if not changed:
        return
    found = [d for key in changed for d in _differences(key, stored.get(key), fresh.get(key))]
    details = "; ".join(f"{where}: stored {_short(a)}, now {_short(b)}" for where, a, b in found[:_SHOWN])
    if len(found) > _SHOWN:
        details += f"; and {len(found) - _SHOWN} more"
    raise error(
        f"Cannot resume {str(path)!r}: its {what} differs from this one in {changed} ({details}). "
        f"Resume with the same {what} and options, or use a new --out."
    )


_SHOWN = 3
"""Differences a refused resume shows (the others are counted)."""


def _differences(where: str, a: Any, b: Any) -> Iterator[tuple[str, Any, Any]]:
    """The innermost places where two JSON values differ: keys of two objects, items of
    two arrays of one length; anything else is one difference."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                yield from _differences(f"{where}.{key}", a.get(key), b.get(key))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                yield from _differences(f"{where}[{i}]", x, y)
    else:
        yield where, a, b


def _short(value: Any, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class OutputLock:
    """An exclusive OS lock on an output directory, held for the life of a command.

    The lock file is ``<out>/.lock`` (:meth:`for_file`: ``<file>.lock``), named after
    the resolved path, so a folder or table reached through a symbolic link and through
    its target is one lock. It is opened without following a symbolic link, and a file
    there that is not a lock file (another kind of file, a hard link, or text other
    than a holder line) is refused, never truncated.

    :meth:`release` removes the lock file while it still holds the lock, and
    :meth:`acquire` holds a lock only on the file that the name still refers to once
    it has locked it: a process that opened the file before its holder removed it
    locks a file without a name, sees so, and opens the name again.

    Args:
        out: The directory (it must exist).
        what: What holds it, for the message of a refused second process.

    Raises:
        BenchmarkError (from :meth:`acquire`): another process holds the lock, or the
            lock file cannot be created or is not one.

    Example:
        >>> with OutputLock(out, "lossagent bench"):
        ...     run_everything()
    """

    def __init__(self, out: str | os.PathLike[str], what: str = "lossagent"):
        self.target = Path(out)
        self.path = self.target.resolve() / LOCK_FILE
        self.what = what
        self._file: Any = None

    @classmethod
    def for_file(cls, path: str | os.PathLike[str], what: str = "lossagent") -> OutputLock:
        """A lock on one output file (a table), held in ``<file>.lock`` beside it."""
        lock = cls(Path(path).parent, what)
        lock.target = Path(path)
        lock.path = Path(f"{Path(path).resolve()}.lock")
        return lock

    def acquire(self) -> OutputLock:
        """Take the lock or raise :class:`BenchmarkError` naming its holder."""
        for _ in range(_LOCK_TRIES):
            handle = _open_lock_file(self.path, self.target)
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read(_LOCK_MAX_BYTES).strip() or "another process"
                handle.close()
                raise BenchmarkError(
                    f"{str(self.target)!r} is in use by {holder}. Wait for it to end (or stop it), "
                    "or choose another --out."
                ) from None
            if _names(self.path, handle):
                break
            handle.close()  # its holder removed it after we opened it: open the name again
        else:
            raise BenchmarkError(
                f"Cannot lock {str(self.target)!r}: its lock file {str(self.path)!r} was replaced "
                f"{_LOCK_TRIES} times while this command took it. Stop the other commands on "
                "it, or choose another --out."
            )
        handle.seek(0)
        text = handle.read(_LOCK_MAX_BYTES + 1)  # what this method writes, or nothing yet
        if text and (len(text) > _LOCK_MAX_BYTES or _HOLDER_LINE.fullmatch(text) is None):
            handle.close()
            raise BenchmarkError(
                f"{str(self.path)!r} is not a lossagent lock file, and {str(self.target)!r} "
                "needs that name for its lock. Move that file away, or choose another --out."
            )
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        handle.write(
            f"{self.what} (pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}, "
            f"command: {command})\n"
        )
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        """Remove the lock file and let go of the lock (closing the file releases it)."""
        if self._file is not None:
            if _names(self.path, self._file):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            self._file.close()
            self._file = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_LOCK_MAX_BYTES = 64 * 1024
_LOCK_TRIES = 100
_HOLDER_LINE = re.compile(r"[^\n]* \(pid \d+, started [^\n]*\)\n?")


def _names(path: Path, handle: Any) -> bool:
    """Whether ``path`` is (still) the name of the open file ``handle``."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _open_lock_file(path: Path, target: Path) -> Any:
    """Open (or create) the lock file ``path`` of ``target`` for reading and writing,
    refusing a symbolic link, a hard link and anything but a regular file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise BenchmarkError(_lock_open_error(path, target, e)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        kind = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise BenchmarkError(
            f"{str(path)!r} is {kind}, and {str(target)!r} needs that name for its lock file. "
            "Move it away, or choose another --out."
        )
    return open(fd, "r+", encoding="utf-8", errors="replace")


def _lock_open_error(path: Path, target: Path, error: OSError) -> str:
    """What to tell a person whose lock file could not be opened."""
    folder = path.parent
    if error.errno == errno.ELOOP or path.is_symlink():
        return (
            f"{str(path)!r} is a symbolic link; the lock file of {str(target)!r} is never "
            "written through a link. Remove the link, or choose another --out."
        )
    if error.errno == errno.ENOENT or not folder.exists():
        return f"Cannot lock {str(target)!r}: the folder {str(folder)!r} does not exist. Create it, or choose another --out."
    if error.errno == errno.EISDIR:
        return (
            f"{str(path)!r} is a folder, and {str(target)!r} needs that name for its lock file. "
            "Move it away, or choose another --out."
        )
    if error.errno == errno.ENOTDIR or not folder.is_dir():
        return f"Cannot lock {str(target)!r}: {str(folder)!r} is not a folder. Choose another --out."
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"Cannot create the lock file {str(path)!r} ({error.strerror}). Choose an --out "
            "in a folder you can write."
        )
    return f"Cannot create the lock file {str(path)!r} ({error.strerror or error}). Choose another --out."


