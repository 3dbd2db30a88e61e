"""Decoding clip windows with ffmpeg: frames as rgb24, audio as mono float32 PCM.

Commands are built with ffmpeg-python and run by :mod:`subprocess` under a deadline. By default
ONE ffmpeg process per video decodes everything (:func:`decode_clips`): frames on stdout, audio on
a second pipe (``pass_fds``), so the file is opened, demuxed and decoded once.

* The clip windows (video: the clip; audio: ~2 s centred on it) that lie close together (gap at
  most :data:`~videolabel.media.spans.MERGE_GAP_S`) form a *span* (:mod:`videolabel.media.spans`);
  each span is one ``-ss``/``-t`` input of the file (input seeking: ffmpeg jumps to the keyframe
  before the span, decodes and drops up to the exact start), so a long video with a few clips is
  never decoded in full, while a short one is decoded once instead of re-seeking per clip. Without a
  usable index (duration N/A, or a container whose seeking is not exact: :data:`SEEKABLE_FORMATS`)
  one span from 0 is used.
* Video, per span: ``fps`` (constant rate, also for variable-frame-rate input) → ``select`` the
  frames of the clips (before scaling: only kept frames are scaled) → ``scale`` to cover the stored
  size (aspect and sample aspect ratio kept, huge inputs shrunk in ffmpeg) → centre ``crop`` →
  ``format=rgb24`` (any pixel format); with ``fit="contain"`` instead: ``scale`` to fit inside the
  stored size → ``format=rgb24`` → ``pad`` with black, centred (nothing cut away, e.g. of a portrait
  video on a landscape store); spans are concatenated to rawvideo with
  ``-fps_mode passthrough`` (no duplicated frames). Rotation metadata is applied by ffmpeg's
  default autorotation; the scale plan uses the post-rotation size from the probe.
* Audio, per span: ``aresample`` → ``aformat`` mono float → ``apad``/``atrim`` to the exact sample
  count, so span boundaries in the concatenated PCM are known; audio outside the file is silence.

If the joint command fails, video and audio are decoded separately so that the error names the
stream at fault. If fewer frames come out than planned (a video stream shorter than the container
says, a truncated file) and there are several spans, each span is decoded again on its own so that
every frame is attributed to its clip; missing frames at the end of a clip repeat the last one.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Sequence, cast

import ffmpeg as ffmpeg_python
import numpy as np

from videolabel.config import FITS
from videolabel.media.probe import MediaError, MediaInfo, error_reason
from videolabel.media.spans import Span, assemble_audio, assemble_video, plan_spans

#: extra input read after the last window (lets the fps filter place its last frame)
READ_MARGIN_S = 0.2
#: scaler used for the resize (area averaging: good for the large downscales ingest does)
SCALE_FLAGS = "area"


@dataclass(frozen=True)
class Deadline:
    """Remaining time for the ffmpeg calls of one video."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise MediaError("ffmpeg timed out")
        return left


def run_ffmpeg(args: list[str], timeout: float, what: str) -> bytes:
    """Run an ffmpeg command, return stdout; :class:`MediaError` with a one-line reason on failure."""
    try:
        # own session: a Ctrl-C on the terminal reaches the driver, not the decoders mid-file
        out = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg timed out after {timeout:.0f} s while decoding {what}") from None
    except OSError as exc:
        raise MediaError(f"cannot run ffmpeg: {exc}") from None
    if out.returncode != 0:
        reason = error_reason(out.stderr.decode("utf-8", "replace"))
        raise MediaError(f"ffmpeg failed decoding {what}: {reason}")
    return out.stdout


def _display_aspect(info: MediaInfo) -> float | None:
    """Width / height of the picture as shown (pixel aspect and rotation applied), or None if unknown."""
    w, h = info.width, info.height
    if not w or not h:
        return None
    sar = info.sar or 1.0
    rot = info.rotation % 180.0
    if abs(rot - 90.0) < 1.0:
        sar = 1.0 / sar  # the pixel aspect turns with the picture
    return (w * sar) / h


