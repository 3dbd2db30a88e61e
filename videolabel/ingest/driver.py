"""``run_ingest``: the resumable, parallel driver.

A process pool decodes videos (:func:`videolabel.ingest.worker.process_video`); the main process is
the single writer: it streams finished videos into the current shard and commits it every
``shard_size`` videos and at the end (:class:`videolabel.ingest.shards.ShardWriter`). A video is
done once its record is committed (in a shard's ``.videos.parquet`` or a ``failures`` file); a
rerun decodes only what is not done, so a run killed at any point (``kill -9`` included) resumes
without duplicates or losses, loses at most the uncommitted shard in progress, and a finished cache
is left alone. ``--part i/n`` runs take disjoint shares and write disjoint files.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from videolabel.config import IngestConfig
from videolabel.errors import TooManyFailuresError, VideolabelError
from videolabel.ingest import manifest as mf
from videolabel.ingest.discover import Source, discover, parse_part, select_part
from videolabel.ingest.probeahead import ProbeAhead
from videolabel.ingest.progress import make_reporter
from videolabel.ingest.shards import FAILURES, SHARDS, ShardWriter, check_shard, committed_shards, warm_table_path
from videolabel.ingest.worker import (
    Settings,
    VideoResult,
    failed_result,
    init_worker,
    noop,
    process_video,
    single_threaded_blas,
)
from videolabel.media.binary import ffmpeg_version, find_ffmpeg

DEFAULT_TIMEOUT = 600.0
DEFAULT_SHARD_SIZE = 64


@dataclass
class IngestSummary:
    """What one ``run_ingest`` call did. Counts are for this part's share of SRC."""

    cache: str
    part: tuple[int, int]
    found: int = 0  # videos of SRC in this part
    ingested: int = 0  # decoded and committed by this run
    skipped_existing: int = 0  # already recorded in the cache before this run (ok, failed or skipped)
    failed: int = 0  # failed in this run
    skipped: int = 0  # too short with --short skip, in this run
    clips: int = 0  # clips written by this run
    seconds: float = 0.0
    failed_total: int = 0  # failed records of this part's videos in the cache (this run and earlier)
    shards_written: int = 0
    nothing_to_do: bool = False
    workers: int = 1
    paths: list[str] = field(default_factory=list)  # files written (shards summarised by directory)
    failures: list[dict[str, str]] = field(default_factory=list)  # this run: path, error (first 50)

    @property
    def videos_per_s(self) -> float:
        done = self.ingested + self.failed + self.skipped
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["part"] = f"{self.part[0]}/{self.part[1]}"
        d["videos_per_s"] = round(self.videos_per_s, 3)
        d["seconds"] = round(self.seconds, 3)
        return d

    def lines(self) -> list[str]:
        """Human summary, ending with the paths written."""
        part = f" (part {self.part[0]}/{self.part[1]})" if self.part[1] > 1 else ""
        if self.nothing_to_do:
            head = [f"nothing to do: all {self.found} videos{part} are already in {self.cache}"]
        else:
            head = [
                f"ingested {self.ingested} videos ({self.clips} clips){part} in {self.seconds:.1f} s "
                f"({self.videos_per_s:.2f} videos/s, {self.workers} workers)",
                f"found {self.found}, already in cache {self.skipped_existing}, failed {self.failed}, "
                f"skipped (short) {self.skipped}, shards written {self.shards_written}",
            ]
        for f in self.failures[:10]:
            head.append(f"  failed: {f['path']}: {f['error']}")
        if self.failed > 10:
            head.append(f"  ... and {self.failed - 10} more (see the manifest)")
        if self.failed_total:
            head.append(f"failures recorded for this part: {self.failed_total}")
        if self.paths:
            head.append("wrote:")
            head += [f"  {p}" for p in self.paths]
        return head


