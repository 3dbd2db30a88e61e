"""The cache as a whole: config.json, records of processed videos, manifests, part locks, wiping.

The truth is in the per-shard ``.videos.parquet`` and the ``failures/*.parquet`` records; the
manifests (``manifest.parquet``, ``manifest-part-<i>-of-<n>.parquet``) are views rebuilt from them,
so any run, or the reader, can rebuild them, and concurrent ``--part`` runs never write the same
file except the union manifest, which is replaced atomically.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from videolabel import __version__
from videolabel.config import FORMAT_VERSION, IngestConfig, from_dict
from videolabel.errors import ConfigMismatchError, VideolabelError, first_line
from videolabel.fsutil import fsync_dir, release, tmp_path, try_lock, write_parquet_atomic
from videolabel.ingest.discover import part_of
from videolabel.ingest.shards import (
    FAILURES,
    LOCKS,
    MANIFEST_SCHEMA,
    SHARDS,
    STATS_COLUMNS,
    VIDEOS_SUFFIX,
    committed_shards,
    failure_files,
)

CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.parquet"


def manifest_part_file(part: tuple[int, int]) -> str:
    return f"manifest-part-{part[0]}-of-{part[1]}.parquet"


# --- config.json ----------------------------------------------------------------------------------


def config_document(config: IngestConfig, ffmpeg_version: str) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "config_hash": config.hash(),
        "ffmpeg_version": ffmpeg_version,
        "videolabel_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def read_cache_config(cache: str | os.PathLike[str]) -> IngestConfig:
    """The :class:`IngestConfig` a cache was made with; one-line error for a non-cache directory."""
    cache = Path(cache)
    path = cache / CONFIG_FILE
    if not cache.is_dir():
        raise VideolabelError(f"cache not found: {cache}")
    if not path.is_file():
        raise VideolabelError(f"not a videolabel cache (no {CONFIG_FILE}): {cache}")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise VideolabelError(f"unreadable {path} (damaged cache config: {type(exc).__name__}: "
                              f"{first_line(exc)}); ingest again with --overwrite") from None
    version = doc.get("format_version") if isinstance(doc, dict) else None
    if version != FORMAT_VERSION or not isinstance(doc.get("config"), dict):
        raise VideolabelError(f"{path}: cache format version {version!r} is not supported "
                              f"(this videolabel reads {FORMAT_VERSION})")
    return from_dict(IngestConfig, doc["config"], origin=str(path))


def ensure_config(cache: Path, config: IngestConfig, ffmpeg_version: str) -> tuple[Path, bool]:
    """Create ``config.json`` (atomically, exclusively) or check that it matches ``config``.

    Returns ``(path, created)``.
    """
    path = cache / CONFIG_FILE
    created = False
    if not path.exists():
        data = json.dumps(config_document(config, ffmpeg_version), indent=2, sort_keys=True).encode() + b"\n"
        tmp = tmp_path(path)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # exclusive publish: fails if another part created it meanwhile
            fsync_dir(cache)
            created = True
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    existing = read_cache_config(cache)
    if existing != config:
        diffs = [
            f"{k} {getattr(existing, k)!r} -> {getattr(config, k)!r}"
            for k in existing.to_dict()
            if getattr(existing, k) != getattr(config, k)
        ]
        raise ConfigMismatchError(
            f"{cache} was made with a different ingest config ({', '.join(diffs)}); "
            "use another --out, or --overwrite to wipe it"
        )
    return path, created


# --- records and manifests ------------------------------------------------------------------------


def _read(path: Path) -> pa.Table | None:
    """A committed record file (a shard's ``.videos.parquet`` or a failures file) in the manifest schema;
    None when it vanished meanwhile (a concurrent ``--overwrite``). Every record file is published by an
    atomic rename, so one that cannot be read is damaged: a one-line error, never fewer videos."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException) as exc:
        raise VideolabelError(
            f"damaged cache file {path} (unreadable Parquet: {type(exc).__name__}): its videos cannot be "
            f"trusted; delete {_fix_hint(path)} and run the same ingest again to decode them anew "
            "(or ingest with --overwrite)") from None
    missing = [n for n in ("video_id", "status") if n not in table.column_names]
    if missing:
        raise VideolabelError(f"damaged cache file {path}: no {', '.join(missing)} column; delete "
                              f"{_fix_hint(path)} and run the same ingest again")
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in MANIFEST_SCHEMA]
    return pa.table(cols, schema=MANIFEST_SCHEMA)


def _fix_hint(path: Path) -> str:
    """What to delete to re-decode the videos of a damaged record file: the whole shard, or the file."""
    if path.name.endswith(VIDEOS_SUFFIX):
        return f"{path.parent / path.name[: -len(VIDEOS_SUFFIX)]}.*"
    return str(path)


