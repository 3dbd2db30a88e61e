"""Small file-system helpers shared by the stages: the atomic write, the one lock, CSV-safe text."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Callable


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory (``fsync``) so that a rename into it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(Path(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


#: a cell starting with one of these is a formula to a spreadsheet (CSV injection, OWASP)
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: object) -> str:
    """A text cell for a CSV a person may open in a spreadsheet: ``'`` before a leading ``= + - @``, tab
    or CR, so it shows as text and never runs; also before leading ``'`` that precede one of those, so
    that :func:`csv_untext` gives back exactly the original."""
    s = str(value)
    return "'" + s if s.lstrip("'")[:1] in CSV_FORMULA_START and s[:1] != "" else s


def csv_untext(value: object) -> str:
    """Undo :func:`csv_text` (a cell read back from a CSV that videolabel wrote, or a person filled in)."""
    s = str(value)
    return s[1:] if s[:1] == "'" and s.lstrip("'")[:1] in CSV_FORMULA_START and s.lstrip("'") else s


def tmp_path(final: Path) -> Path:
    """A hidden temporary name beside ``final`` (``.<name>.<hex>.tmp``), unique per call."""
    import secrets

    return final.with_name(f".{final.name}.{secrets.token_hex(3)}.tmp")


def replace_atomic(write: Callable[[Path], object], final: Path) -> None:
    """``write(tmp)`` to a temporary file beside ``final``, fsync it, rename it over ``final``.

    On any error (or interruption) the temporary file is removed and the error re-raised; ``final`` is
    then untouched. :func:`write_bytes_atomic`, :func:`write_parquet_atomic` and checkpoints go through it.
    """
    tmp = tmp_path(final)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, final: Path) -> None:
    """Write ``data`` to ``final`` atomically: temporary file, fsync, rename."""
    replace_atomic(lambda tmp: tmp.write_bytes(data), final)


def write_parquet_atomic(table, final: Path) -> None:
    """Write a ``pyarrow.Table`` (or a pandas DataFrame, without its index) to ``final`` atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    replace_atomic(lambda tmp: pq.write_table(table, tmp), final)


def write_user_file(write, path: str | os.PathLike[str]) -> Path:
    """Create ``path``'s folder and call ``write(path)``; an OS error becomes a one-line user error."""
    from videolabel.errors import VideolabelError

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write(p)
    except OSError as exc:
        raise VideolabelError(f"cannot write {p}: {exc.strerror or exc}") from None
    return p


#: the lock files this process holds (real path -> holder text): POSIX locks never exclude their own
#: process, and closing any descriptor of a locked file drops them, so a second :func:`try_lock` of a file
#: held here is refused without opening it
_HELD: dict[str, str] = {}
_HELD_FDS: dict[int, str] = {}


def try_lock(path: str | os.PathLike[str], holder: str = "", *, mkdir: bool = False) -> int | None:
    """Open and lock ``path`` exclusively: the file descriptor, or None when a process (this one included)
    holds it. ``holder``: text written into the file once locked (who holds it; :func:`lock_holder`).

    POSIX record locks (``lockf``): owned by the process, not inherited by forked workers (decode
    processes, data-loader workers), released by the kernel when the process dies (kill -9 included),
    honoured over NFS. Where ``fcntl`` does not exist (Windows) the file is opened and nothing locked."""
    path = Path(path)
    key = os.path.realpath(path)
    if key in _HELD:
        return None
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
    if holder:
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
    _HELD[key] = holder
    _HELD_FDS[fd] = key
    return fd


def release(fd: int | None) -> None:
    """Drop a lock of :func:`try_lock` (closing its file); None is ignored."""
    if fd is None:
        return
    _HELD.pop(_HELD_FDS.pop(fd, ""), None)
    try:
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN)
    except ImportError:  # pragma: no cover - Windows
        pass
    os.close(fd)


def lock_holder(path: str | os.PathLike[str]) -> str:
    """The holder text of a lock file ("" when none); never reopens a file this process holds."""
    key = os.path.realpath(path)
    if key in _HELD:
        return _HELD[key]
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


class FolderLock:
    """An exclusive lock on ``FOLDER/.lock`` (:func:`try_lock`), so that two processes (or two runs in one
    process) do not write one folder at once. The operating system drops it when the holder exits,
    however it exits, so a killed run leaves no stale lock."""

    def __init__(self, folder: str | os.PathLike[str], what: str = "folder") -> None:
        self.path = Path(folder) / ".lock"
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise a one-line :class:`~videolabel.errors.VideolabelError` naming the holder."""
        from videolabel.errors import VideolabelError

        try:
            fd = try_lock(self.path, f"pid {os.getpid()} on {os.uname().nodename}\n")
        except OSError as exc:
            raise VideolabelError(f"cannot lock {self.path.parent}: {exc.strerror}") from None
        if fd is None:
            holder = lock_holder(self.path).strip() or "another process"
            raise VideolabelError(f"{self.what} {self.path.parent} is in use by {holder}: wait for it to end "
                                  "or stop it, then try again")
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock; safe to call twice."""
        if self._fd is not None:
            release(self._fd)
            self._fd = None
