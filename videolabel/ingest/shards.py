"""Shard files: names, atomic writes, the streaming shard writer and the leftovers cleaner.

A shard ``<name>`` is four files in ``CACHE/shards/`` (see docs/architecture.md):
``<name>.video.npy``, ``<name>.audio.npy``, ``<name>.clips.parquet`` and, written **last**, the
commit marker ``<name>.videos.parquet``. Failed and skipped videos of the same batch go to
``CACHE/failures/<name>.parquet``. Every file is written under a temporary name starting with ``.``
(ignored by readers and by pyarrow datasets), flushed, fsync'ed and renamed.

Names: ``p<i>of<n>-<run token>-<seq>``: the part, a token unique to the run (time, pid, random)
and a sequence number, so no two processes and no two ``--part``s can ever produce the same name.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from videolabel.fsutil import fsync_dir, tmp_path, write_parquet_atomic

SHARDS = "shards"
FAILURES = "failures"
LOCKS = "locks"

VIDEO_SUFFIX = ".video.npy"
AUDIO_SUFFIX = ".audio.npy"
CLIPS_SUFFIX = ".clips.parquet"
VIDEOS_SUFFIX = ".videos.parquet"  # the commit marker
DATA_SUFFIXES = (VIDEO_SUFFIX, AUDIO_SUFFIX, CLIPS_SUFFIX)

_NAME = re.compile(r"^\.?(?P<name>p(?P<i>\d+)of(?P<n>\d+)-[0-9a-z]+-\d+)\.")

MANIFEST_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("size_bytes", pa.int64()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("video_codec", pa.string()),
        ("audio_codec", pa.string()),
        ("has_audio", pa.bool_()),
        ("n_clips", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("pix_fmt", pa.string()),
        ("rotation", pa.float64()),
        ("audio_sample_rate", pa.int64()),
        ("padded_frames", pa.int64()),
        ("decode_s", pa.float64()),
        # audio_level="video": the video's loudest stored bin (-inf: no sound) and per band the median of its
        # bins (ingest/levelstats.py); null in records written before they were stored
        ("level_peak", pa.float32()),
        ("level_background", pa.list_(pa.float32())),
        ("shard", pa.string()),
        ("shard_offset", pa.int64()),  # first row of the video's clips in the shard arrays
    ]
)
#: record columns the manifest views leave out: statistics for the runs (``ingest/levelstats.py``), not for people
#: (``level_background`` is a list of ``n_mels`` floats per video)
STATS_COLUMNS = ("level_peak", "level_background")
CLIPS_SCHEMA = pa.schema(
    [("video_id", pa.string()), ("clip", pa.int64()), ("start_s", pa.float64()), ("audio_start_s", pa.float64())]
)


def part_tag(part: tuple[int, int]) -> str:
    return f"p{part[0]}of{part[1]}"


def new_run_token() -> str:
    return f"{time.time_ns() // 1_000_000:x}{os.getpid():x}{secrets.token_hex(3)}"


def parse_name(filename: str) -> tuple[str, tuple[int, int]] | None:
    """``(shard name, (i, n))`` of a shard/failure/tmp file name, or None for a foreign file."""
    m = _NAME.match(filename)
    if not m:
        return None
    return m.group("name"), (int(m.group("i")), int(m.group("n")))


# --- atomic writes --------------------------------------------------------------------------------


def records_table(rows: list[dict[str, Any]], schema: pa.Schema = MANIFEST_SCHEMA) -> pa.Table:
    """``rows`` (dicts keyed by column name; a missing key is null) as a table of ``schema``."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    arrays = {name: pa.array(values, type=schema.field(name).type) for name, values in cols.items()}
    return pa.table(arrays, schema=schema)


def warm_table_path() -> None:
    """Build one empty records table: the first table a process builds makes pyarrow import pandas
    (0.4 s of CPU, AMD EPYC, 2026-12-07), which the driver lets a thread pay while the workers decode
    instead of the writer paying it when it commits (:class:`videolabel.ingest.driver._Decoder`)."""
    try:
        records_table([])
    except Exception:  # noqa: BLE001 - the writer meets the same error and reports it
        pass


# --- .npy written as a stream ---------------------------------------------------------------------


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], total: int) -> bytes:
    d = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.lib.format.dtype_to_descr(dtype), shape)
    body = d.encode("latin1")
    pad = total - 10 - len(body) - 1
    if pad < 0:
        raise ValueError("npy header does not fit")
    header = body + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


