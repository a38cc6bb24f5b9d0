"""Atomic file writes: a long job never leaves a half-written file behind.

- ``atomic_write`` / ``atomic_write_stream``: one file, written beside its target and renamed into
  place (fsync'ed first), so a reader sees the old file or the new one.
- ``replace_together``: several files that belong together (a checkpoint's weights and its training
  state) replaced as one unit. Each is written in full to ``TARGET.new``; then a small journal naming
  the renames is written atomically — that is the commit point — and the renames are applied. A
  crash or a failed write before the journal leaves the old files untouched (the ``.new`` files are
  removed, at once or by ``recover_together``); a crash after it is completed by
  ``recover_together``, which replays the renames. Disk full is one ``DiskFullError`` line.

Every byte these functions write goes through ``write_fd`` and every rename of ``replace_together``
through ``rename``: the fault tests replace those two to fail or stop at a chosen byte.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from teso.errors import TesoError

_CHUNK = 8 << 20  # bytes per os.write: bounded kernel copies, and fault injection at fine offsets
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(TesoError):
    """Not enough space for a write: names the file, the bytes needed and the bytes free."""

    def __init__(self, message: str, path: Path, needed: int, free: int) -> None:
        super().__init__(message)
        self.path, self.needed, self.free = path, needed, free


class FileWriteError(TesoError):
    """A write failed for another reason than space (the OS error is in the message)."""


def write_fd(fd: int, data: Any) -> None:
    """Write all of ``data`` (any buffer) to ``fd``: ``os.write`` may write less than asked."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.write(fd, view[:_CHUNK])
        view = view[n:]


def rename(src: Path, dst: Path) -> None:
    """``os.replace``: atomic on POSIX. A module function so that tests can stop between renames."""
    os.replace(src, dst)


class Sink:
    """A write-only binary stream over a file descriptor; counts the bytes written."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        write_fd(self.fd, data)  # looked up at call time: the fault tests patch it
        self.written += n
        return n


def fsync_dir(path: Path) -> None:
    """Make the renames inside directory ``path`` durable (a no-op where the OS cannot)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened; renames there are durable on return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: this file system does not sync directories
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path`` and rename it into place.

    The rename is atomic on POSIX, so readers see the old file or the new one, never a partial one;
    the data is fsync'ed before the rename, so a power cut cannot leave an empty file under the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        _fsync_file(tmp_path)
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    fsync_dir(path.parent)
    return path


def atomic_write_stream(path: str | os.PathLike, write: Callable[[Sink], Any]) -> Path:
    """Like ``atomic_write``, but ``write`` gets a ``Sink`` (all bytes go through ``write_fd``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        try:
            write(Sink(fd))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single ``write`` + ``fsync``.

    A crash can lose the line in flight but never corrupts earlier lines; readers of JSONL files
    written this way must skip a trailing line that does not parse.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# ----- several files as one unit -------------------------------------------------------------------
JOURNAL_FORMAT = "teso-replace-together"


def pending_path(target: Path) -> Path:
    """Where ``replace_together`` writes ``target`` before the commit: ``TARGET.new``."""
    return target.with_name(target.name + ".new")


def replace_together(journal: Path, files: Sequence[tuple[Path, int, Callable[[Sink], Any]]]) -> list[Path]:
    """Replace every ``target`` of ``files`` — ``(target, size in bytes, write(sink))`` — as one unit.

    All targets must be in ``journal``'s directory. ``size`` is what ``write`` will write, exactly:
    the free space is checked against the sum first, and a writer that writes another amount is a
    bug (RuntimeError). A single file needs no journal (its rename is the commit).

    Raises:
        DiskFullError: not enough space (before or while writing); nothing was replaced and no
            ``.new`` file is left.
        FileWriteError: any other OS error while writing; likewise nothing was replaced.
    """
    journal = Path(journal)
    directory = journal.parent
    directory.mkdir(parents=True, exist_ok=True)
    if any(Path(t).parent != directory for t, _, _ in files):
        raise ValueError(f"replace_together: every target must be in {directory}")
    recover_together(journal, [Path(t) for t, _, _ in files])
    needed = sum(size for _, size, _ in files)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise _disk_full(Path(files[0][0]), needed, free, files)
    written: list[Path] = []
    current = Path(files[0][0])
    try:
        for target, size, write in files:
            current = Path(target)  # errors name the file the user knows, not its .new stand-in
            written.append(pending_path(current))
            fd = os.open(written[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                sink = Sink(fd)
                write(sink)
                if sink.written != size:
                    raise RuntimeError(f"{target}: writer wrote {sink.written} bytes, announced {size}")
                os.fsync(fd)
            finally:
                os.close(fd)
        if len(files) > 1:
            current = journal
            renames = [[pending_path(Path(t)).name, Path(t).name] for t, _, _ in files]
            record = {"format": JOURNAL_FORMAT, "renames": renames}
            data = (json.dumps(record) + "\n").encode("utf-8")
            atomic_write_stream(journal, lambda s: s.write(data))
    except BaseException as exc:
        for p in written:
            p.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            if exc.errno in _NO_SPACE:
                raise _disk_full(current, needed, shutil.disk_usage(directory).free, files) from exc
            raise FileWriteError(f"{current}: write failed ({exc.strerror or exc})") from exc
        raise
    # Committed: from here on a crash is completed by recover_together.
    if len(files) > 1:
        _apply(journal)
    else:
        rename(written[0], Path(files[0][0]))
        fsync_dir(directory)
    return [Path(t) for t, _, _ in files]


def recover_together(journal: Path, targets: Sequence[Path]) -> str | None:
    """Finish or undo an interrupted ``replace_together`` of ``targets``.

    Returns "completed" (the journal existed: its renames were replayed), "discarded" (``.new``
    files of an uncommitted write were removed) or None (nothing to do).
    """
    journal = Path(journal)
    if journal.is_file():
        _apply(journal)
        return "completed"
    stale = [p for p in map(pending_path, map(Path, targets)) if p.exists()]
    # a journal whose own atomic write was interrupted: never renamed, so never committed
    stale += list(journal.parent.glob(f".{journal.name}.*.tmp"))
    for p in stale:
        p.unlink()
    return "discarded" if stale else None


def _apply(journal: Path) -> None:
    directory = journal.parent
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        if record.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"format {record.get('format')!r}")
        renames = [(directory / src, directory / dst) for src, dst in record["renames"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TesoError(
            f"{journal}: unreadable commit journal ({exc}); it lists the files of an interrupted "
            "checkpoint write; delete it (and any *.new file beside it) to keep the previous files"
        ) from exc
    for src, dst in renames:
        if src.exists():  # absent: renamed already, before an interruption
            rename(src, dst)
    fsync_dir(directory)
    journal.unlink()
    fsync_dir(directory)


def _disk_full(path: Path, needed: int, free: int, files: Sequence[tuple[Path, int, Any]]) -> DiskFullError:
    parts = ", ".join(f"{Path(t).name} {format_bytes(s)}" for t, s, _ in files)
    return DiskFullError(
        f"{path}: no space left on device: the write needs {format_bytes(needed)} ({parts}), "
        f"{format_bytes(free)} free in {path.parent}",
        path,
        needed,
        free,
    )


def format_bytes(n: int) -> str:
    """``n`` bytes in readable decimal units: "512 B", "12.3 MB", "1.40 GB"."""
    if n < 1000:
        return f"{n} B"
    if n < 1e6:
        return f"{n / 1e3:.1f} kB"
    if n < 1e9:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e9:.2f} GB"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