# --- the driver -----------------------------------------------------------------------------------


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise VideolabelError(f"cannot create cache directory {out}: a file is in the way") from None
    except NotADirectoryError:
        raise VideolabelError(f"cannot create cache directory {out}: a parent is not a directory") from None
    except OSError as exc:
        raise VideolabelError(f"cannot create cache directory {out}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise VideolabelError(f"cache path is not a directory: {out}")
    probe = out / f".write-test-{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise VideolabelError(f"cache directory is not writable: {out} ({exc.strerror or exc})") from None


def _mp_context() -> mp.context.BaseContext:
    """Start method of the decode pool: fork on Linux (fast, no re-import of ``__main__``, so plain
    scripts work), else spawn; ``VIDEOLABEL_MP_START`` overrides it."""
    method = os.environ.get("VIDEOLABEL_MP_START") or ("fork" if sys.platform.startswith("linux") else "spawn")
    if method not in mp.get_all_start_methods():
        raise VideolabelError(f"VIDEOLABEL_MP_START={method!r} is not available here")
    return mp.get_context(method)


class _Decoder:
    """Runs :func:`process_video` over sources: in-process for one worker, else in a process pool.

    A worker that dies (e.g. killed for memory) loses its in-flight videos: they are retried in a
    fresh pool, one at a time (so that a video is only blamed for deaths it caused alone), and
    recorded as failed only after :data:`MAX_ATTEMPTS`; a pool that cannot run
    anything at all is a :class:`VideolabelError`, not a cache full of failures.
    """

    MAX_ATTEMPTS = 3

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.pool: cf.ProcessPoolExecutor | None = None
        self.ctx = _mp_context() if workers > 1 else None
        self._warm: threading.Thread | None = None

    def start(self) -> None:
        """Create the pool and its processes now (before any progress thread exists)."""
        if self.workers > 1:
            self.pool = self._new_pool()

    def _start_warming(self) -> None:
        """Let a thread warm the writer's table path (:func:`~videolabel.ingest.shards.warm_table_path`)
        while the first videos decode; started once they are submitted, so that it does not hold the
        GIL while the first probes and submissions need it."""
        if self._warm is None:
            self._warm = threading.Thread(target=warm_table_path, name="videolabel-warm-tables", daemon=True)
            self._warm.start()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        if self._warm is not None:  # no fork while that thread may hold an import lock
            self._warm.join()
        pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=self.ctx, initializer=init_worker)
        try:
            pool.submit(noop).result(timeout=120)
        except Exception as exc:  # noqa: BLE001
            pool.shutdown(wait=False, cancel_futures=True)
            raise VideolabelError(f"cannot start the decode workers: {type(exc).__name__}: {exc}") from None
        return pool

    def results(self, todo: list[Source]) -> Iterable[VideoResult]:
        probes = ProbeAhead(self.settings.ffmpeg, todo, timeout=min(self.settings.timeout, 60.0),
                            first=self.workers)
        try:
            yield from self._results(todo, probes)
        finally:
            probes.close()

    def _results(self, todo: list[Source], probes: ProbeAhead) -> Iterable[VideoResult]:
        if self.pool is None:
            # one BLAS thread while this process decodes, as in a worker (their idle BLAS threads busy-wait
            # on the cores ffmpeg decodes with: 100 ms of CPU per 2 s video, AMD EPYC, 2026-12-07)
            with single_threaded_blas():
                for s in todo:
                    info = probes.take(s)
                    self._start_warming()
                    yield process_video(s, self.settings, info)
            return
        queue = deque((s, 1) for s in todo)
        running: dict[cf.Future[VideoResult], tuple[Source, int]] = {}
        try:
            while queue or running:
                broken = False
                while queue and len(running) < 2 * self.workers and not broken:
                    s, attempt = queue[0]
                    suspect = attempt > 1  # in flight when a pool died: it runs alone, so that only
                    if suspect and running:  # the video that kills its worker uses up its attempts
                        break
                    queue.popleft()
                    try:
                        info = probes.take(s) if attempt == 1 else None
                        running[self.pool.submit(process_video, s, self.settings, info)] = (s, attempt)
                    except cf.process.BrokenProcessPool:
                        queue.appendleft((s, attempt))
                        broken = True
                    if suspect:
                        break
                if running:
                    self._start_warming()
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        s, attempt = running.pop(fut)
                        try:
                            yield fut.result()
                        except cf.process.BrokenProcessPool:
                            broken = True
                            queue.appendleft((s, attempt + 1))
                        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                            yield failed_result(s, f"{type(exc).__name__}: {exc}")
                if broken:  # everything in flight is lost with the pool: retry it in a new one
                    for s, attempt in running.values():
                        queue.appendleft((s, attempt + 1))
                    running.clear()
                    self.pool.shutdown(wait=False, cancel_futures=True)
                    kept: deque[tuple[Source, int]] = deque()
                    for s, attempt in queue:
                        if attempt > self.MAX_ATTEMPTS:
                            yield failed_result(
                                s, f"decode worker died {self.MAX_ATTEMPTS} times on this video (out of memory?)")
                        else:
                            kept.append((s, attempt))
                    queue = kept
                    self.pool = self._new_pool()
        finally:
            for fut in running:
                fut.cancel()

    def close(self, abort: bool = False) -> None:
        """Shut the pool down; ``abort`` (Ctrl-C, errors) kills the workers instead of waiting."""
        if self.pool is None:
            return
        if abort:
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                try:
                    proc.kill()
                except (OSError, AttributeError):  # pragma: no cover
                    pass
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None


