"""Media for the report: frame strips and spectrogram images from the cache, audio from the source.

Frames and spectrograms come from the cache's shards (no video decoding); audio is cut from the
source video with the ffmpeg binary, because the cache holds log-mel spectrograms, not waveforms.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

# a viridis-like colour map: anchors interpolated linearly
_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32
)


def media_stem(video_id: str) -> str:
    """A safe, unique file-name stem derived from a video_id (never from a user path)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", str(video_id))[:40] or "video"
    digest = hashlib.sha1(str(video_id).encode("utf-8")).hexdigest()[:8]
    return f"{safe}-{digest}"


def frame_strip(video: np.ndarray, out: Path, *, n: int = 4, height: int = 96) -> None:
    """Write ``n`` frames of a clip ([T, H, W, 3] uint8), evenly spaced, side by side, as a PNG."""
    video = np.asarray(video, dtype=np.uint8)
    t = video.shape[0]
    idx = np.unique(np.linspace(0, t - 1, num=min(n, t)).round().astype(int))
    strip = np.concatenate([video[i] for i in idx], axis=1)
    img = Image.fromarray(strip, "RGB")
    if img.height != height:
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.Resampling.NEAREST
                         if img.height < height else Image.Resampling.BILINEAR)
    img.save(out, format="PNG", optimize=True)


def spectrogram_png(logmel: np.ndarray, out: Path, *, height: int = 96) -> None:
    """Write a log-mel spectrogram ([n_mels, frames]) as a colour PNG, low frequencies at the bottom."""
    s = np.asarray(logmel, dtype=np.float32)
    s = np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(s.min()), float(s.max())
    x = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    x = x[::-1] * (len(_ANCHORS) - 1)
    i = np.clip(np.floor(x).astype(int), 0, len(_ANCHORS) - 2)
    f = (x - i)[..., None]
    rgb = (_ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f).round().clip(0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if img.height != height:
        img = img.resize((img.width, height), Image.Resampling.BILINEAR)
    img.save(out, format="PNG", optimize=True)


def extract_audio(ffmpeg: str, source: Path, out: Path, *, start_s: float, duration_s: float,
                  sample_rate: int, timeout: float = 60.0) -> bool:
    """Cut ``duration_s`` seconds of sound at ``start_s`` from ``source`` into a mono WAV; True on success."""
    if start_s < 0:
        duration_s += start_s
        start_s = 0.0
    if duration_s <= 0:
        return False
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{start_s:.3f}",
           "-t", f"{duration_s:.3f}", "-i", str(source), "-vn", "-ac", "1", "-ar", str(int(sample_rate)),
           "-c:a", "pcm_s16le", "-f", "wav", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    ok = proc.returncode == 0 and out.is_file() and out.stat().st_size > 44
    if not ok:
        out.unlink(missing_ok=True)
    return ok


def synthesize_audio(logmel: np.ndarray, out: Path, *, sample_rate: int, n_fft: int, win_length: int,
                     hop_length: int, log_eps: float, n_iter: int = 32) -> bool:
    """Sound reconstructed from a cached log-mel spectrogram (no source needed); True on success.

    The mel power is spread back over the FFT bins by each filter's normalised weights (the same HTK
    filterbank as ingest), and the phase is estimated by Griffin-Lim. It is a preview: intelligible
    for speech and clear for tones, not the original recording.
    """
    import wave

    import torch
    import torchaudio.functional as AF
    from torchaudio.transforms import GriffinLim

    x = torch.as_tensor(np.asarray(logmel, dtype=np.float32))
    mel = (torch.exp(x) - log_eps).clamp_min(0.0)  # [n_mels, T]
    fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, x.shape[0], sample_rate)  # [F, n_mels]
    weights = fb / fb.sum(dim=0, keepdim=True).clamp_min(1e-12)
    power = weights @ mel  # [F, T]
    try:
        gl = GriffinLim(n_fft=n_fft, win_length=win_length, hop_length=hop_length, power=1.0, n_iter=n_iter,
                        rand_init=False)
        wav = gl(power.sqrt()).numpy()
    except RuntimeError:
        return False
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 0:
        wav = wav * (0.9 / peak)
    pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(out), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(int(sample_rate))
        fh.writeframes(pcm.tobytes())
    return True


def thumbnail(video: np.ndarray, out: Path, *, height: int = 96) -> None:
    """Write the middle frame of a clip ([T, H, W, 3] uint8) as a PNG ``height`` pixels high."""
    video = np.asarray(video, dtype=np.uint8)
    img = Image.fromarray(np.ascontiguousarray(video[video.shape[0] // 2]), "RGB")
    if img.height != height:
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.Resampling.NEAREST
                         if img.height < height else Image.Resampling.BILINEAR)
    img.save(out, format="PNG", optimize=True)
