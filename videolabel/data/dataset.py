"""``ShardDataset``: O(1) random access to the clips of a cache through memory maps.

No decoding at read time: a clip is a slice of a shard's ``.video.npy`` / ``.audio.npy``. The
dataset sees every committed shard of every ``--part`` (the union), ordered by ``video_id``;
uncommitted files of a running or killed ingest are invisible. Memory maps are opened lazily in the
process that reads (the object pickles without them), so it works with DataLoader workers under
fork, forkserver or spawn.

With a DataLoader, the batched fast path ``__getitems__`` returns one dict of batched tensors, so
pass ``collate_fn=ShardDataset.collate`` (identity for that dict; stacks a list of items)::

    DataLoader(ds, batch_size=64, shuffle=True, num_workers=2, collate_fn=ShardDataset.collate)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from videolabel.config import IngestConfig
from videolabel.errors import VideolabelError
from videolabel.ingest.manifest import read_cache_config, read_records
from videolabel.ingest.shards import AUDIO_SUFFIX, SHARDS, STATS_COLUMNS, VIDEO_SUFFIX, check_shard

VIDEO_COLUMNS = ["video_id", "path", "has_audio", "n_clips", "first_clip"]


class _Unread:
    """:attr:`ShardDataset.level_stats` not read from the records yet."""


_UNREAD = _Unread()


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


def _shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory (as default_collate makes in a DataLoader worker)."""
    try:
        numel = int(np.prod(shape))
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
        return torch.empty(0, dtype=dtype).new(storage).resize_(*shape)
    except (AttributeError, RuntimeError):  # pragma: no cover - private API moved
        return torch.empty(shape, dtype=dtype)