def cover_size(info: MediaInfo, height: int, width: int) -> tuple[int, int]:
    """Size (h, w) to scale to so that the frame covers ``height`` x ``width`` with its aspect kept."""
    aspect = _display_aspect(info)
    if aspect is None:
        return height, width
    if aspect >= width / height:
        sh, sw = height, max(width, int(round(height * aspect)))
    else:
        sh, sw = max(height, int(round(width / aspect))), width
    return sh, sw


def contain_size(info: MediaInfo, height: int, width: int) -> tuple[int, int]:
    """Size (h, w) to scale to so that the frame fits inside ``height`` x ``width`` with its aspect kept
    (at least 1 pixel a side); the rest of the stored frame is black."""
    aspect = _display_aspect(info)
    if aspect is None:
        return height, width
    if aspect >= width / height:
        sh, sw = min(height, max(1, int(round(width / aspect)))), width
    else:
        sh, sw = height, min(width, max(1, int(round(height * aspect))))
    return sh, sw


def _global(threads: int) -> list[str]:
    return ["-nostdin", "-hide_banner", "-loglevel", "error", "-filter_complex_threads", str(threads)]


_PATH_TOKEN = "\x00videolabel-input\x00"


#: containers whose index takes an input seek to the keyframe before the target, so that the frames
#: after ``-ss`` are those of a decode from the start (ffmpeg's ``format_name``, first name). Others
#: (MPEG-TS/PS, FLV, Ogg, MXF, ...) seek by bisection or not at all: with sparse keyframes that lands
#: past the target (late frames, lost clips, "no frames decoded"), so they are decoded from the start.
SEEKABLE_FORMATS = frozenset({"mov", "matroska", "avi"})


def can_seek(info: MediaInfo) -> bool:
    """Whether input seeking gives exact frames in this file's container (see :data:`SEEKABLE_FORMATS`)."""
    return (info.format_name or "").split(",")[0].strip() in SEEKABLE_FORMATS


def _input(path: str, start_s: float, dur_s: float, threads: int):
    """One input of ``path`` reading ``[start_s, start_s + dur_s)`` (input seeking when start_s > 0)."""
    kw: dict[str, object] = {"threads": threads, "t": f"{dur_s:.6f}"}
    if start_s > 0:
        kw["ss"] = f"{start_s:.6f}"
    return ffmpeg_python.input(path, **kw)