def run_ingest(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: IngestConfig | None = None,
    *,
    workers: int | None = None,
    glob: str | None = None,
    list_file: str | os.PathLike[str] | None = None,
    part: tuple[int, int] | str = (0, 1),
    overwrite: bool = False,
    max_failures: int | None = None,
    ffmpeg: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: str = "auto",
    on_result: Callable[[VideoResult], None] | None = None,
) -> IngestSummary:
    """Ingest the videos of ``src`` into the cache ``out`` (see the module docstring).

    Raises :class:`VideolabelError` for unusable arguments (missing SRC, unwritable OUT, a cache
    made with another config without ``overwrite``), and :class:`TooManyFailuresError` (exit code
    3, with ``.summary``) after everything is written when more than ``max_failures`` of this part's
    videos failed.
    """
    t0 = time.monotonic()
    config = (config or IngestConfig()).validate()
    part = parse_part(part)
    if shard_size < 1:
        raise VideolabelError("--shard-size must be >= 1")
    if timeout <= 0:
        raise VideolabelError("--timeout must be > 0")
    if max_failures is not None and max_failures < 0:
        raise VideolabelError("--max-failures must be >= 0")
    cores = os.cpu_count() or 1
    workers = cores if workers is None else int(workers)
    if workers < 1:
        raise VideolabelError("--workers must be >= 1")
    ffmpeg_path = find_ffmpeg(ffmpeg)
    reporter = make_reporter(progress)

    sources = discover(src, glob=glob, list_file=list_file)  # one-line error for a missing SRC
    cache = Path(out)
    _prepare_out(cache)
    if overwrite:
        mf.wipe(cache)
    summary = IngestSummary(cache=str(cache), part=part, workers=workers)

    with mf.part_lock(cache, part):
        config_path, config_created = mf.ensure_config(cache, config, ffmpeg_version(ffmpeg_path))
        mf.clean_garbage(cache, part)
        records = mf.read_records(cache)  # one-line error for a damaged record file
        for name in committed_shards(cache):  # a damaged shard is refused, never counted as done
            check_shard(cache, name, config.frames, config.height, config.width, config.n_mels, config.mel_frames)
        done_ids = set(records.column("video_id").to_pylist())
        mine = select_part(sources, part)
        todo = [s for s in mine if s.video_id not in done_ids]
        summary.found = len(mine)
        summary.skipped_existing = len(mine) - len(todo)
        written: list[Path] = []

        if not todo:
            summary.nothing_to_do = True
            if not mf.manifest_is_current(cache, records) or (
                part[1] > 1 and not (cache / mf.manifest_part_file(part)).exists()
            ):
                written += mf.write_manifests(cache, records, part)
        else:
            workers = min(workers, len(todo))
            summary.workers = workers
            threads = max(1, cores // workers)
            settings = Settings(config, ffmpeg_path, float(timeout), threads)
            writer = ShardWriter(
                cache, part, frames=config.frames, height=config.height, width=config.width,
                n_mels=config.n_mels, mel_frames=config.mel_frames,
            )
            decoder = _Decoder(settings, workers)
            decoder.start()
            n_done = 0
            try:
                reporter.start(
                    len(todo),
                    f"{len(todo)} videos to decode ({summary.skipped_existing} already in the cache) "
                    f"with {workers} workers -> {cache}",
                )
                for res in decoder.results(todo):
                    writer.add(res.record, res.video, res.audio, res.clip_starts, res.audio_starts)
                    n_done += 1
                    st = res.status
                    if st == "ok":
                        summary.ingested += 1
                        summary.clips += int(res.record["n_clips"])
                    elif st == "skipped":
                        summary.skipped += 1
                    else:
                        summary.failed += 1
                        if len(summary.failures) < 50:
                            summary.failures.append(
                                {"path": str(res.record["path"]), "error": str(res.record["error"])})
                        if summary.failed <= 20:
                            reporter.log(f"failed: {res.record['path']}: {res.record['error']}")
                    if on_result is not None:
                        on_result(res)
                    if writer.pending_ok >= shard_size or len(writer.failed_rows) >= shard_size:
                        written += writer.flush()
                    reporter.update(n_done, summary.failed)
                written += writer.flush()
            except BaseException:
                # Ctrl-C or a writer error: stop decoding, commit what is complete (the run is
                # resumable), then re-raise
                decoder.close(abort=True)
                try:
                    written += writer.flush()
                except Exception:  # noqa: BLE001
                    writer.abort()
                raise
            finally:
                reporter.stop()
                decoder.close()
            summary.shards_written = writer.seq
            records = mf.read_records(cache)
            written += mf.write_manifests(cache, records, part)
            # another part may have committed meanwhile: rebuild until the union is stable
            for _ in range(3):
                latest = mf.read_records(cache)
                if latest.num_rows == records.num_rows:
                    break
                records = latest
                mf.write_manifests(cache, records, part)

    mine_ids = {s.video_id for s in mine}
    statuses = zip(records.column("video_id").to_pylist(), records.column("status").to_pylist())
    summary.failed_total = sum(1 for v, s in statuses if v in mine_ids and s == "failed")
    summary.seconds = time.monotonic() - t0
    paths = [config_path] if config_created else []
    if any(p.parent.name == SHARDS for p in written):
        paths.append(cache / SHARDS)
    if any(p.parent.name == FAILURES for p in written):
        paths.append(cache / FAILURES)
    paths += [p for p in written if p.parent == cache]
    paths = list(dict.fromkeys(paths))
    summary.paths = [str(p) for p in paths]
    if max_failures is not None and summary.failed_total > max_failures:
        err = TooManyFailuresError(
            f"{summary.failed_total} videos failed, more than --max-failures {max_failures} "
            f"(see {cache / mf.MANIFEST_FILE})"
        )
        err.summary = summary  # type: ignore[attr-defined]
        raise err
    return summary