class NpyAppender:
    """Append arrays of one item shape to a ``.npy`` file; the header is fixed up on :meth:`commit`."""

    def __init__(self, final: Path, dtype: Any, item_shape: tuple[int, ...]) -> None:
        self.final = final
        self.dtype = np.dtype(dtype)
        self.item_shape = tuple(item_shape)
        longest = len(_npy_header(self.dtype, (10**15, *self.item_shape), 4096).rstrip(b" \n"))
        self.header_len = ((longest + 1 + 63) // 64) * 64
        self.tmp = tmp_path(final)
        self.fh = open(self.tmp, "wb")
        self.fh.write(b"\0" * self.header_len)
        self.rows = 0

    def append(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if tuple(arr.shape[1:]) != self.item_shape:
            raise ValueError(f"shape {arr.shape} does not match items {self.item_shape}")
        self.fh.write(arr.data.cast("B"))
        self.rows += arr.shape[0]

    def commit(self) -> None:
        self.fh.seek(0)
        self.fh.write(_npy_header(self.dtype, (self.rows, *self.item_shape), self.header_len))
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self.fh.close()
        finally:
            self.tmp.unlink(missing_ok=True)


# --- the shard writer -----------------------------------------------------------------------------


class ShardWriter:
    """Groups finished videos into shards; used by the single writer (the main process)."""

    def __init__(self, cache: Path, part: tuple[int, int], *, frames: int, height: int, width: int, n_mels: int,
                 mel_frames: int) -> None:
        self.cache = Path(cache)
        self.shards_dir = self.cache / SHARDS
        self.failures_dir = self.cache / FAILURES
        self.prefix = f"{part_tag(part)}-{new_run_token()}"
        self.seq = 0
        self.video_shape = (frames, height, width, 3)
        self.audio_shape = (n_mels, mel_frames)
        self.written: list[Path] = []
        self.committed_videos = 0
        self._reset()

    def _reset(self) -> None:
        self.name = f"{self.prefix}-{self.seq:05d}"
        self._video: NpyAppender | None = None
        self._audio: NpyAppender | None = None
        self.ok_rows: list[dict[str, Any]] = []
        self.clip_rows: list[dict[str, Any]] = []
        self.failed_rows: list[dict[str, Any]] = []

    @property
    def pending(self) -> int:
        return len(self.ok_rows) + len(self.failed_rows)

    @property
    def pending_ok(self) -> int:
        return len(self.ok_rows)

    def add(self, record: dict[str, Any], video: np.ndarray | None = None, audio: np.ndarray | None = None,
            clip_starts: Iterable[float] = (), audio_starts: Iterable[float] = ()) -> None:
        """Add one processed video: ``ok`` with its arrays, or failed/skipped (record only)."""
        if record["status"] != "ok":
            self.failed_rows.append(dict(record, shard=None, shard_offset=None))
            return
        assert video is not None and audio is not None
        if self._video is None:
            self.shards_dir.mkdir(parents=True, exist_ok=True)
            self._video = NpyAppender(self.shards_dir / f"{self.name}{VIDEO_SUFFIX}", np.uint8, self.video_shape)
            self._audio = NpyAppender(self.shards_dir / f"{self.name}{AUDIO_SUFFIX}", np.float16, self.audio_shape)
        offset = self._video.rows
        self._video.append(video)
        assert self._audio is not None
        self._audio.append(audio)
        self.ok_rows.append(dict(record, shard=self.name, shard_offset=offset))
        for k, (s, a) in enumerate(zip(clip_starts, audio_starts)):
            self.clip_rows.append(
                {"video_id": record["video_id"], "clip": k, "start_s": float(s), "audio_start_s": float(a)})

    def flush(self) -> list[Path]:
        """Commit what is pending (a shard and/or a failures file); returns the paths written."""
        paths: list[Path] = []
        if self.failed_rows:
            self.failures_dir.mkdir(parents=True, exist_ok=True)
            path = self.failures_dir / f"{self.name}.parquet"
            write_parquet_atomic(records_table(self.failed_rows), path)
            paths.append(path)
        if self.ok_rows:
            assert self._video is not None and self._audio is not None
            self._video.commit()
            self._audio.commit()
            clips = self.shards_dir / f"{self.name}{CLIPS_SUFFIX}"
            write_parquet_atomic(records_table(self.clip_rows, CLIPS_SCHEMA), clips)
            marker = self.shards_dir / f"{self.name}{VIDEOS_SUFFIX}"
            write_parquet_atomic(records_table(self.ok_rows), marker)  # commit
            paths += [self._video.final, self._audio.final, clips, marker]
            self.committed_videos += len(self.ok_rows)
        if paths:
            for d in {p.parent for p in paths}:
                fsync_dir(d)
            self.seq += 1
            self.written += paths
            self._reset()
        return paths

    def abort(self) -> None:
        for app in (self._video, self._audio):
            if app is not None:
                app.abort()
        self._reset()


# --- reading what is committed --------------------------------------------------------------------


def committed_shards(cache: Path) -> list[str]:
    """Names of the committed shards (those with their ``.videos.parquet``), sorted."""
    d = Path(cache) / SHARDS
    if not d.is_dir():
        return []
    return sorted(
        f.name[: -len(VIDEOS_SUFFIX)]
        for f in d.iterdir()
        if f.name.endswith(VIDEOS_SUFFIX) and not f.name.startswith(".")
    )


def failure_files(cache: Path) -> list[Path]:
    d = Path(cache) / FAILURES
    if not d.is_dir():
        return []
    return sorted(f for f in d.iterdir() if f.suffix == ".parquet" and not f.name.startswith("."))


def read_npy_header(path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, data offset)`` of a .npy file without reading its data."""
    with open(path, "rb") as fh:
        magic = fh.read(8)
        if magic[:6] != b"\x93NUMPY":
            raise ValueError(f"{path} is not a .npy file")
        if magic[6] == 1:
            hlen = int.from_bytes(fh.read(2), "little")
            start = 10
        else:
            hlen = int.from_bytes(fh.read(4), "little")
            start = 12
        header = ast.literal_eval(fh.read(hlen).decode("latin1"))
    return np.dtype(header["descr"]), tuple(header["shape"]), start + hlen


def check_shard(cache: Path, name: str, frames: int, height: int, width: int, n_mels: int, mel_frames: int,
                videos: int | None = None) -> int:
    """Check a committed shard's data files against the cache config; returns its number of clips.

    Raises :class:`~videolabel.errors.VideolabelError` (one line, naming the shard and what to do) for
    a missing, truncated or foreign ``.npy``, a missing or unreadable ``clips.parquet``, or
    arrays that do not hold the clips the records promise. Reads headers and footers only.
    """
    from videolabel.errors import VideolabelError  # local: keep this module's imports light

    base = Path(cache) / SHARDS / name
    what = (f"damaged cache shard {name} in {cache}: {{}}; delete {base}.* and run the same ingest again "
            "to decode its videos anew (or ingest with --overwrite)")
    rows = []
    for suffix, dtype, item in ((VIDEO_SUFFIX, np.uint8, (frames, height, width, 3)),
                                (AUDIO_SUFFIX, np.float16, (n_mels, mel_frames))):
        path = Path(f"{base}{suffix}")
        try:
            d, shape, offset = read_npy_header(path)
            size = path.stat().st_size
        except FileNotFoundError:
            raise VideolabelError(what.format(f"{path.name} is missing")) from None
        except (OSError, ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError) as exc:
            reason = f"{path.name} is not a readable .npy file ({type(exc).__name__})"
            raise VideolabelError(what.format(reason)) from None
        if d != np.dtype(dtype) or tuple(shape[1:]) != item or len(shape) != 1 + len(item):
            raise VideolabelError(what.format(f"{path.name} holds {d} {tuple(shape)}, not {np.dtype(dtype)} "
                                              f"(n, {', '.join(map(str, item))}) as the cache config says"))
        need = offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if size < need:
            raise VideolabelError(what.format(f"{path.name} is truncated ({size} of {need} bytes)"))
        rows.append(int(shape[0]))
    if rows[0] != rows[1]:
        raise VideolabelError(what.format(f"{rows[0]} video clips but {rows[1]} spectrograms"))
    clips = Path(f"{base}{CLIPS_SUFFIX}")
    try:
        n = pq.ParquetFile(clips).metadata.num_rows
    except FileNotFoundError:
        raise VideolabelError(what.format(f"{clips.name} is missing")) from None
    except (OSError, pa.ArrowException) as exc:
        raise VideolabelError(what.format(f"{clips.name} is unreadable ({type(exc).__name__})")) from None
    if n != rows[0]:
        raise VideolabelError(what.format(f"{clips.name} lists {n} clips, the arrays hold {rows[0]}"))
    return rows[0]


def garbage(cache: Path) -> dict[tuple[int, int], list[Path]]:
    """Leftovers of killed runs (tmp files, uncommitted shard data) grouped by the part that made them."""
    out: dict[tuple[int, int], list[Path]] = {}
    committed = set(committed_shards(cache))
    for sub in (SHARDS, FAILURES):
        d = Path(cache) / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            parsed = parse_name(f.name)
            if parsed is None:
                continue
            name, part = parsed
            if f.name.startswith(".") or (
                sub == SHARDS and f.name.endswith(DATA_SUFFIXES) and name not in committed
            ):
                out.setdefault(part, []).append(f)
    return out
