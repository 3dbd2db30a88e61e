"""Turning one source video into clips: probe, plan, decode frames and audio, log-mel.

Runs in the decode worker processes; imports numpy and the media layer only (no torch). Every
per-video problem becomes a ``failed`` (or ``skipped``) result with a one-line reason: nothing here
may stop the run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videolabel.config import IngestConfig
from videolabel.ingest.discover import Source
from videolabel.ingest.levelstats import level_stats
from videolabel.ingest.logmel import log_mel, window_samples
from videolabel.media.decode import Deadline, can_seek, decode_clips
from videolabel.media.probe import MediaError, MediaInfo, measure_duration, preflight, probe

#: manifest columns, in order (see docs/architecture.md)
MANIFEST_COLUMNS = (
    "video_id", "path", "size_bytes", "duration", "fps", "width", "height", "video_codec",
    "audio_codec", "has_audio", "n_clips", "status", "error",
    "pix_fmt", "rotation", "audio_sample_rate", "padded_frames", "decode_s", "level_peak", "level_background",
)


@dataclass(frozen=True)
class Settings:
    """What a worker needs besides the source (small; sent with every task)."""

    config: IngestConfig
    ffmpeg: str
    timeout: float
    threads: int = 1


@dataclass
class VideoResult:
    source: Source
    record: dict[str, Any]
    video: np.ndarray | None = None  # uint8 [n_clips, T, H, W, 3]
    audio: np.ndarray | None = None  # float16 [n_clips, n_mels, mel_frames]
    clip_starts: list[float] = field(default_factory=list)  # seconds
    audio_starts: list[float] = field(default_factory=list)  # seconds (may be < 0)

    @property
    def status(self) -> str:
        return str(self.record["status"])


def empty_record(source: Source) -> dict[str, Any]:
    rec: dict[str, Any] = {c: None for c in MANIFEST_COLUMNS}
    # a name that is not valid UTF-8 is stored readable (the video_id keeps the exact bytes)
    path = source.rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    rec.update(video_id=source.video_id, path=path, has_audio=False, n_clips=0, status="failed", error=None)
    return rec


def failed_result(source: Source, reason: str) -> VideoResult:
    """The result of a video whose decoding could not even report back (its worker died)."""
    rec = empty_record(source)
    rec.update(status="failed", error=_one_line(reason), n_clips=0)
    return VideoResult(source, rec)


def plan_clips(n_frames: int, cfg: IngestConfig) -> list[int]:
    """Start frames of the clips in a video of ``n_frames`` frames at ``cfg.fps``. Pure.

    Clip ``i`` of ``K`` is centred on the middle of the ``i``-th of ``K`` equal segments (clamped
    inside the video); identical starts (a short video) are merged. A video shorter than one clip
    gives one clip at 0 (padded by the caller) - the caller decides between pad and skip.
    """
    T, K = cfg.frames, cfg.clips_per_video
    if n_frames <= T:
        return [0]
    starts = []
    for i in range(K):
        centre = (i + 0.5) * n_frames / K
        s = int(math.floor(centre - T / 2 + 0.5))
        starts.append(min(max(s, 0), n_frames - T))
    return sorted(set(starts))


def audio_window_start(clip_start_frame: int, cfg: IngestConfig) -> int:
    """First PCM sample of the audio window centred on the clip (may be negative)."""
    centre_s = (clip_start_frame + cfg.frames / 2.0) / cfg.fps
    return int(round(centre_s * cfg.sample_rate)) - window_samples(cfg) // 2


def process_video(source: Source, settings: Settings, info: MediaInfo | None = None) -> VideoResult:
    """Decode one video into its clips; never raises for a bad input.

    ``info``: the file's probe when the driver has it already (:mod:`videolabel.ingest.probeahead`);
    otherwise the file is probed here.
    """
    t0 = time.monotonic()
    rec = empty_record(source)
    cfg = settings.config
    try:
        if source.error:  # found but not readable as a candidate (an unlistable folder)
            raise MediaError(source.error)
        rec["size_bytes"] = preflight(source.path)
        deadline = Deadline.after(settings.timeout)
        if info is None:
            info = probe(source.path, settings.ffmpeg, timeout=deadline.left())
        _fill_info(rec, info)
        if not info.has_video:
            raise MediaError("no video stream" + (" (audio only)" if info.has_audio else ""))
        if cfg.require_audio and not info.has_audio:
            raise MediaError("no audio stream (--require-audio)")
        seek = can_seek(info)  # exact frames in every container: others are decoded from the start
        duration = info.duration
        if duration is None or duration <= 0:
            duration = measure_duration(source.path, settings.ffmpeg, info, timeout=deadline.left())
            seek = False  # no index to seek in: decode from the start
            if duration is None:
                raise MediaError("unknown duration and nothing could be decoded")
            rec["duration"] = duration
        n_frames = int(math.floor(duration * cfg.fps + 1e-6))
        if n_frames < cfg.frames and cfg.short == "skip":
            rec.update(status="skipped", error=f"shorter than one clip ({duration:.3f} s < {cfg.clip_seconds:.3f} s)")
            rec["decode_s"] = round(time.monotonic() - t0, 4)
            return VideoResult(source, rec)
        starts = plan_clips(max(n_frames, 1), cfg)
        a_starts = [audio_window_start(s, cfg) for s in starts]
        video, real, pcm = decode_clips(
            source.path, settings.ffmpeg, info, starts, a_starts, frames=cfg.frames, fps=cfg.fps,
            height=cfg.height, width=cfg.width, audio_length=window_samples(cfg), sample_rate=cfg.sample_rate,
            deadline=deadline, threads=settings.threads, seek=seek, fit=cfg.fit,
        )
        # a clip mostly beyond the decodable end (truncated file, video stream shorter than the
        # container) is dropped, unless it is the best there is
        keep = real * 2 >= min(cfg.frames, n_frames)
        if not keep.any():
            keep = real == real.max()
            keep &= np.cumsum(keep) == 1
        if not keep.all():
            video, real, pcm = video[keep], real[keep], pcm[keep]
            starts = [s for s, k in zip(starts, keep) if k]
            a_starts = [a for a, k in zip(a_starts, keep) if k]
        audio = log_mel(pcm, cfg)
        rec["level_peak"], rec["level_background"] = level_stats(audio)
        rec.update(status="ok", error=None, n_clips=len(starts), padded_frames=int((cfg.frames - real).sum()))
        rec["decode_s"] = round(time.monotonic() - t0, 4)
        return VideoResult(
            source, rec, np.ascontiguousarray(video), audio,
            clip_starts=[s / cfg.fps for s in starts], audio_starts=[a / cfg.sample_rate for a in a_starts],
        )
    except MediaError as exc:
        rec.update(status="failed", error=_one_line(str(exc)), n_clips=0)
    except Exception as exc:  # noqa: BLE001 - a bug or an odd file must not stop the run
        rec.update(status="failed", error=_one_line(f"{type(exc).__name__}: {exc}"), n_clips=0)
    rec["decode_s"] = round(time.monotonic() - t0, 4)
    return VideoResult(source, rec)


def _fill_info(rec: dict[str, Any], info: MediaInfo) -> None:
    rec.update(
        duration=info.duration, fps=info.fps, width=info.width, height=info.height,
        video_codec=info.video_codec, audio_codec=info.audio_codec, has_audio=info.has_audio,
        pix_fmt=info.pix_fmt, rotation=info.rotation, audio_sample_rate=info.sample_rate,
    )


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def init_worker() -> None:
    """Pool initializer: die with the parent (kill -9 included), leave Ctrl-C to the parent."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan decoders after a kill -9
        except (OSError, AttributeError):  # pragma: no cover
            pass
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    single_threaded_blas()


def single_threaded_blas() -> Any:
    """One BLAS thread in this process, whatever numpy's BLAS was loaded with; as a context manager
    (``with single_threaded_blas():``) the threads of before come back at its end.

    The environment variables above only reach libraries loaded after them; a forked worker inherits
    numpy's BLAS as the parent loaded it (one thread per core). Its threads then busy-wait after every
    product (the log-mel filterbank, one small matrix product per video) and cost more CPU than the
    product: 55 ms per 2 s video of 30 fps, a third of the decoding itself (AMD EPYC, 2026-12-02;
    ``benchmarks/RESULTS.md``, the data path). The workers run one per core already.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def noop() -> None:
    """Submitted once to start the pool's processes before any other thread exists."""
