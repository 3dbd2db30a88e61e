"""Typed configurations, their JSON round-trip and hashes.

The ingest configuration travels with the cache (``CACHE/config.json``) and, through its hash, with
every training run and checkpoint: preprocessing must travel with the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from videolabel.errors import VideolabelError

FORMAT_VERSION = 1
#: how a frame of another aspect than the stored size is fitted (:attr:`IngestConfig.fit`)
FITS = ("cover", "contain")
#: the decoded clips of one video are held in memory while it is processed: refuse settings beyond this
MAX_VIDEO_BYTES = 8 * 2**30

T = TypeVar("T")


@dataclass(frozen=True)
class IngestConfig:
    """How videos become clips and spectrograms. Defaults follow the paper (method.md, "Data")."""

    frames: int = 30  # frames per clip
    fps: float = 30.0  # frames are resampled to this rate
    clips_per_video: int = 3  # clips spread evenly over the video
    height: int = 128  # stored frame size: short side 128 leaves room for the 112 crop + jitter
    width: int = 171
    sample_rate: int = 16000  # audio is resampled to this rate, mono
    n_mels: int = 257
    mel_frames: int = 199
    hop_ms: float = 10.0
    win_ms: float = 20.0
    n_fft: int = 2048  # zero-padded FFT: fine enough that no mel filter is empty
    log_eps: float = 1e-6  # stored value: log(mel_power + log_eps)
    short: str = "pad"  # a video shorter than one clip: "pad" (repeat last frame) or "skip"
    require_audio: bool = False  # a video without audio fails instead of getting a silent spectrogram
    format_version: int = FORMAT_VERSION
    # a frame whose aspect differs from the stored size: "cover" (scaled to cover it, centre-cropped: the
    # paper's short-side resize; a portrait video on a landscape store loses its top and bottom) or
    # "contain" (scaled to fit inside it, centred on black: nothing of the picture is cut away)
    fit: str = "cover"

    @property
    def clip_seconds(self) -> float:
        return self.frames / self.fps

    @property
    def audio_seconds(self) -> float:
        """Length of audio behind one spectrogram: (mel_frames - 1) hops + one window."""
        return ((self.mel_frames - 1) * self.hop_ms + self.win_ms) / 1000.0

    @property
    def size(self) -> tuple[int, int]:
        """Stored frame size (height, width)."""
        return self.height, self.width

    def validate(self) -> "IngestConfig":
        """Raise a one-line :class:`VideolabelError` when the configuration cannot work; else return it."""
        problems = []
        if self.frames < 1 or self.clips_per_video < 1:
            problems.append("frames and clips_per_video must be >= 1")
        if not self.fps > 0:
            problems.append("fps must be > 0")
        if self.height < 8 or self.width < 8:
            problems.append(f"frame size {self.height}x{self.width} is too small (>= 8x8)")
        if self.height > 8192 or self.width > 8192 or self.fps > 1000 or self.sample_rate > 768000:
            problems.append("frame size up to 8192x8192, fps up to 1000 and sample_rate up to 768000 are supported")
        per_video = self.clips_per_video * self.frames * self.height * self.width * 3
        if not problems and per_video > MAX_VIDEO_BYTES:
            problems.append(f"{self.clips_per_video} clips of {self.frames} frames of {self.height}x{self.width} "
                            f"take {per_video / 2**30:.3g} GiB per video (at most {MAX_VIDEO_BYTES / 2**30:g} GiB): "
                            "fewer frames, clips or pixels")
        if self.short not in ("pad", "skip"):
            problems.append(f"short must be 'pad' or 'skip', not {self.short!r}")
        if self.fit not in FITS:
            problems.append(f"fit must be 'cover' or 'contain', not {self.fit!r}")
        if self.format_version != FORMAT_VERSION:
            problems.append(f"format_version {self.format_version} is not supported (this is {FORMAT_VERSION})")
        if self.sample_rate < 1000 or self.n_mels < 1 or self.mel_frames < 1:
            problems.append("sample_rate >= 1000, n_mels >= 1 and mel_frames >= 1 are required")
        hop = self.hop_ms * self.sample_rate / 1000.0
        win = self.win_ms * self.sample_rate / 1000.0
        if abs(hop - round(hop)) > 1e-6 or abs(win - round(win)) > 1e-6 or round(hop) < 1 or round(win) < 2:
            problems.append(f"hop ({self.hop_ms} ms) and window ({self.win_ms} ms) must be whole numbers of samples "
                            f"at {self.sample_rate} Hz")
        elif self.n_fft < round(win):
            problems.append(f"n_fft {self.n_fft} is shorter than the window ({round(win)} samples)")
        if not problems and self.n_fft >= 2:
            from videolabel.melscale import empty_mel_filters  # local: the config stays light until checked

            empty = empty_mel_filters(self.sample_rate, self.n_fft, self.n_mels)
            if empty:
                problems.append(
                    f"{len(empty)} of {self.n_mels} mel filters are empty at sample_rate={self.sample_rate}, "
                    f"n_fft={self.n_fft}: raise n_fft or lower n_mels"
                )
        if problems:
            raise VideolabelError("invalid ingest config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that identify what a cache holds: :meth:`to_dict` without ``fit="cover"``, so that a
        cache made before the field existed keeps its identity (and the runs trained on it their match)."""
        d = dataclasses.asdict(self)
        if d["fit"] == "cover":
            del d["fit"]
        return d

    def hash(self) -> str:
        """The config's short hash, of :meth:`identity`."""
        return _dict_hash(self.identity())


def _dict_hash(d: dict[str, Any]) -> str:
    """Stable short hash of a config's fields (sorted-key JSON)."""
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def from_dict(cls: type[T], data: dict[str, Any], *, origin: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with a clear message."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise VideolabelError(f"{origin}: unknown key(s) {', '.join(unknown)}")
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value, default = data[f.name], f.default
        kinds = (int, float) if isinstance(default, float) else (type(default),)
        if (isinstance(value, bool) and not isinstance(default, bool)) or not isinstance(value, kinds):
            raise VideolabelError(f"{origin}: {f.name} must be of type {type(default).__name__}, not {value!r}")
    try:
        return cls(**data)
    except TypeError as exc:  # pragma: no cover - defensive
        raise VideolabelError(f"{origin}: {exc}") from None