class _Job:
    """Builds and runs one ffmpeg command over some spans (video and/or audio outputs)."""

    def __init__(self, path: str, ffmpeg: str, info: MediaInfo, *, fps: float, height: int, width: int,
                 sample_rate: int, threads: int, fit: str = "cover") -> None:
        self.path, self.ffmpeg, self.info = path, ffmpeg, info
        self.fps, self.height, self.width, self.sample_rate, self.threads = fps, height, width, sample_rate, threads
        if fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        self.fit = fit
        size = cover_size if fit == "cover" else contain_size
        self.sh, self.sw = size(info, height, width) if info.video_index is not None else (height, width)

    def _video_chain(self, span: Span, inp):
        assert span.video is not None
        expr = "+".join(f"between(n,{a},{b - 1})" for a, b in span.video.ranges)
        # eof_action=pass: the last frame is kept even when rounding would drop it (a 1-frame video at a
        # lower rate gave "no frames decoded"); it only adds the frame a short clip would repeat anyway
        v = inp[str(self.info.video_index)].filter("fps", fps=f"{self.fps:g}", eof_action="pass")
        v = v.filter("select", expr)
        v = v.filter("scale", self.sw, self.sh, flags=SCALE_FLAGS)
        if self.fit == "cover":
            return v.filter("crop", self.width, self.height).filter("setsar", "1").filter("format", "rgb24")
        # contain: centred on black, padded in rgb24 (no chroma subsampling to round the offsets)
        v = v.filter("setsar", "1").filter("format", "rgb24")
        return v.filter("pad", self.width, self.height, (self.width - self.sw) // 2, (self.height - self.sh) // 2,
                        color="black")

    def _audio_chain(self, span: Span, inp):
        n = span.audio_len
        s = inp[str(self.info.audio_index)].filter("aresample", self.sample_rate)
        s = s.filter("aformat", sample_fmts="flt", channel_layouts="mono")
        return s.filter("apad", whole_len=n).filter("atrim", end_sample=n)

    def run(self, spans: list[Span], video: bool, audio: bool, deadline: Deadline
            ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Decode ``spans``; returns (frames [N, H, W, 3] or None, pcm float32 [M] or None)."""
        vs, as_ = [], []
        for span in spans:
            inp = _input(_PATH_TOKEN, span.start_s, span.end_s - span.start_s + READ_MARGIN_S, self.threads)
            if video and span.video is not None:
                vs.append(self._video_chain(span, inp))
            if audio and span.audio_len > 0:
                as_.append(self._audio_chain(span, inp))
        outputs = []
        read_fd = write_fd = None
        if vs:
            vout = ffmpeg_python.concat(*vs, v=1, a=0) if len(vs) > 1 else vs[0]
            outputs.append(ffmpeg_python.output(vout, "pipe:1", format="rawvideo", pix_fmt="rgb24",
                                                fps_mode="passthrough"))
        if as_:
            aout = ffmpeg_python.concat(*as_, v=0, a=1) if len(as_) > 1 else as_[0]
            target = "pipe:1"
            if vs:  # second output on its own pipe
                read_fd, write_fd = os.pipe()
                target = f"pipe:{write_fd}"
            outputs.append(ffmpeg_python.output(aout, target, format="f32le", acodec="pcm_f32le",
                                                ar=self.sample_rate, ac=1))
        if not outputs:
            return None, None
        node = ffmpeg_python.merge_outputs(*outputs) if len(outputs) > 1 else outputs[0]
        args = node.global_args(*_global(self.threads)).compile(cmd=self.ffmpeg)
        # the real path goes in after ffmpeg-python, which cannot hash names that are not UTF-8
        args = [self.path if a == _PATH_TOKEN else a for a in args]
        what = "frames and audio" if vs and as_ else ("frames" if vs else "audio")
        out, extra = _run(args, deadline.left(), what, read_fd, write_fd)
        frames_arr = pcm = None
        if vs:
            fb = self.height * self.width * 3
            n = len(out) // fb
            frames_arr = np.frombuffer(out, np.uint8, count=n * fb).reshape(n, self.height, self.width, 3)
            if as_:
                pcm = np.frombuffer(extra, "<f4", count=len(extra) // 4)
        elif as_:
            pcm = np.frombuffer(out, "<f4", count=len(out) // 4)
        return frames_arr, pcm


def _run(args: list[str], timeout: float, what: str, read_fd: int | None, write_fd: int | None) -> tuple[bytes, bytes]:
    """Run ffmpeg; stdout (and the extra pipe, drained by a thread) as bytes; MediaError on failure."""
    if read_fd is None:
        return run_ffmpeg(args, timeout, what), b""
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            b = os.read(read_fd, 1 << 20)
            if not b:
                break
            chunks.append(b)

    reader = threading.Thread(target=drain, daemon=True)
    try:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(cast(int, write_fd),), start_new_session=True)
        except OSError as exc:
            raise MediaError(f"cannot run ffmpeg: {exc}") from None
        finally:
            os.close(cast(int, write_fd))  # the child has its copy: EOF reaches the reader when ffmpeg exits
        reader.start()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise MediaError(f"ffmpeg timed out after {timeout:.0f} s while decoding {what}") from None
        except BaseException:  # Ctrl-C in the driver (workers == 1): do not leave ffmpeg running
            proc.kill()
            proc.wait()
            raise
        reader.join()
    finally:
        if reader.is_alive():  # pragma: no cover - only after a kill
            reader.join(5)
        os.close(read_fd)
    if proc.returncode != 0:
        raise MediaError(f"ffmpeg failed decoding {what}: {error_reason(err.decode('utf-8', 'replace'))}")
    return out, b"".join(chunks)


def decode_clips(
    path: str | os.PathLike[str],
    ffmpeg: str,
    info: MediaInfo,
    starts: Sequence[int],
    audio_starts: Sequence[int],
    *,
    frames: int,
    fps: float,
    height: int,
    width: int,
    audio_length: int,
    sample_rate: int,
    deadline: Deadline,
    threads: int = 1,
    seek: bool = True,
    fit: str = "cover",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames and audio of the clips with ONE ffmpeg process (video on stdout, audio on a 2nd pipe).

    ``starts``: first frame of each clip on the ``fps`` grid; ``audio_starts``: first sample of each
    audio window at ``sample_rate`` (may be negative). Returns ``(video uint8 [K, frames, H, W, 3],
    real int64 [K], pcm float32 [K, audio_length])`` - ``real[k]``: frames actually decoded for clip
    ``k`` (the rest repeat the last one); no audio stream gives silence. If the joint command fails,
    frames and audio are decoded separately so that the error names the stream at fault. ``fit``: how a
    frame of another aspect is fitted to ``height`` x ``width`` (``cover`` or ``contain``, see the module
    docstring).
    """
    if info.video_index is None:
        raise MediaError("no video stream")
    path = os.fspath(path)
    with_audio = info.audio_index is not None
    spans = plan_spans(starts, frames, fps, audio_starts if with_audio else [], audio_length, sample_rate, seek)
    job = _Job(path, ffmpeg, info, fps=fps, height=height, width=width, sample_rate=sample_rate, threads=threads,
               fit=fit)
    try:
        decoded, pcm = job.run(spans, True, with_audio, deadline)
    except MediaError as exc:
        if not with_audio or "timed out" in str(exc):
            raise
        decoded, _ = job.run(spans, True, False, deadline)  # raises if the video is at fault
        try:
            _, pcm = job.run(spans, False, True, deadline)
        except MediaError as aexc:
            raise MediaError(f"audio: {aexc}") from None
    assert decoded is not None
    vspans = [sp for sp in spans if sp.video is not None]
    expected = sum(sp.video.count for sp in vspans if sp.video is not None)  # vspans: all of them
    if decoded.shape[0] == expected:
        per_span, pos = [], 0
        for sp in vspans:
            per_span.append(decoded[pos : pos + sp.video.count])  # type: ignore[union-attr]
            pos += sp.video.count  # type: ignore[union-attr]
    elif len(vspans) == 1:
        per_span = [decoded]
    else:  # attribute frames to spans exactly: one video-only process per span (truncated files)
        per_span = [job.run([sp], True, False, deadline)[0] for sp in vspans]  # type: ignore[misc]
    video, real = assemble_video(vspans, per_span, starts, frames, height, width)
    if not real.any():
        raise MediaError("no frames decoded")
    audio = (
        assemble_audio(spans, pcm, audio_starts, audio_length)
        if with_audio and pcm is not None
        else np.zeros((len(audio_starts), audio_length), np.float32)
    )
    return video, real, audio


def decode_frames(
    path: str | os.PathLike[str],
    ffmpeg: str,
    info: MediaInfo,
    starts: Sequence[int],
    *,
    frames: int,
    fps: float,
    height: int,
    width: int,
    deadline: Deadline,
    threads: int = 1,
    seek: bool = True,
    fit: str = "cover",
) -> tuple[np.ndarray, np.ndarray]:
    """Frames only (see :func:`decode_clips`): ``(video uint8 [K, frames, H, W, 3], real [K])``."""
    video_only = dataclasses.replace(info, audio_index=None)
    video, real, _ = decode_clips(path, ffmpeg, video_only, starts, [], frames=frames, fps=fps, height=height,
                                  width=width, audio_length=0, sample_rate=16000, deadline=deadline,
                                  threads=threads, seek=seek, fit=fit)
    return video, real


def decode_audio(
    path: str | os.PathLike[str],
    ffmpeg: str,
    info: MediaInfo,
    starts: Sequence[int],
    *,
    length: int,
    sample_rate: int,
    deadline: Deadline,
    threads: int = 1,
    seek: bool = True,
) -> np.ndarray:
    """Mono float32 PCM windows ``[s, s + length)`` (sample indices at ``sample_rate``; may be < 0).

    Returns float32 ``[K, length]``; samples before the start or after the end of the audio are 0.
    """
    if info.audio_index is None or not len(starts):
        return np.zeros((len(starts), length), np.float32)
    spans = plan_spans([], 1, 1.0, starts, length, sample_rate, seek)
    job = _Job(os.fspath(path), ffmpeg, info, fps=1.0, height=8, width=8, sample_rate=sample_rate, threads=threads)
    _, pcm = job.run(spans, False, True, deadline)
    return assemble_audio(spans, pcm if pcm is not None else np.zeros(0, np.float32), starts, length)
