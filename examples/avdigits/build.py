#!/usr/bin/env python
"""Build AV-Digits: an AV-MNIST-style set of short videos where both streams carry the label.

Each video shows one handwritten digit (MNIST subset, OpenCV's ``digits.png``) moving along a
random smooth path, slightly scaling and rotating, over a gaussian-noise background, and its
soundtrack holds one spoken recording of the *same* digit (Free Spoken Digit Dataset) at a random
offset; the rest is silence with a very low noise floor (about -80 dBFS). Picture and sound are
not synchronised beyond being in the same video; the speaker is a nuisance factor.

Standalone script (numpy, Pillow, scipy and an ffmpeg binary; nothing from ``videolabel`` is
required, though its ``find_ffmpeg`` is used when installed)::

    python examples/avdigits/build.py --out avdigits --per-class 20

or, from Python, load it by path and call :func:`build`::

    spec = importlib.util.spec_from_file_location("avdigits_build", "examples/avdigits/build.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    mod.build("avdigits", per_class=20)

Output::

    OUT/videos/<digit>/<digit>_<speaker>_<take>_<n>.mp4   (n: index of the video in its class)
    OUT/labels.csv     path (relative to OUT/videos, POSIX), label, speaker, take, digit_image,
                       recording, audio_offset_s, audio_duration_s
    OUT/build.json     the parameters of the build

Audio is resampled from FSDD's 8 kHz to 16 kHz (``--sample-rate``) with a polyphase filter.
Everything is deterministic given ``--seed`` (and the inputs); with the default ``bitexact``
flags the encoded files are byte-identical across runs on the same ffmpeg build.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_FSDD = HERE / "data" / "fsdd"
DEFAULT_DIGITS = HERE / "data" / "digits.png"

CELL = 20  # pixels per digit cell in digits.png
N_CLASSES = 10
NOISE_FLOOR = 1e-4  # RMS of the audio noise floor (about -80 dBFS)
FADE_S = 0.005  # raised-cosine fade at both ends of a recording

_RECORDING = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")

# codec -> (extension, container, video args, default audio codec)
CODECS: dict[str, tuple[str, str, list[str], str]] = {
    "libx264": (".mp4", "mp4", ["-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"], "aac"),
    "mpeg4": (".mp4", "mp4", ["-q:v", "4", "-pix_fmt", "yuv420p"], "aac"),
    "libvpx-vp9": (
        ".webm",
        "webm",
        ["-b:v", "0", "-crf", "32", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1",
         "-pix_fmt", "yuv420p"],
        "libopus",
    ),
}
AUDIO_CODECS: dict[str, list[str]] = {
    "aac": ["-b:a", "64k"],
    "libopus": ["-b:a", "32k"],
    "none": [],
}
_WEBM_AUDIO = {"libopus", "none"}


class BuildError(Exception):
    """A problem with the inputs or the encoder; the CLI prints it as one line."""


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    path: str
    digit: int
    speaker: str
    take: int


def find_recordings(fsdd: str | os.PathLike[str]) -> list[Recording]:
    """All ``{digit}_{speaker}_{take}.wav`` files in ``fsdd`` (or in ``fsdd/recordings``)."""
    root = Path(fsdd)
    if not root.is_dir():
        raise BuildError(f"FSDD folder not found: {root}")
    if not any(root.glob("*.wav")) and (root / "recordings").is_dir():
        root = root / "recordings"
    recs = []
    for p in root.iterdir():
        m = _RECORDING.match(p.name)
        if m and p.is_file():
            recs.append(Recording(str(p), int(m.group(1)), m.group(2), int(m.group(3))))
    if not recs:
        raise BuildError(f"no {{digit}}_{{speaker}}_{{take}}.wav recordings in {root}")
    recs.sort(key=lambda r: (r.digit, r.speaker, r.take))
    return recs


def load_digit_sheet(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a digits sheet: 20x20 cells, rows split evenly over the 10 classes (row-major).

    Works for OpenCV's full 2000x1000 sheet (100 columns, 500 per class) and for any crop of its
    columns (the embedded 400x1000 sheet: 20 columns, 100 per class). Returns (pixels, columns).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            sheet = np.asarray(im.convert("L"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot read digits sheet {path}: {exc}") from exc
    h, w = sheet.shape
    rows, cols = h // CELL, w // CELL
    if h % CELL or w % CELL or rows == 0 or rows % N_CLASSES or cols == 0:
        raise BuildError(
            f"{path}: expected a sheet of {CELL}x{CELL} cells with a multiple of {N_CLASSES} rows "
            f"(e.g. 2000x1000), got {w}x{h}"
        )
    return sheet, cols


def class_images(sheet: np.ndarray, cols: int, digit: int) -> list[int]:
    """Indices (``row * cols + col`` in the sheet) of the images of ``digit``."""
    rows_per_class = sheet.shape[0] // CELL // N_CLASSES
    first = digit * rows_per_class * cols
    return list(range(first, first + rows_per_class * cols))


def digit_cell(sheet: np.ndarray, cols: int, index: int) -> np.ndarray:
    r, c = divmod(index, cols)
    return sheet[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL].copy()


def parse_takes(spec: str | None) -> set[int] | None:
    """``"0-4"``, ``"5-49"``, ``"0,2,4"``, ``"0-3,10"`` -> a set of takes (None: all)."""
    if spec is None or str(spec).strip() == "":
        return None
    out: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise BuildError(f"bad take range {part!r}")
            out.update(range(lo, hi + 1))
        elif part.isdigit():
            out.add(int(part))
        else:
            raise BuildError(f"bad --takes {spec!r}: use a range (0-4), a list (0,1,2) or both")
    return out


def parse_list(spec: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip() for s in items if s.strip()]
    return items or None


def parse_size(spec: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(spec, str):
        m = re.fullmatch(r"(\d+)[xX](\d+)", spec.strip())
        if not m:
            raise BuildError(f"bad --size {spec!r}: use WxH, e.g. 128x128")
        spec = (int(m.group(1)), int(m.group(2)))
    w, h = int(spec[0]), int(spec[1])
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise BuildError(f"--size must be even and at least 16x16, got {w}x{h}")
    return w, h


# --- planning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    label: int
    n: int
    recording: Recording
    digit_image: int
    rel_path: str
    seed: tuple[int, int, int]


def plan(
    recs: list[Recording],
    sheet: np.ndarray,
    cols: int,
    per_class: int,
    seed: int,
    ext: str,
    reuse: int = 1,
) -> list[Job]:
    """Choose the recording and the digit image of every video, deterministically.

    Per class: the speakers' takes are shuffled and interleaved round-robin (speaker order
    shuffled too), so any ``per_class`` gives speaker-balanced classes, and a smaller
    ``per_class`` gives a prefix of a larger one. Digit images are a shuffled permutation of the
    class's images (distinct until the class runs out, then it cycles). ``reuse`` > 1 lets each
    recording appear in up to that many videos (the round-robin order repeated), each time with
    another digit image and its own random offset, level and motion.
    """
    jobs = []
    for d in range(N_CLASSES):
        rng = np.random.default_rng([seed, d])
        by_speaker: dict[str, list[Recording]] = {}
        for r in recs:
            if r.digit == d:
                by_speaker.setdefault(r.speaker, []).append(r)
        speakers = sorted(by_speaker)
        speakers = [speakers[i] for i in rng.permutation(len(speakers))]
        queues = [[by_speaker[s][i] for i in rng.permutation(len(by_speaker[s]))] for s in speakers]
        order: list[Recording] = []
        depth = max((len(q) for q in queues), default=0)
        for i in range(depth):
            order.extend(q[i] for q in queues if i < len(q))
        images = class_images(sheet, cols, d)
        img_order = [images[i] for i in rng.permutation(len(images))]
        for n, rec in enumerate((order * max(1, int(reuse)))[:per_class]):
            name = f"{d}_{rec.speaker}_{rec.take}_{n}{ext}"
            jobs.append(
                Job(d, n, rec, img_order[n % len(img_order)], f"{d}/{name}", (seed, d, n))
            )
    return jobs


# --- rendering ------------------------------------------------------------------------------


STYLES = ("plain", "lowres", "varied")
#: ``--style lowres``: the side, in pixels, the handwriting is shrunk to before it is blown up again
LOW_RES = (7, 8, 10, 12)
#: ``--sound``: plain (the recording at 0.35-0.9 of full scale over a -80 dBFS floor) or varied (peaks from -30 to
#: -1 dBFS over a noise floor from -80 to -35 dBFS)
SOUNDS = ("plain", "varied")


@dataclass(frozen=True)
class Style:
    """The look and sound of one ``--style varied`` video, drawn by :func:`draw_style`."""

    scale: tuple[float, float]  # digit cell height as a fraction of the frame's short side
    low_res: int  # 0: the 20x20 image as is; else it is box-shrunk to low_res x low_res and blown up again
    background: str  # "flat", "noise", "gradient" or "texture"
    bg_rgb: tuple[float, float, float]
    bg_rgb2: tuple[float, float, float]  # the gradient's / texture's second colour
    ink_rgb: tuple[float, float, float]
    noise_sigma: float  # per-frame pixel noise (0-255 scale)
    peak: tuple[float, float]  # range of the recording's peak level (full scale 1)
    floor: float  # RMS of the audio noise floor


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def draw_style(rng: np.random.Generator) -> Style:
    """A random look and sound for ``--style varied``: digit scale 25-70 % of the short side, low-
    resolution handwriting in half the videos, coloured ink on flat, noisy, gradient or textured
    backgrounds of any colour (contrast at least 70 grey levels, either polarity), the recording peaking
    anywhere from -30 to -1 dBFS over a noise floor from -80 to -35 dBFS."""
    lo = float(rng.uniform(0.25, 0.55))
    scale = (lo, lo + float(rng.uniform(0.0, 0.15)))
    low_res = int(rng.choice([0, 0, 7, 8, 10, 12]))
    background = str(rng.choice(["flat", "noise", "gradient", "texture"]))
    while True:
        bg, ink = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
        if abs(_luma(bg) - _luma(ink)) >= 70:
            break
    bg2 = np.clip(bg + rng.uniform(-60, 60, size=3), 0, 255)
    if abs(_luma(bg2) - _luma(ink)) < 50:
        bg2 = bg
    sigma = float(rng.uniform(2, 25)) if background == "noise" else float(rng.uniform(0, 6))
    peak_hi = float(10 ** rng.uniform(-1.5, -0.05))
    floor = float(10 ** rng.uniform(-4.0, -1.75))
    return Style((scale[0], scale[1]), low_res, background, tuple(map(float, bg)), tuple(map(float, bg2)),
                 tuple(map(float, ink)), sigma, (0.5 * peak_hi, peak_hi), floor)


def _blow_up(digit: np.ndarray, low_res: int) -> np.ndarray:
    """``digit`` (20x20) shrunk to ``low_res`` x ``low_res`` (box filter) and enlarged back (bilinear):
    the same image with the detail of a low-resolution scan."""
    from PIL import Image

    im = Image.fromarray(digit).resize((low_res, low_res), Image.BOX)
    return np.asarray(im.resize((CELL, CELL), Image.BILINEAR), dtype=np.uint8)


def _background(style: Style, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The still background of a ``varied`` video: float32 [H, W, 3]."""
    c1, c2 = np.asarray(style.bg_rgb, np.float32), np.asarray(style.bg_rgb2, np.float32)
    if style.background == "gradient":
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (np.cos(ang) * xx / width + np.sin(ang) * yy / height)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        return c1 * (1 - t[..., None]) + c2 * t[..., None]
    if style.background == "texture":  # smooth blobs: a coarse noise field blown up
        from PIL import Image

        coarse = rng.uniform(0, 1, size=(max(2, height // 12), max(2, width // 12))).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32).clip(0, 1)
        return c1 * (1 - t[..., None]) + c2 * t[..., None]
    return np.broadcast_to(c1, (height, width, 3)).astype(np.float32)


def render_frames(digit: np.ndarray, n_frames: int, width: int, height: int, fps: float,
                  rng: np.random.Generator, chunk: int = 16, style: Style | None = None, low_res: int = 0):
    """Yield uint8 frames in chunks: the digit on a random smooth path. Grey [t, H, W] over gaussian
    noise (``style`` None, the plain AV-Digits look), or RGB [t, H, W, 3] in the given ``style``.
    ``low_res`` (plain look only): the handwriting shrunk to that many pixels a side and blown up again."""
    t_all = np.arange(n_frames, dtype=np.float64) / fps
    short = min(width, height)
    if style is not None and style.low_res:
        digit = _blow_up(digit, style.low_res)
    elif style is None and low_res:
        digit = _blow_up(digit, low_res)
    lo, hi = (0.40, 0.55) if style is None else style.scale
    s0 = rng.uniform(lo, hi) * short / CELL  # digit cell height -> 40-55 % of the frame (plain)
    s_amp, s_f, s_ph = rng.uniform(0.04, 0.10), rng.uniform(0.2, 0.8), rng.uniform(0, 2 * np.pi)
    a0, a_amp = rng.uniform(-0.2, 0.2), rng.uniform(0.0, 0.12)  # radians
    a_f, a_ph = rng.uniform(0.1, 0.6), rng.uniform(0, 2 * np.pi)
    scale = s0 * (1 + s_amp * np.sin(2 * np.pi * s_f * t_all + s_ph))
    angle = a0 + a_amp * np.sin(2 * np.pi * a_f * t_all + a_ph)
    # ink lies within ~8 px of the cell centre; keep it inside the frame
    half = 8.0 * s0 * (1 + s_amp) * 1.2

    def path(extent: float) -> np.ndarray:
        room = max(0.0, extent / 2 - half)
        f1, f2 = rng.uniform(0.1, 0.5), rng.uniform(0.4, 1.2)
        p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
        w1 = rng.uniform(0.55, 0.8)
        wave_ = w1 * np.sin(2 * np.pi * f1 * t_all + p1) + (1 - w1) * np.sin(2 * np.pi * f2 * t_all + p2)
        return extent / 2 + room * wave_

    cx, cy = path(width), path(height)
    bg_level, bg_sigma = rng.uniform(10, 60), rng.uniform(6, 18)
    ink = rng.uniform(180, 255)
    if style is not None:
        still = _background(style, width, height, rng)
        ink_rgb = np.asarray(style.ink_rgb, np.float32)

    pad = np.zeros((CELL + 3, CELL + 3), dtype=np.float32)
    pad[1 : CELL + 1, 1 : CELL + 1] = digit.astype(np.float32) / 255.0
    flat = pad.ravel()
    stride = CELL + 3
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32) + 0.5
    for start in range(0, n_frames, chunk):
        sl = slice(start, min(n_frames, start + chunk))
        k = sl.stop - sl.start
        c = np.cos(angle[sl]).astype(np.float32)[:, None, None]
        s = np.sin(angle[sl]).astype(np.float32)[:, None, None]
        inv = (1.0 / scale[sl]).astype(np.float32)[:, None, None]
        dx = xs[None, None, :] - cx[sl].astype(np.float32)[:, None, None]  # [k,1,W]
        dy = ys[None, :, None] - cy[sl].astype(np.float32)[:, None, None]  # [k,H,1]
        # inverse rotation + scale, to continuous cell coordinates (pixel i centred at i + 0.5)
        u = (c * dx + s * dy) * inv + (CELL / 2 - 0.5)
        v = (c * dy - s * dx) * inv + (CELL / 2 - 0.5)
        np.clip(u, -1.0, float(CELL), out=u)
        np.clip(v, -1.0, float(CELL), out=v)
        u0 = np.floor(u)
        v0 = np.floor(v)
        fu = u - u0
        fv = v - v0
        idx = (v0.astype(np.int32) + 1) * stride + (u0.astype(np.int32) + 1)
        a = (flat[idx] * (1 - fu) + flat[idx + 1] * fu) * (1 - fv) + (
            flat[idx + stride] * (1 - fu) + flat[idx + stride + 1] * fu
        ) * fv
        if style is not None:
            bg = rng.standard_normal((k, height, width, 1), dtype=np.float32)
            bg *= np.float32(style.noise_sigma)
            bg = bg + still[None]
            a = a[..., None]
            frame = bg * (1 - a) + ink_rgb * a
            np.clip(frame + 0.5, 0, 255, out=frame)
            yield frame.astype(np.uint8)
            continue
        bg = rng.standard_normal((k, height, width), dtype=np.float32)
        bg *= bg_sigma
        bg += bg_level
        frame = bg * (1 - a) + ink * a
        np.clip(frame + 0.5, 0, 255, out=frame)
        yield frame.astype(np.uint8)


def read_wav(path: str) -> tuple[np.ndarray, int]:
    try:
        with wave.open(path, "rb") as w:
            sr, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except (OSError, wave.Error, EOFError) as exc:
        raise BuildError(f"cannot read {path}: {exc}") from exc
    if width != 2:
        raise BuildError(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    return x, sr


def make_audio(path: str, sample_rate: int, n_samples: int, rng: np.random.Generator,
               style: Style | None = None):
    """The soundtrack: the recording at a random offset, noise floor elsewhere (``style``: its level
    range and noise floor; None: peak 0.35-0.9 over the -80 dBFS floor).

    Returns (float32 samples, offset in s, placed duration in s). A recording longer than the
    video is cut at the video's end (offset 0).
    """
    x, sr = read_wav(path)
    if sr != sample_rate:
        from scipy.signal import resample_poly

        g = math.gcd(sample_rate, sr)
        x = resample_poly(x, sample_rate // g, sr // g).astype(np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0:
        lo, hi = (0.35, 0.9) if style is None else style.peak
        x = x * (rng.uniform(lo, hi) / peak)  # random level, so loudness is not a speaker cue
    x = np.array(x[:n_samples], dtype=np.float32)
    nf = min(len(x) // 2, int(FADE_S * sample_rate))
    if nf > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(nf) / nf)).astype(np.float32)
        x[:nf] *= ramp
        x[-nf:] *= ramp[::-1]
    offset = int(rng.integers(0, n_samples - len(x) + 1))
    floor = NOISE_FLOOR if style is None else style.floor
    out = rng.standard_normal(n_samples, dtype=np.float32) * np.float32(floor)
    out[offset : offset + len(x)] += x
    return out, offset / sample_rate, len(x) / sample_rate


# --- encoding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    out_videos: str
    width: int
    height: int
    fps: float
    seconds: float
    codec: str
    audio_codec: str
    sample_rate: int
    ffmpeg: str
    style: str = "plain"
    sound: str = "plain"


def encode_one(job: Job, digit: np.ndarray, st: Settings) -> dict:
    """Render, encode and atomically write one video; return its labels.csv row."""
    rng = np.random.default_rng(list(job.seed))
    n_frames = max(1, round(st.fps * st.seconds))
    n_samples = max(1, round(st.sample_rate * st.seconds))
    ext, container, vargs, _ = CODECS[st.codec]
    final = Path(st.out_videos) / job.rel_path
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(f".{final.name}.part")
    # the varied look has its own stream, so the plain build's draws (and bytes) do not change
    drawn = draw_style(np.random.default_rng([*job.seed, 1]))
    style = drawn if st.style == "varied" else None
    low_res = int(np.random.default_rng([*job.seed, 2]).choice(LOW_RES)) if st.style == "lowres" else 0
    # the varied sound (level and noise floor) is the same draw as the varied look's, so a varied build is unchanged
    audio, offset_s, dur_s = make_audio(job.recording.path, st.sample_rate, n_samples, rng,
                                        drawn if st.sound == "varied" else None)
    frames = render_frames(digit, n_frames, st.width, st.height, st.fps, rng, style=style, low_res=low_res)
    with tempfile.TemporaryDirectory(prefix="avdigits-") as tmp:
        cmd = [
            st.ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "gray" if style is None else "rgb24", "-s", f"{st.width}x{st.height}",
            "-framerate", f"{st.fps:g}", "-i", "pipe:0",
        ]
        if st.audio_codec != "none":
            apath = os.path.join(tmp, "audio.f32")
            audio.astype("<f4").tofile(apath)
            cmd += ["-f", "f32le", "-ar", str(st.sample_rate), "-ac", "1", "-i", apath,
                    "-map", "0:v:0", "-map", "1:a:0", "-c:a", st.audio_codec,
                    *AUDIO_CODECS[st.audio_codec]]
        else:
            cmd += ["-an"]
        # one encoder thread: parallelism comes from the process pool, and the bytes written do
        # not depend on --workers
        cmd += ["-c:v", st.codec, *vargs, "-threads", "1",
                "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                "-flags:a", "+bitexact", "-f", container, str(part)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            for chunk in frames:
                proc.stdin.write(chunk.tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode("utf-8", "replace")
        rc = proc.wait()
    if rc != 0:
        part.unlink(missing_ok=True)
        raise BuildError(f"ffmpeg failed (exit {rc}) on {job.rel_path}: {err.strip()[-500:]}")
    os.replace(part, final)
    return {
        "path": job.rel_path,
        "label": job.label,
        "speaker": job.recording.speaker,
        "take": job.recording.take,
        "digit_image": job.digit_image,
        "recording": os.path.basename(job.recording.path),
        "audio_offset_s": f"{offset_s:.4f}" if st.audio_codec != "none" else "",
        "audio_duration_s": f"{dur_s:.4f}" if st.audio_codec != "none" else "",
    }


def _encode_star(args):
    return encode_one(*args)


def _find_ffmpeg(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        from videolabel.media.binary import find_ffmpeg

        return find_ffmpeg()
    except ImportError:
        pass
    if shutil.which("ffmpeg"):
        return shutil.which("ffmpeg")
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise BuildError("no ffmpeg found: pass --ffmpeg PATH or install imageio-ffmpeg") from exc


# --- build ----------------------------------------------------------------------------------

COLUMNS = ["path", "label", "speaker", "take", "digit_image", "recording",
           "audio_offset_s", "audio_duration_s"]


@dataclass(frozen=True)
class Summary:
    out: Path
    n_videos: int
    per_class: dict[int, int]
    speakers: list[str]
    elapsed_s: float

    def line(self, st: Settings) -> str:
        counts = sorted(set(self.per_class.values()))
        pc = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        return (
            f"avdigits: {self.n_videos} videos ({N_CLASSES} classes x {pc}, "
            f"{len(self.speakers)} speakers: {','.join(self.speakers)}), {st.width}x{st.height} "
            f"{st.fps:g} fps {st.seconds:g} s {st.codec}/{st.audio_codec} {st.sample_rate} Hz "
            f"-> {self.out} in {self.elapsed_s:.1f} s"
        )


def build(
    out: str | os.PathLike[str],
    *,
    fsdd: str | os.PathLike[str] = DEFAULT_FSDD,
    digits: str | os.PathLike[str] = DEFAULT_DIGITS,
    per_class: int = 20,
    speakers: str | list[str] | None = None,
    exclude_speakers: str | list[str] | None = None,
    takes: str | None = None,
    size: str | tuple[int, int] = (128, 128),
    fps: float = 30.0,
    seconds: float = 2.0,
    codec: str = "libx264",
    audio_codec: str | None = None,
    sample_rate: int = 16000,
    seed: int = 0,
    workers: int | None = None,
    ffmpeg: str | None = None,
    overwrite: bool = False,
    print_summary: bool = False,
    reuse: int = 1,
    style: str = "plain",
    sound: str | None = None,
) -> Summary:
    """Build the set into ``out``; see the module docstring. Returns a :class:`Summary`."""
    t0 = time.perf_counter()
    width, height = parse_size(size)
    if codec not in CODECS:
        raise BuildError(f"unknown --codec {codec!r}; choose from {', '.join(CODECS)}")
    ext, container, _, default_audio = CODECS[codec]
    audio_codec = audio_codec or default_audio
    if audio_codec not in AUDIO_CODECS:
        raise BuildError(f"unknown --audio-codec {audio_codec!r}; choose from {', '.join(AUDIO_CODECS)}")
    if container == "webm" and audio_codec not in _WEBM_AUDIO:
        raise BuildError(f"{codec} writes .webm, which cannot hold {audio_codec}: use libopus")
    if per_class < 1:
        raise BuildError("--per-class must be at least 1")
    if reuse < 1:
        raise BuildError("--reuse must be at least 1")
    if style not in STYLES:
        raise BuildError(f"unknown --style {style!r}; choose from {', '.join(STYLES)}")
    sound = sound or ("varied" if style == "varied" else "plain")
    if sound not in SOUNDS:
        raise BuildError(f"unknown --sound {sound!r}; choose from {', '.join(SOUNDS)}")
    if not (fps > 0 and seconds > 0):
        raise BuildError("--fps and --seconds must be positive")
    if sample_rate not in (8000, 12000, 16000, 24000, 48000) and audio_codec == "libopus":
        raise BuildError("libopus needs --sample-rate 8000, 12000, 16000, 24000 or 48000")
    if sample_rate < 8000:
        raise BuildError("--sample-rate must be at least 8000")

    recs = find_recordings(fsdd)
    available = sorted({r.speaker for r in recs})
    keep = parse_list(speakers)
    drop = parse_list(exclude_speakers) or []
    for name in (keep or []) + drop:
        if name not in available:
            raise BuildError(f"unknown speaker {name!r}; {fsdd} has {', '.join(available)}")
    take_set = parse_takes(takes)
    recs = [
        r for r in recs
        if (keep is None or r.speaker in keep) and r.speaker not in drop
        and (take_set is None or r.take in take_set)
    ]
    if not recs:
        raise BuildError("no recordings left after the speaker/take filters")
    missing = sorted(set(range(N_CLASSES)) - {r.digit for r in recs})
    if missing:
        raise BuildError(f"no recordings left for digit(s) {missing} after the filters")

    sheet, cols = load_digit_sheet(digits)
    out = Path(out)
    videos = out / "videos"
    if videos.exists() and any(videos.iterdir()):
        # a previous build of this script (build.json beside it) is replaced; anything else
        # needs --overwrite
        if not (overwrite or (out / "build.json").is_file()):
            raise BuildError(f"{videos} is not empty and not an AV-Digits build; pass --overwrite")
        shutil.rmtree(videos)
    for stale in ("labels.csv", "build.json"):
        (out / stale).unlink(missing_ok=True)
    videos.mkdir(parents=True, exist_ok=True)

    jobs = plan(recs, sheet, cols, per_class, seed, ext, reuse)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    st = Settings(str(videos), width, height, float(fps), float(seconds), codec, audio_codec,
                  int(sample_rate), _find_ffmpeg(ffmpeg), style, sound)
    tasks = [(j, digit_cell(sheet, cols, j.digit_image), st) for j in jobs]
    if sys.modules.get(__name__) is None:  # loaded by path without registering: cannot pickle
        workers = 1
    if workers == 1:
        rows = [encode_one(*t) for t in tasks]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            rows = list(pool.map(_encode_star, tasks, chunksize=1))

    rows.sort(key=lambda r: r["path"])
    tmp = out / ".labels.csv.part"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "labels.csv")

    per = {d: sum(1 for j in jobs if j.label == d) for d in range(N_CLASSES)}
    used_speakers = sorted({j.recording.speaker for j in jobs})
    meta = {
        "dataset": "AV-Digits",
        "n_videos": len(jobs),
        "per_class": per,
        "reuse": int(reuse),
        "style": style,
        "sound": sound,
        "speakers": used_speakers,
        "takes": sorted({j.recording.take for j in jobs}),
        "size": [width, height],
        "fps": float(fps),
        "seconds": float(seconds),
        "frames": max(1, round(fps * seconds)),
        "codec": codec,
        "audio_codec": audio_codec,
        "sample_rate": int(sample_rate),
        "seed": int(seed),
        "fsdd": str(Path(fsdd)),
        "digits": str(Path(digits)),
        "digit_sheet_columns": cols,
        "labels": "labels.csv (path relative to videos/)",
    }
    (out / "build.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    summary = Summary(out, len(jobs), per, used_speakers, time.perf_counter() - t0)
    if print_summary:
        print(summary.line(st))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="build.py",
        description="Build AV-Digits: videos of a moving handwritten digit with the same digit spoken.",
    )
    p.add_argument("--out", required=True, help="output folder (videos/, labels.csv, build.json)")
    p.add_argument("--fsdd", default=str(DEFAULT_FSDD),
                   help="FSDD recordings folder (default: the embedded subset)")
    p.add_argument("--digits", default=str(DEFAULT_DIGITS),
                   help="digits sheet PNG, full 2000x1000 or a column crop (default: embedded 400x1000)")
    p.add_argument("--per-class", type=int, default=20,
                   help="videos per digit, capped by the recordings available (default 20)")
    p.add_argument("--reuse", type=int, default=1,
                   help="videos each recording may appear in, each with another image (default 1)")
    p.add_argument("--style", default="plain", choices=STYLES,
                   help="plain: grey digit over grey noise, -80 dBFS floor (default); lowres: the plain look with "
                   "the handwriting at 7-12 pixels a side, blown up (a low-resolution scan); varied: per video a digit "
                   "scale of 25-70 %%, low-resolution handwriting in half, coloured ink and backgrounds (flat, "
                   "noise, gradient, texture), speech from -30 to -1 dBFS over a -80 to -35 dBFS floor")
    p.add_argument("--sound", choices=SOUNDS,
                   help="plain: peaks 0.35-0.9 of full scale over a -80 dBFS floor; varied: peaks from -30 to -1 dBFS "
                   "over a -80 to -35 dBFS floor (default: varied for --style varied, else plain)")
    p.add_argument("--speakers", help="comma list of speakers to use (default: all)")
    p.add_argument("--exclude-speakers", help="comma list of speakers to leave out")
    p.add_argument("--takes", help="takes to use: a range, a list or both, e.g. 0-4 or 5-49 or 0,2,4")
    p.add_argument("--size", default="128x128", help="frame size WxH, even (default 128x128)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    p.add_argument("--seconds", type=float, default=2.0, help="video length in seconds (default 2.0)")
    p.add_argument("--codec", default="libx264", choices=sorted(CODECS),
                   help="video codec: libx264 and mpeg4 write .mp4, libvpx-vp9 .webm (default libx264)")
    p.add_argument("--audio-codec", choices=sorted(AUDIO_CODECS),
                   help="audio codec (default aac for .mp4, libopus for .webm; none: no audio)")
    p.add_argument("--sample-rate", type=int, default=16000,
                   help="audio sample rate; FSDD's 8 kHz is resampled (default 16000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--ffmpeg", help="ffmpeg executable (default: videolabel's / imageio-ffmpeg's)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/videos even if it is not a previous AV-Digits build")
    a = p.parse_args(argv)
    try:
        build(
            a.out, fsdd=a.fsdd, digits=a.digits, per_class=a.per_class, speakers=a.speakers,
            exclude_speakers=a.exclude_speakers, takes=a.takes, size=a.size, fps=a.fps,
            seconds=a.seconds, codec=a.codec, audio_codec=a.audio_codec,
            sample_rate=a.sample_rate, seed=a.seed, workers=a.workers, ffmpeg=a.ffmpeg,
            overwrite=a.overwrite, print_summary=True, reuse=a.reuse, style=a.style, sound=a.sound,
        )
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("build.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