class _Buffers:
    """Batch arrays of one process, reused once nothing outside holds them.

    Fresh memory is the cost of a batched read: every page of a new 126 MB batch (64 paper-size clips)
    is faulted in and zeroed by the kernel, which on the 2-core VMs measured here took 0.3-0.5 s per
    batch, against 0.03 s to fill memory already mapped. An array is handed out again only when its
    reference count shows that the pool alone holds it (every tensor or view of a batch keeps its
    array alive), so a batch the caller still holds is never overwritten.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.free: dict[tuple[tuple[int, ...], str], list[np.ndarray]] = {}

    def get(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        arrays = self.free.setdefault(key, [])
        for arr in arrays:
            if sys.getrefcount(arr) <= 3:  # the list, the loop variable and getrefcount's argument
                return arr
        arr = np.empty(shape, dtype)
        if len(arrays) < self.keep:
            arrays.append(arr)
        return arr


class ShardDataset(torch.utils.data.Dataset):
    """All clips of the ``ok`` videos of a cache (see docs/architecture.md, "Reader")."""

    #: batches of each size whose memory :meth:`__getitems__` reuses outside DataLoader workers
    reuse_batches = 2

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)
        self.config: IngestConfig = read_cache_config(self.cache_dir)
        table = read_records(self.cache_dir)
        # the per-video level statistics stay in Arrow (a list of n_mels floats per video: no Python object per
        # video); they are checked here and read when a run asks for them (:attr:`level_stats`)
        stats = table.select(list(STATS_COLUMNS))
        records = table.drop_columns(list(STATS_COLUMNS)).to_pandas()
        ok = records[records["status"] == "ok"].sort_values("video_id", kind="stable")
        ok_rows = ok.index.to_numpy(np.int64)
        ok = ok.reset_index(drop=True)
        self.shard_names: list[str] = sorted(ok["shard"].unique().tolist()) if len(ok) else []
        shard_index = {name: i for i, name in enumerate(self.shard_names)}
        n_clips = ok["n_clips"].to_numpy(np.int64)
        first = np.zeros(len(ok), np.int64)
        if len(ok):
            first[1:] = np.cumsum(n_clips)[:-1]
        videos = pd.DataFrame(
            {
                "video_id": ok["video_id"].to_numpy(object),
                "path": ok["path"].to_numpy(object),
                "has_audio": ok["has_audio"].to_numpy(bool),
                "n_clips": n_clips,
                "first_clip": first,
            }
        )
        videos.index.name = "video_index"
        self.videos: pd.DataFrame = videos
        total = int(n_clips.sum())
        self.clip_video: np.ndarray = np.repeat(np.arange(len(ok), dtype=np.int64), n_clips)
        self.clip_in_video: np.ndarray = np.arange(total, dtype=np.int64) - np.repeat(first, n_clips)
        video_shard = np.array([shard_index[s] for s in ok["shard"]], np.int64)
        self.clip_shard: np.ndarray = np.repeat(video_shard, n_clips)
        self.clip_row: np.ndarray = np.repeat(ok["shard_offset"].to_numpy(np.int64), n_clips) + self.clip_in_video
        self._level_stats: tuple[np.ndarray, np.ndarray] | None | _Unread = (
            _UNREAD if self._stats_stored(stats, ok_rows) else None)
        self._check_shapes()
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._buffers = _Buffers(self.reuse_batches)
        self._pid = os.getpid()

    # --- plumbing ---------------------------------------------------------------------------------

    def _files(self, s: int) -> tuple[Path, Path]:
        base = self.cache_dir / SHARDS / self.shard_names[s]
        return Path(f"{base}{VIDEO_SUFFIX}"), Path(f"{base}{AUDIO_SUFFIX}")

    @property
    def level_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Each video's sound peak ``[videos]`` and per-band background ``[videos, n_mels]`` (float32) as ingest
        stored them (:mod:`videolabel.ingest.levelstats`); None when a record predates them. Read from the
        records when first asked for (a run with ``audio_level="video"``), not kept by a run that levels its
        sound otherwise, nor pickled to loader workers."""
        if isinstance(self._level_stats, _Unread):
            self._level_stats = self._read_level_stats()
        return self._level_stats

    @level_stats.setter
    def level_stats(self, value: tuple[np.ndarray, np.ndarray] | None) -> None:
        self._level_stats = value

    def _stats_stored(self, stats: pa.Table, rows: np.ndarray) -> bool:
        """Whether the records ``rows`` of ``stats`` (the records' two statistics columns) all hold them; a
        background list of the wrong length is a damaged cache."""
        if not len(rows):
            return False
        peak, background = stats.column("level_peak"), stats.column("level_background")
        if peak.is_null().to_numpy(zero_copy_only=False)[rows].any() or \
                background.is_null().to_numpy(zero_copy_only=False)[rows].any():
            return False
        lengths = pc.list_value_length(background).to_numpy(zero_copy_only=False)[rows]
        if (lengths != self.config.n_mels).any():
            raise VideolabelError(f"damaged cache {self.cache_dir}: a record's level_background does not have "
                                  f"{self.config.n_mels} bands; ingest again with --overwrite")
        return True

    def _read_level_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        table = read_records(self.cache_dir).select(["video_id", *STATS_COLUMNS])
        ids = pa.array(self.videos["video_id"].tolist(), pa.string())
        where = pc.index_in(ids, value_set=table.column("video_id"))
        if where.null_count:
            raise VideolabelError(f"{self.cache_dir}: videos vanished from the cache while it was in use "
                                  "(an ingest with --overwrite?); start again")
        rows = where.to_numpy(zero_copy_only=False).astype(np.int64)
        if not self._stats_stored(table, rows):
            return None
        stats = table.take(pa.array(rows))
        values = pc.list_flatten(stats.column("level_background")).to_numpy().astype(np.float32, copy=False)
        peaks = stats.column("level_peak").to_numpy().astype(np.float32, copy=False)
        return peaks, values.reshape(len(rows), self.config.n_mels)

    def _check_shapes(self) -> None:
        c = self.config
        self._rows = [check_shard(self.cache_dir, name, c.frames, c.height, c.width, c.n_mels, c.mel_frames)
                      for name in self.shard_names]
        if len(self.clip_row):
            limits = np.asarray(self._rows, np.int64)[self.clip_shard]
            if (self.clip_row >= limits).any():
                raise VideolabelError(f"damaged cache {self.cache_dir}: a shard has fewer clips than its records")

    def _map(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pid != os.getpid():  # forked: maps (and batch memory) of the parent are not ours
            self._maps, self._buffers, self._pid = {}, _Buffers(self.reuse_batches), os.getpid()
        m = self._maps.get(s)
        if m is None:
            vpath, apath = self._files(s)
            # plain ndarray views of the memory maps: indexing a np.memmap makes a memmap per row
            m = (np.asarray(np.load(vpath, mmap_mode="r")), np.asarray(np.load(apath, mmap_mode="r")))
            self._maps[s] = m
        return m

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        state["_buffers"] = None
        if state["_level_stats"] is not None:  # read again where it is asked for
            state["_level_stats"] = _UNREAD
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._buffers = _Buffers(self.reuse_batches)
        self._pid = os.getpid()

    # --- access -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.clip_video.shape[0])

    def _check(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"clip index {i} out of range for {n} clips")
        return i

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = self._check(int(i))
        video, audio = self._map(int(self.clip_shard[i]))
        r = int(self.clip_row[i])
        return {
            "video": torch.from_numpy(np.array(video[r])),
            "audio": torch.from_numpy(np.array(audio[r])),
            "index": torch.tensor(i, dtype=torch.int64),
            "video_index": torch.tensor(int(self.clip_video[i]), dtype=torch.int64),
            "clip": torch.tensor(int(self.clip_in_video[i]), dtype=torch.int64),
        }

    def _indices(self, indices: Sequence[int]) -> np.ndarray:
        """``indices`` as int64 clip indices (negative ones from the end); IndexError as :meth:`_check`."""
        try:
            idx = np.array(indices, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            idx = np.array([int(i) for i in indices], dtype=np.int64)
        n = len(self)
        idx[idx < 0] += n
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise IndexError(f"clip index {int(idx[np.argmax(bad)])} out of range for {n} clips")
        return idx

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Batched gather: indices grouped by shard, each clip copied once, straight from the map
        into the batch. In a DataLoader worker the batch is allocated in shared memory, so it is not
        copied again on its way to the main process; elsewhere the batch memory of an earlier call is
        reused once the caller has let go of it (:class:`_Buffers`)."""
        idx = self._indices(indices)
        c = self.config
        vshape, ashape = (len(idx), c.frames, c.height, c.width, 3), (len(idx), c.n_mels, c.mel_frames)
        if _in_worker():
            video_t, audio_t = _shared(vshape, torch.uint8), _shared(ashape, torch.float16)
            video, audio = video_t.numpy(), audio_t.view(torch.int16).numpy().view(np.float16)
        else:
            video = self._buffers.get(vshape, np.dtype(np.uint8))
            audio = self._buffers.get(ashape, np.dtype(np.float16))
            video_t, audio_t = torch.from_numpy(video), torch.from_numpy(audio)
        shards = self.clip_shard[idx]
        for s in np.unique(shards).tolist():
            where = np.flatnonzero(shards == s)
            rows = self.clip_row[idx[where]]
            order = np.argsort(rows, kind="stable")  # ascending offsets: sequential reads
            vmap, amap = self._map(int(s))
            for j, r in zip(where[order].tolist(), rows[order].tolist()):
                video[j] = vmap[r]
                audio[j] = amap[r]
        return {
            "video": video_t,
            "audio": audio_t,
            "index": torch.from_numpy(idx),
            "video_index": torch.from_numpy(self.clip_video[idx]),
            "clip": torch.from_numpy(self.clip_in_video[idx]),
        }

    def read_audio(self, indices: Sequence[int]) -> torch.Tensor:
        """The stored sound of these clips, ``float16 [n, n_mels, mel_frames]`` (a copy, in the given order)."""
        idx = self._indices(indices)
        c = self.config
        out = np.empty((len(idx), c.n_mels, c.mel_frames), np.float16)
        shards = self.clip_shard[idx]
        for s in np.unique(shards).tolist():
            where = np.flatnonzero(shards == s)
            out[where] = self._map(int(s))[1][self.clip_row[idx[where]]]
        return torch.from_numpy(out)

    @staticmethod
    def collate(batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``collate_fn`` for DataLoader: passes a ``__getitems__`` batch through; stacks a list."""
        if isinstance(batch, dict):
            return batch
        return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}

    def video_clips(self, video_id: str) -> dict[str, torch.Tensor]:
        """All clips of one video (by id), batched."""
        hits = np.flatnonzero(self.videos["video_id"].to_numpy(object) == video_id)
        if not len(hits):
            raise KeyError(video_id)
        row = self.videos.iloc[int(hits[0])]
        first, n = int(row["first_clip"]), int(row["n_clips"])
        return self.__getitems__(list(range(first, first + n)))

    def __repr__(self) -> str:
        return (f"ShardDataset({str(self.cache_dir)!r}: {len(self.videos)} videos, {len(self)} clips, "
                f"{len(self.shard_names)} shards)")
