"""Probing media files with the ffmpeg binary alone (there is no ffprobe).

``ffmpeg -hide_banner -i FILE`` prints the container and stream summary to stderr and exits non-zero
("At least one output file must be specified"). :func:`parse_probe_output` turns that text into a
:class:`MediaInfo`; it is a pure function, tested against the output for many generated files.

Widths and heights are reported **after rotation**: ffmpeg autorotates when decoding, so a stream
coded 1920x1080 with a 90 degree display matrix decodes to 1080x1920, and that is what the caller
needs to plan scaling and cropping.

When the container has no duration (``Duration: N/A``: raw elementary streams, Matroska written to
a pipe, ...), :func:`measure_duration` decodes the file once, as fast as possible, to measure it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from videolabel.errors import VideolabelError


class MediaError(VideolabelError):
    """A single media file cannot be probed or decoded; the message is a one-line reason."""


@dataclass(frozen=True)
class MediaInfo:
    """What ``ffmpeg -i`` says about a file. ``None`` where the output does not say."""

    duration: float | None = None  # seconds, container duration
    start: float | None = None  # container start time, seconds
    format_name: str | None = None  # e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    video_index: int | None = None  # absolute stream index of the first real video stream
    video_codec: str | None = None
    pix_fmt: str | None = None
    width: int | None = None  # after rotation
    height: int | None = None  # after rotation
    coded_width: int | None = None  # as stored
    coded_height: int | None = None
    sar: float | None = None  # sample (pixel) aspect ratio, when not 1:1
    rotation: float = 0.0  # display rotation in degrees, as ffmpeg reports it
    fps: float | None = None  # average/nominal frame rate (fps, else tbr)
    audio_index: int | None = None  # absolute stream index of the first audio stream
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: str | None = None  # "mono", "stereo", "5.1(side)", ...
    duration_measured: bool = False  # duration came from decoding, not from the header

    @property
    def has_video(self) -> bool:
        return self.video_index is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_index is not None

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


# --- parsing --------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*Duration:\s*(?P<dur>N/A|[\d:.]+)\s*(?:,\s*start:\s*(?P<start>-?[\d.]+))?", re.M)
_INPUT = re.compile(r"^Input #0,\s*(?P<fmt>.*?),\s*from\s", re.M)
_STREAM = re.compile(r"^\s*Stream #0:(?P<idx>\d+)(?P<rest>[^:]*):\s*"
                     r"(?P<kind>Video|Audio|Subtitle|Data|Attachment):\s*(?P<desc>.*)$")
_SIZE = re.compile(r"(?<![\w.])(?P<w>\d{1,6})x(?P<h>\d{1,6})(?![\w.])")
_FPS = re.compile(r"(?P<v>\d+(?:\.\d+)?)(?P<k>k?)\s*fps\b")
_TBR = re.compile(r"(?P<v>\d+(?:\.\d+)?)(?P<k>k?)\s*tbr\b")
_SAR = re.compile(r"SAR\s+(?P<n>\d+):(?P<d>\d+)")
_HZ = re.compile(r"(?P<v>\d+)\s*Hz\b")
# ffmpeg >= 7: "Display Matrix: rotation of 90.00 degrees"; older: "displaymatrix: rotation of -90.00 degrees"
_ROTATION = re.compile(r"display\s*matrix\s*:\s*rotation of\s*(?P<deg>[-+]?\d+(?:\.\d+)?)\s*degrees", re.I)
_ROTATE_TAG = re.compile(r"^\s*rotate\s*:\s*(?P<deg>[-+]?\d+(?:\.\d+)?)\s*$", re.I)
_ERROR_OPENING = re.compile(r"Error opening input(?: files?)?:\s*(?P<why>.+)$", re.M)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside (), [] or {}: 'yuv420p(tv, bt709), 640x360' -> 2 parts."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}" and depth:
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _rate(m: re.Match[str] | None) -> float | None:
    if m is None:
        return None
    value = float(m.group("v")) * (1000.0 if m.group("k") else 1.0)
    return value if value > 0 else None


def _hms(text: str) -> float | None:
    if text == "N/A":
        return None
    try:
        seconds = 0.0
        for part in text.split(":"):
            seconds = seconds * 60 + float(part)
        return seconds
    except ValueError:
        return None


def parse_probe_output(stderr: str) -> MediaInfo:
    """Parse the stderr of ``ffmpeg -hide_banner -i FILE``. Pure; raises nothing on odd text."""
    info: dict[str, object] = {}
    m = _INPUT.search(stderr)
    if m:
        info["format_name"] = m.group("fmt")
    m = _DURATION.search(stderr)
    if m:
        info["duration"] = _hms(m.group("dur"))
        if m.group("start"):
            info["start"] = float(m.group("start"))

    current_is_video = False  # inside the indented block of the chosen video stream
    for line in stderr.splitlines():
        sm = _STREAM.match(line)
        if sm:
            current_is_video = False
            kind, desc, idx = sm.group("kind"), sm.group("desc"), int(sm.group("idx"))
            if kind == "Video" and "video_index" not in info:
                if "(attached pic)" in desc or "(thumbnail)" in desc:
                    continue  # cover art is not a video
                parts = _split_top_level(desc)
                info["video_index"] = idx
                info["video_codec"] = parts[0].split()[0] if parts and parts[0].split() else None
                if len(parts) > 1:
                    pm = re.match(r"[A-Za-z0-9_]+", parts[1])
                    if pm and not _SIZE.fullmatch(parts[1].split()[0]):
                        info["pix_fmt"] = pm.group(0)
                for part in parts[1:]:
                    zm = _SIZE.search(part)
                    if zm:
                        info["coded_width"], info["coded_height"] = int(zm.group("w")), int(zm.group("h"))
                        break
                info["fps"] = _rate(_FPS.search(desc)) or _rate(_TBR.search(desc))
                sar = _SAR.search(desc)
                if sar and int(sar.group("n")) > 0 and int(sar.group("d")) > 0 and sar.group("n") != sar.group("d"):
                    info["sar"] = int(sar.group("n")) / int(sar.group("d"))
                current_is_video = True
            elif kind == "Audio" and "audio_index" not in info:
                parts = _split_top_level(desc)
                info["audio_index"] = idx
                info["audio_codec"] = parts[0].split()[0] if parts and parts[0].split() else None
                hz = _HZ.search(desc)
                if hz:
                    info["sample_rate"] = int(hz.group("v"))
                    for i, part in enumerate(parts):  # the part after "NNNN Hz" is the channel layout
                        if _HZ.search(part) and i + 1 < len(parts):
                            info["channels"] = parts[i + 1]
                            break
            continue
        if not line.startswith("   "):  # stream sub-blocks (Metadata, Side data) are indented deeper
            current_is_video = False
            continue
        if current_is_video:
            rm = _ROTATION.search(line)
            if rm:  # the display matrix wins over the legacy tag
                info["rotation"] = float(rm.group("deg"))
                info["_matrix"] = True
            elif not info.get("_matrix"):
                tm = _ROTATE_TAG.match(line)
                if tm:  # legacy "rotate" tag: clockwise, the display matrix counts counter-clockwise
                    info["rotation"] = -float(tm.group("deg"))

    info.pop("_matrix", None)
    cw, ch = info.get("coded_width"), info.get("coded_height")
    if cw is not None and ch is not None:
        rot = float(info.get("rotation", 0.0)) % 180.0  # type: ignore[arg-type]
        swap = abs(rot - 90.0) < 1.0
        info["width"], info["height"] = (ch, cw) if swap else (cw, ch)
    return MediaInfo(**info)  # type: ignore[arg-type]


_INPUT_HEAD = re.compile(r"^Input #(?P<i>\d+), ", re.M)


def split_probe_output(stderr: str, n: int) -> list[str | None]:
    """Split the stderr of ``ffmpeg -i F0 -i F1 ... -i F(n-1)`` into ``n`` texts as ``ffmpeg -i Fk`` alone
    would print them for :func:`parse_probe_output` (``Input #0``, ``Stream #0:j``). Pure.

    ffmpeg opens its inputs in order and stops at the first it cannot open, so the inputs it printed
    form a prefix: entry ``k`` is ``None`` for every input from the first unprinted one on. Text that
    is not a well-ordered series of inputs (``Input #0``, ``#1``, ... each once) gives all ``None``:
    the caller probes each file on its own instead.
    """
    heads = list(_INPUT_HEAD.finditer(stderr))
    out: list[str | None] = [None] * n
    if [int(m.group("i")) for m in heads] != list(range(len(heads))) or len(heads) > n:
        return out
    for k, m in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(stderr)
        text = "Input #0, " + stderr[m.end():end]
        out[k] = re.sub(rf"^(\s*Stream #){k}:", r"\g<1>0:", text, flags=re.M) if k else text
    return out


def error_reason(stderr: str) -> str:
    """A one-line reason from ffmpeg's stderr when it could not open or decode a file."""
    m = _ERROR_OPENING.search(stderr)
    detail = None
    for line in stderr.splitlines():
        low = line.lower()
        if "moov atom not found" in low or "invalid data" in low or "could not find codec" in low:
            detail = re.sub(r"^\[[^\]]*\]\s*", "", line).strip()
            break
    if m:
        why = m.group("why").strip().rstrip(".")
        if detail and detail not in why and why not in detail:
            return f"{why} ({detail})"
        return why
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("At least one output file")]
    return lines[-1] if lines else "ffmpeg failed without a message"


# --- running --------------------------------------------------------------------------------------


def preflight(path: str | os.PathLike[str]) -> int:
    """Cheap checks before ffmpeg runs; returns the size in bytes or raises :class:`MediaError`."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise MediaError("dangling symlink (target does not exist)") from None
        raise MediaError("file not found") from None
    except OSError as exc:
        raise MediaError(f"cannot stat: {exc.strerror or exc}") from None
    if p.is_dir():
        raise MediaError("is a directory")
    if st.st_size == 0:
        raise MediaError("empty file (0 bytes)")
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise MediaError(f"cannot read: {exc.strerror or exc}") from None
    return int(st.st_size)


def probe(path: str | os.PathLike[str], ffmpeg: str, *, timeout: float = 60.0) -> MediaInfo:
    """Probe ``path``; raise :class:`MediaError` with a one-line reason when ffmpeg cannot open it."""
    preflight(path)
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-i", os.fspath(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg timed out after {timeout:g} s while probing") from None
    stderr = out.stderr.decode("utf-8", "replace")
    if "Input #0" not in stderr:
        raise MediaError(f"not a readable media file: {error_reason(stderr)}")
    return parse_probe_output(stderr)


def probe_many(paths: list[str], ffmpeg: str, *, timeout: float = 60.0) -> list[MediaInfo | None]:
    """Probe ``paths`` with ONE ffmpeg process (``ffmpeg -i A -i B ...``): the per-file start of ffmpeg
    (about 12 ms of CPU, half of a probe) is paid once per batch. Entry ``k`` is what :func:`probe`
    would return for ``paths[k]``, or ``None`` where this batch could not say (a file ffmpeg cannot
    open, the files after it, a timeout): probe those on their own, for their one-line reason.
    """
    try:
        out = subprocess.run(probe_many_command(ffmpeg, paths), capture_output=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    except (subprocess.TimeoutExpired, OSError):
        return [None] * len(paths)
    return parse_probe_many(out.stderr.decode("utf-8", "replace"), len(paths))


def probe_many_command(ffmpeg: str, paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """``ffmpeg -i A -i B ...``: the command behind :func:`probe_many`."""
    cmd = [ffmpeg, "-nostdin", "-hide_banner"]
    for p in paths:
        cmd += ["-i", os.fspath(p)]
    return cmd


def parse_probe_many(stderr: str, n: int) -> list[MediaInfo | None]:
    """The stderr of :func:`probe_many_command` over ``n`` files, parsed per file (see
    :func:`split_probe_output`: the probed files are a prefix, ``None`` from the first unprobed on)."""
    return [None if t is None else parse_probe_output(t) for t in split_probe_output(stderr, n)]


_OUT_TIME = re.compile(r"^out_time_us=(\d+)$", re.M)


def measure_duration(path: str | os.PathLike[str], ffmpeg: str, info: MediaInfo, *,
                     timeout: float = 600.0) -> float | None:
    """Decode the video (else audio) stream once to a null sink and return its duration in seconds."""
    if info.video_index is not None:
        stream = f"0:{info.video_index}"
    elif info.audio_index is not None:
        stream = f"0:{info.audio_index}"
    else:
        return None
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-threads", "1",
           "-i", os.fspath(path), "-map", stream, "-f", "null", "-progress", "pipe:1", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg timed out after {timeout:g} s while measuring the duration") from None
    values = [int(v) for v in _OUT_TIME.findall(out.stdout.decode("ascii", "replace"))]
    if not values or max(values) <= 0:
        return None
    return max(values) / 1e6
