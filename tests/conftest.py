"""Shared fixtures: tiny real videos made with the ffmpeg binary from lavfi sources.

``make_video(path, ...)`` (also the ``make_video`` fixture) writes a video with a known picture
and a known sound; see its docstring. Everything is generated on the fly (no test data files).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from videolabel.media.binary import find_ffmpeg

FFMPEG = find_ffmpeg()
PYTHON = sys.executable


def _video_graph(video: str, w: int, h: int, fps: float, seconds: float) -> str:
    common = f"r={fps:g}:d={seconds:g}"
    if video == "testsrc":
        return f"testsrc2=s={w}x{h}:{common}"
    if video == "redblue":  # left half red, right half blue
        return f"color=c=red:s={w // 2}x{h}:{common}[l];color=c=blue:s={w - w // 2}x{h}:{common}[r];[l][r]hstack[out0]"
    if video == "redgreen":  # red for the first half of the duration, green for the second
        half = seconds / 2
        return f"color=c=red:s={w}x{h}:r={fps:g}:d={half:g}[a];color=c=lime:s={w}x{h}:r={fps:g}:d={seconds - half:g}[b];[a][b]concat=n=2:v=1:a=0[out0]"
    return f"color=c={video}:s={w}x{h}:{common}"


def make_video(
    path: str | os.PathLike[str],
    *,
    seconds: float = 2.0,
    size: tuple[int, int] = (160, 120),  # (width, height)
    fps: float = 30.0,
    video: str | None = "testsrc",  # "testsrc", "redblue", "redgreen", a colour name, or None
    audio: str | None = "sine",  # "sine", "silence" or None
    freq: float = 440.0,
    sample_rate: int = 44100,
    channels: int = 1,
    vcodec: str = "libx264",
    pix_fmt: str | None = "yuv420p",
    acodec: str = "aac",
    fmt: str | None = None,
    in_args: Sequence[str] = (),
    out_args: Sequence[str] = (),
    pipe: bool = False,
    ffmpeg: str = FFMPEG,
) -> Path:
    """Write a small video; returns its path. Raises ``RuntimeError`` with ffmpeg's stderr.

    ``pipe=True`` writes through a pipe (needs ``fmt``): the muxer cannot seek back, so e.g.
    Matroska gets no duration in its header (``Duration: N/A``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    cmd = [ffmpeg, "-y", "-hide_banner", "-loglevel", "error", "-nostdin"]
    maps = []
    n = 0
    if video is not None:
        cmd += ["-f", "lavfi", "-i", _video_graph(video, w, h, fps, seconds)]
        maps += ["-map", f"{n}:v"]
        n += 1
    if audio is not None:
        layout = "mono" if channels == 1 else "stereo"
        if audio == "sine":
            src = f"sine=frequency={freq:g}:sample_rate={sample_rate}:duration={seconds:g}"
        else:
            src = f"anullsrc=r={sample_rate}:cl={layout}:d={seconds:g}"
        cmd += ["-f", "lavfi", "-i", src]
        maps += ["-map", f"{n}:a"]
        n += 1
    cmd += list(in_args) + maps
    if video is not None:
        cmd += ["-c:v", vcodec]
        if vcodec in ("libx264",):
            cmd += ["-preset", "ultrafast"]
        if pix_fmt:
            cmd += ["-pix_fmt", pix_fmt]
    if audio is not None:
        cmd += ["-c:a", acodec, "-ac", str(channels)]
    if not pipe:  # (with -t the Matroska muxer announces the duration even through a pipe)
        cmd += ["-t", f"{seconds:g}"]
    cmd += list(out_args)
    if fmt:
        cmd += ["-f", fmt]
    cmd.append("-" if pipe else str(path))
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"making {path} failed: {exc.stderr.decode(errors='replace')}\n{cmd}") from None
    if pipe:
        path.write_bytes(out.stdout)
    return path


def remux(src: str | os.PathLike[str], dst: str | os.PathLike[str], *args: str, ffmpeg: str = FFMPEG) -> Path:
    """Copy streams of ``src`` into ``dst`` with extra input options ``args`` (e.g. a rotation)."""
    cmd = [ffmpeg, "-y", "-hide_banner", "-loglevel", "error", "-nostdin", *args, "-i", str(src), "-c", "copy", str(dst)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return Path(dst)


@pytest.fixture(scope="session")
def ffmpeg_bin() -> str:
    return FFMPEG


@pytest.fixture(name="make_video")
def make_video_fixture():
    """The :func:`make_video` function."""
    return make_video


def make_set(root: Path, n: int, *, seconds: float = 1.5, start: int = 0) -> list[Path]:
    """``n`` distinct small videos (different sizes, colours, tones) under ``root``."""
    colours = ["red", "blue", "lime", "yellow", "magenta", "cyan", "white", "orange"]
    out = []
    for k in range(start, start + n):
        sub = root / f"d{k % 3}"
        video = "testsrc" if k % 2 else colours[k % len(colours)]
        out.append(
            make_video(sub / f"v{k:03d}.mp4", seconds=seconds + 0.1 * (k % 4), size=(96 + 8 * (k % 5), 72),
                       video=video, freq=220.0 + 55.0 * k, audio=None if k % 7 == 3 else "sine")
        )
    return out


@pytest.fixture
def video_set(tmp_path: Path):
    """Factory: ``video_set(n)`` -> SRC directory with ``n`` distinct small videos."""

    def build(n: int = 6, seconds: float = 1.5, name: str = "src") -> Path:
        root = tmp_path / name
        make_set(root, n, seconds=seconds)
        return root

    return build


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m videolabel ARGS``; returns the completed process (text mode)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([PYTHON, "-m", "videolabel", *args], capture_output=True, text=True, timeout=timeout, env=full_env)


# --- a small real AV-Digits cache (embedded subset -> real videos -> real ingest), shared by the
# --- training, assignment and evaluation tests

AVDIGITS_BUILD = Path(__file__).resolve().parents[1] / "examples" / "avdigits" / "build.py"


def load_module(name: str, path: Path):
    """The Python file ``path`` imported as module ``name`` (once; registered in ``sys.modules`` so
    that process pools can pickle its functions by module name)."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_avdigits_builder():
    return load_module("avdigits_build", AVDIGITS_BUILD)


@pytest.fixture(scope="module")
def single_thread():
    """Small tensors: one intra-op thread is faster, and immune to a busy machine's scheduling."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def avdigits_cache(tmp_path_factory) -> tuple[Path, Path]:
    """(cache, labels.csv): 80 AV-Digits videos (8 per digit, 6 speakers) ingested at 48x48, 8 frames."""
    from videolabel.config import IngestConfig
    from videolabel.ingest import run_ingest

    root = tmp_path_factory.mktemp("avdigits")
    load_avdigits_builder().build(root / "av", per_class=8, size=(64, 64), seconds=2.0, seed=0, workers=2)
    cache = root / "cache"
    run_ingest(root / "av" / "videos", cache,
               IngestConfig(frames=8, fps=8.0, height=48, width=48, clips_per_video=2), workers=2, progress="none")
    return cache, root / "av" / "labels.csv"