def read_records(cache: Path) -> pa.Table:
    """All committed records (ok from shards, failed/skipped from failures), one row per video_id.

    Duplicates (which a correct run never makes) resolve to ``ok`` over others, then to the
    lexicographically first shard.
    """
    tables = []
    for name in committed_shards(cache):
        t = _read(cache / SHARDS / f"{name}{VIDEOS_SUFFIX}")
        if t is not None:
            tables.append(t)
    for f in failure_files(cache):
        t = _read(f)
        if t is not None:
            tables.append(t)
    if not tables:  # (not ``Schema.empty_table()``: it imports pandas, 0.4 s before a fresh cache's first decode)
        return pa.Table.from_batches([], schema=MANIFEST_SCHEMA)
    table = pa.concat_tables(tables)
    ids = table.column("video_id").to_pylist()
    if len(set(ids)) != len(ids):
        status = table.column("status").to_pylist()
        shard = table.column("shard").to_pylist()
        best: dict[str, int] = {}
        for row, vid in enumerate(ids):
            key = (status[row] != "ok", shard[row] or "~")
            if vid not in best or key < (status[best[vid]] != "ok", shard[best[vid]] or "~"):
                best[vid] = row
        table = table.take(sorted(best.values()))
    return table.sort_by("video_id")


def write_manifests(cache: Path, records: pa.Table, part: tuple[int, int]) -> list[Path]:
    """Rewrite ``manifest.parquet`` (all records) and, for n > 1, this part's manifest; both without the
    records' :data:`~videolabel.ingest.shards.STATS_COLUMNS`."""
    records = records.drop_columns([c for c in STATS_COLUMNS if c in records.column_names])
    written = []
    if part[1] > 1:
        i, n = part
        mask = [part_of(v, n) == i for v in records.column("video_id").to_pylist()]
        path = cache / manifest_part_file(part)
        write_parquet_atomic(records.filter(pa.array(mask, pa.bool_())), path)
        written.append(path)
    path = cache / MANIFEST_FILE
    write_parquet_atomic(records, path)
    written.append(path)
    fsync_dir(cache)
    return written


def manifest_is_current(cache: Path, records: pa.Table) -> bool:
    path = cache / MANIFEST_FILE
    if not path.is_file():
        return False
    try:
        ids = pq.read_table(path, columns=["video_id"]).column("video_id").to_pylist()
    except (OSError, pa.ArrowException):
        return False
    return ids == records.column("video_id").to_pylist()


def rebuild_manifest(cache: str | os.PathLike[str]) -> Path:
    """Rebuild ``manifest.parquet`` from the committed records (e.g. after parts ran concurrently)."""
    cache = Path(cache)
    read_cache_config(cache)
    return write_manifests(cache, read_records(cache), (0, 1))[-1]


# --- locks ----------------------------------------------------------------------------------------


def _lock_path(cache: Path, part: tuple[int, int]) -> Path:
    return cache / LOCKS / f"part-{part[0]}-of-{part[1]}.lock"


@contextlib.contextmanager
def part_lock(cache: Path, part: tuple[int, int], wait_s: float = 2.0) -> Iterator[None]:
    """Hold the lock of ``part`` (refuse a second concurrent run of the same part)."""
    deadline = time.monotonic() + wait_s
    while True:
        fd = try_lock(_lock_path(cache, part), mkdir=True)
        if fd is not None:
            break
        if time.monotonic() > deadline:
            raise VideolabelError(f"another ingest of part {part[0]}/{part[1]} is running on {cache}")
        time.sleep(0.2)
    try:
        yield
    finally:
        release(fd)


def clean_garbage(cache: Path, own: tuple[int, int]) -> int:
    """Delete leftovers of killed runs of parts that are not running now; returns the count."""
    from videolabel.ingest.shards import garbage  # local: avoid a cycle at import

    removed = 0
    for part, files in garbage(cache).items():
        fd = None
        if part != own:
            fd = try_lock(_lock_path(cache, part), mkdir=True)
            if fd is None:
                continue  # that part is running: its files are not garbage
        try:
            for f in files:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
                    removed += 1
        finally:
            release(fd)
    # stale temporary files of the shared files (manifest, config) of runs killed long ago
    for f in cache.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - f.stat().st_mtime > 3600:
                f.unlink()
                removed += 1
    return removed


def wipe(cache: Path) -> None:
    """Remove a cache's files (``--overwrite``); refuses while any part is running on it."""
    held = []
    try:
        for lock in sorted((cache / LOCKS).glob("part-*.lock")):
            fd = try_lock(lock, mkdir=True)
            if fd is None:
                raise VideolabelError(f"cannot --overwrite {cache}: an ingest is running on it ({lock.stem})")
            held.append(fd)
        for sub in (SHARDS, FAILURES):
            shutil.rmtree(cache / sub, ignore_errors=True)
        for f in [cache / CONFIG_FILE, cache / MANIFEST_FILE, *cache.glob("manifest-part-*.parquet"),
                  *cache.glob(".*.tmp")]:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
    finally:
        for fd in held:
            release(fd)
