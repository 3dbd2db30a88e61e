"""Locating the ffmpeg executable: no system ffmpeg is required.

Order: an explicit path (``--ffmpeg``), the ``VIDEOLABEL_FFMPEG`` environment variable, ``ffmpeg`` on
``PATH``, and finally the static binary bundled by the ``imageio-ffmpeg`` package.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from videolabel.errors import VideolabelError

ENV_VAR = "VIDEOLABEL_FFMPEG"


def find_ffmpeg(explicit: str | os.PathLike[str] | None = None) -> str:
    """Return the path of a working ffmpeg executable, or raise a :class:`VideolabelError`."""
    if explicit:
        return _checked(str(explicit), "--ffmpeg")
    env = os.environ.get(ENV_VAR)
    if env:
        return _checked(env, ENV_VAR)
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - imageio-ffmpeg is a hard dependency
        imageio_ffmpeg = None
    if imageio_ffmpeg is not None:
        try:
            return imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:
            pass
    raise VideolabelError(
        "no ffmpeg found: pass --ffmpeg PATH, set VIDEOLABEL_FFMPEG, or reinstall imageio-ffmpeg"
    )


def _checked(path: str, origin: str) -> str:
    resolved = shutil.which(path) or path
    if not (os.path.isfile(resolved) and os.access(resolved, os.X_OK)):
        raise VideolabelError(f"ffmpeg given by {origin} is not an executable file: {path}")
    return resolved


@functools.lru_cache(maxsize=8)
def ffmpeg_version(path: str) -> str:
    """First line of ``ffmpeg -version`` (recorded in manifests and run files)."""
    out = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.splitlines() or ["unknown"])[0]
