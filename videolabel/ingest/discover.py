"""Finding source videos, naming them (``video_id``) and sharing them between ``--part``s. Pure-ish.

* Recursive walk of SRC following directory symlinks, each real directory visited once (by device
  and inode), so symlink cycles neither hang nor duplicate; order is sorted and deterministic.
* Files are kept by extension (:data:`VIDEO_EXTENSIONS`, case-insensitive), by ``--glob`` (matched
  against the path relative to SRC, or against the file name when the pattern has no ``/``), or
  listed one per line in ``--list FILE`` (relative to SRC or absolute; ``#`` comments and blank
  lines ignored). Broken entries (dangling symlinks, unreadable files, a directory listed as a
  video) are kept: they become ``failed`` rows of the manifest, not silent omissions; so is a
  sub-folder that cannot be listed (no read or search permission), as one row ``<folder>/``.
* ``video_id`` = first 16 hex digits of sha1 of the path relative to SRC with POSIX separators.
* ``--part i/n`` takes the videos with ``int(video_id, 16) % n == i``: disjoint, covering, stable.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from videolabel.errors import VideolabelError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp", ".ogv",
     ".m2ts", ".mts", ".mxf", ".vob", ".3g2", ".asf", ".f4v"}
)


@dataclass(frozen=True, order=True)
class Source:
    """One candidate video: ``rel`` (POSIX, relative to SRC; the identity) and its absolute path."""

    rel: str
    path: str
    video_id: str
    error: str | None = None  # set for a folder that could not be listed: a failed row, never a silent loss


def video_id_of(rel: str) -> str:
    """Stable id: first 16 hex digits of sha1 of the POSIX relative path (UTF-8, surrogates kept)."""
    return hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def part_of(video_id: str, n: int) -> int:
    """Which of ``n`` parts a video belongs to (deterministic, uniform)."""
    return int(video_id, 16) % n


def parse_part(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; one-line error otherwise."""
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            a, b = str(text).split("/")
            i, n = int(a), int(b)
        except ValueError:
            raise VideolabelError(f"--part must look like i/n (e.g. 0/4), not {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise VideolabelError(f"--part {i}/{n}: need 0 <= i < n")
    return i, n


def _rel_posix(path: Path, root: Path) -> str:
    return PurePosixPath(*path.relative_to(root).parts).as_posix()


def _matches(rel: str, pattern: str) -> bool:
    if "/" not in pattern:
        return fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern)
    if fnmatch.fnmatchcase(rel, pattern):
        return True
    while pattern.startswith("**/"):  # "**/" also matches zero directories
        pattern = pattern[3:]
        if fnmatch.fnmatchcase(rel, pattern):
            return True
    return False


def walk(src: Path, glob: str | None = None) -> list[Source]:
    """All candidate files under ``src`` (sorted by relative path)."""
    root = Path(os.path.abspath(src))
    seen_dirs: set[tuple[int, int]] = set()
    found: list[Source] = []
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue  # a symlink cycle or a second way into the same directory
            seen_dirs.add(key)
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            if d == root:
                raise VideolabelError(f"cannot list the source folder {src}: {exc.strerror or exc}") from None
            rel = _rel_posix(d, root) + "/"  # its videos cannot be named: the folder is recorded instead
            found.append(Source(rel, str(d), video_id_of(rel),
                                error=f"folder cannot be listed ({exc.strerror or exc}): its videos are missing"))
            continue
        subdirs = []
        for e in entries:
            p = Path(e.path)
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(p)
                continue
            rel = _rel_posix(p, root)
            keep = _matches(rel, glob) if glob else Path(e.name).suffix.lower() in VIDEO_EXTENSIONS
            if keep:
                found.append(Source(rel, str(p), video_id_of(rel)))
        stack.extend(reversed(subdirs))
    found.sort()
    return found


def read_list(src: Path, list_file: Path) -> list[Source]:
    """Sources named in ``list_file`` (one path a line, relative to ``src`` or absolute)."""
    root = Path(os.path.abspath(src))
    try:
        text = Path(list_file).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise VideolabelError(f"cannot read --list {list_file}: {exc.strerror or exc}") from None
    out: dict[str, Source] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        p = p if p.is_absolute() else root / p
        p = Path(os.path.normpath(p))
        try:
            rel = _rel_posix(p, root)
        except ValueError:  # outside SRC: identified by its absolute path
            rel = p.as_posix()
        out.setdefault(rel, Source(rel, str(p), video_id_of(rel)))
    return sorted(out.values())


def discover(
    src: str | os.PathLike[str], *, glob: str | None = None, list_file: str | os.PathLike[str] | None = None
) -> list[Source]:
    """Candidate videos of SRC (see the module docstring); raises for a missing SRC."""
    root = Path(src)
    if not root.exists():
        raise VideolabelError(f"source not found: {src}")
    if not root.is_dir():
        raise VideolabelError(f"source is not a directory: {src}")
    if list_file is not None:
        return read_list(root, Path(list_file))
    return walk(root, glob)


def select_part(sources: list[Source], part: tuple[int, int]) -> list[Source]:
    i, n = part
    return [s for s in sources if part_of(s.video_id, n) == i]
