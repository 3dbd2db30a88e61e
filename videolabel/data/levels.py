"""Sound level and noise floor for ``audio_level="video"``: one gain for the collection, one floor per band and video.

A collection's recordings come at any level and over any background: a camera with a low microphone gain, a
phone held far away, a fan, a street. Under the fixed spectrogram floor of the paper's inputs (``log(mel +
1)``, :class:`~videolabel.data.augment.AudioAugment`), a quietly recorded collection sinks under the floor, and a
loud background covers the spectrogram (``docs/method.md``, "Quiet recordings and loud backgrounds").

``audio_level="video"`` (training and inference, not in the paper) levels the stored spectrograms before the
augmentation:

1. **the collection's gain** (:func:`collection_gain`): one gain for every video of the cache, which moves the
   median of the videos' loudest bins (:func:`video_peaks`) to :data:`LEVEL_PEAK` (where AV-Digits' recordings
   sit), unless it is already within :data:`LEVEL_TOLERANCE` of it. Each video keeps its level relative to the
   others;
2. **each video's noise floor** (:func:`video_level_offsets`): per band, the ``quantile`` of the video's
   levels (all its clips, after the gain) estimates its steady background, and the band's floor is raised to
   that plus ``margin`` (3 dB) where it is above the fixed floor: what lies under the background reads as
   silence. Bins that hold no sound (digital silence, padding) count as the quietest: a band that is mostly
   empty keeps its floor, however loud its few other bins.

A collection recorded at a usual level over backgrounds under the fixed floor (AV-Digits, the development sets
with plain sound) is left exactly as it is. Moving every *video's* loudest bin to one level instead (as the
per-spectrogram ``audio_level="auto"`` does, :func:`~videolabel.data.augment.level_and_noise_floor`) cost
clean sound about 10 NMI; the collection's gain does not touch it.

The result is an offset per video and band, ``o[v, b] = g - c_{v,b} + f`` (:func:`video_level_table`, when a
run starts or labels a cache: the gain is that cache's; from each video's peak and per-band median, which
ingest stores with the video's record, :mod:`videolabel.ingest.levelstats`), added to each
clip's stored ``log(mel + 1e-6)`` on the device before the augmentation (:func:`apply_levels`); the fixed floor
``logaddexp(x, f)`` of the augmentation then applies the raised floor:
``logaddexp(x + g - c_b + f, f) = logaddexp(x + g, c_b) - c_b + f``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from videolabel.data.augment import NOISE_MARGIN
from videolabel.ingest.levelstats import EMPTY_BIN, MAX_CLIPS, stat_clips

if TYPE_CHECKING:
    from videolabel.data.dataset import ShardDataset

__all__ = ["LEVEL_PEAK", "LEVEL_TOLERANCE", "MAX_CLIPS", "Levels", "apply_levels", "collection_gain", "levels_for",
           "measuring_notice", "offsets_from_background", "video_level_offsets", "video_level_table", "video_peaks"]

#: the level ``audio_level="video"`` moves a collection's typical recording to: its median video's loudest bin,
#: 6 nats (26 dB) above the fixed floor ``log(1)``, where AV-Digits' recordings (peaks at -9 to -1 dBFS) sit
LEVEL_PEAK = 6.0
#: a collection whose median video peaks within this many nats (4.3 dB) of :data:`LEVEL_PEAK` keeps its level
LEVEL_TOLERANCE = 1.0


def video_peaks(logmel: torch.Tensor, counts: torch.Tensor, empty: float = EMPTY_BIN) -> torch.Tensor:
    """``[V]`` float32: each video's loudest stored bin over its clips (``logmel [N, F, T]``, each video's
    ``counts[v]`` clips consecutive); ``-inf`` for a video that holds no sound (every bin at or under ``empty``).
    Pure."""
    counts = counts.to(torch.int64).to(logmel.device)
    if int(counts.sum()) != logmel.shape[0]:
        raise ValueError(f"counts sum to {int(counts.sum())}, but logmel holds {logmel.shape[0]} spectrograms")
    per_clip = logmel.float().amax(dim=(1, 2))
    per_clip = torch.where(per_clip > empty, per_clip, torch.full_like(per_clip, -torch.inf))
    owner = torch.repeat_interleave(torch.arange(len(counts), device=logmel.device), counts)
    out = torch.full((len(counts),), -torch.inf, device=logmel.device)
    return out.scatter_reduce(0, owner, per_clip, reduce="amax")


def collection_gain(peaks: torch.Tensor, peak: float = LEVEL_PEAK, tolerance: float = LEVEL_TOLERANCE) -> float:
    """The gain (nats) that moves the median of the videos' loudest bins (``peaks [V]``, ``-inf`` for a silent
    video, left out) to ``peak``; 0 when it is within ``tolerance`` of it, or when no video holds sound. Pure."""
    sound = peaks[torch.isfinite(peaks)]
    if sound.numel() == 0:
        return 0.0
    gain = peak - float(sound.double().median())
    return gain if abs(gain) > tolerance else 0.0


def video_level_offsets(logmel: torch.Tensor, counts: torch.Tensor, floor: float, gain: float = 0.0,
                        quantile: float = 0.5, margin: float = NOISE_MARGIN, empty: float = EMPTY_BIN
                        ) -> torch.Tensor:
    """Offsets ``[V, F]`` that level each video's spectrograms (module docstring). Pure.

    Args:
        logmel: ``[N, F, T]`` stored spectrograms ``log(mel + 1e-6)`` of ``V`` videos, each video's clips
            consecutive.
        counts: ``[V]`` int, clips per video (``counts.sum() == N``; a video may have none).
        floor: the fixed floor the augmentation applies afterwards, ``log(log_floor)``.
        gain: the collection's gain (nats, :func:`collection_gain`), the same for every video.
        quantile: the quantile of a band's levels that estimates its background.
        margin: how far above its background a band's floor sits (3 dB).
        empty: stored bins at or under this hold no sound (padding, digital silence).

    Returns:
        ``[V, F]`` float32: ``g - c_{v,b} + floor`` (0 for a video that holds no sound), with the band's floor
        ``c_{v,b} = max(floor, q_{v,b} + g + margin)``, ``q_{v,b}`` the ``quantile`` of band ``b`` over all the
        video's bins (those at or under ``empty`` are the quietest). Exactly 0 for a collection at a usual level
        over backgrounds under the floor.
    """
    counts = counts.to(torch.int64)
    V, (N, Fm, Tm) = int(counts.numel()), logmel.shape
    if int(counts.sum()) != N:
        raise ValueError(f"counts sum to {int(counts.sum())}, but logmel holds {N} spectrograms")
    out = torch.zeros(V, Fm, dtype=torch.float32, device=logmel.device)
    if N == 0:
        return out
    dev = logmel.device
    x = logmel.float()
    counts = counts.to(dev)
    first = torch.zeros(V, dtype=torch.int64, device=dev)
    first[1:] = torch.cumsum(counts, 0)[:-1]
    cmax = int(counts.max())
    # [V, cmax] rows of x, padded: the bins of each video side by side
    slot = torch.arange(cmax, device=dev).reshape(1, cmax)
    rows = (first.reshape(V, 1) + slot).clamp_max(N - 1)
    present = slot < counts.reshape(V, 1)
    xv = x[rows.reshape(-1)].reshape(V, cmax, Fm, Tm)
    # every stored bin of the video counts towards its background; one that holds no sound (at or under ``empty``)
    # counts as the quietest: left out, the few loud bins of a band that is mostly empty would read as background
    valid = present.reshape(V, cmax, 1, 1).expand(V, cmax, Fm, Tm)
    has = (valid & (xv > empty)).any(dim=(1, 2, 3))
    # a band's floor rises only where its quantile is above floor - gain - margin: where at least a (1 - quantile)
    # share of its bins are (a superset, counted cheaply); the quantile itself is computed for those bands only
    n_valid = valid.sum(dim=(1, 3))  # [V, F]
    n_above = (valid & (xv > floor - margin - gain)).sum(dim=(1, 3))
    need = (n_valid > 0) & (n_above >= (1.0 - quantile) * n_valid - 1)
    c = torch.full((V, Fm), floor, dtype=torch.float32, device=dev)
    if bool(need.any()):
        v_idx, b_idx = need.nonzero(as_tuple=True)
        sel = xv[v_idx, :, b_idx, :].reshape(len(v_idx), -1)  # [M, cmax * T]
        ok = valid[v_idx, :, b_idx, :].reshape(len(v_idx), -1)
        bg = torch.nanquantile(torch.where(ok, sel, torch.full_like(sel, float("nan"))), quantile, dim=1)
        c[v_idx, b_idx] = _band_floor(bg, floor, gain, margin)
    return _offsets(c, has, floor, gain)


def _band_floor(background: torch.Tensor, floor: float, gain: float, margin: float) -> torch.Tensor:
    """``c = max(floor, q + g + margin)``, the band's floor from its background ``q`` (float32). Pure."""
    return torch.clamp(background + gain + margin, min=floor)


def _offsets(c: torch.Tensor, has: torch.Tensor, floor: float, gain: float) -> torch.Tensor:
    """``g - c + floor``, 0 for the videos that hold no sound (``has [V]`` False). Pure."""
    out = gain - c + floor
    return torch.where(has.reshape(-1, 1), out, torch.zeros_like(out))


def offsets_from_background(peaks: torch.Tensor, background: torch.Tensor, floor: float, gain: float = 0.0,
                            margin: float = NOISE_MARGIN) -> torch.Tensor:
    """:func:`video_level_offsets` from each video's statistics as ingest stores them
    (:mod:`videolabel.ingest.levelstats`): ``peaks [V]`` (``-inf``: no sound) and ``background [V, F]``, each
    band's median (``quantile`` 0.5). Pure.

    The same ``g - c_{v,b} + floor`` with ``c_{v,b} = max(floor, q_{v,b} + g + margin)``, the clamp applied to
    every band (:func:`video_level_offsets` computes the quantile only for the bands whose floor can rise;
    the others' clamp gives the floor)."""
    c = _band_floor(background.to(torch.float32), floor, gain, margin)
    return _offsets(c, torch.isfinite(peaks), floor, gain)


def _chunks(ds: "ShardDataset", max_clips: int, batch_clips: int):
    """(first video, last video + 1, clip indices, clips per video) of ``ds``, about ``batch_clips`` clips at a
    time; a video longer than ``max_clips`` clips is represented by ``max_clips`` of them, evenly spaced."""
    counts = ds.videos["n_clips"].to_numpy(np.int64)
    first = ds.videos["first_clip"].to_numpy(np.int64)
    picks = [first[v] + stat_clips(int(counts[v]), max_clips) for v in range(len(counts))]
    v0 = 0
    while v0 < len(counts):
        v1, n = v0, 0
        while v1 < len(counts) and (v1 == v0 or n + len(picks[v1]) <= batch_clips):
            n += len(picks[v1])
            v1 += 1
        yield v0, v1, np.concatenate(picks[v0:v1]), torch.tensor([len(p) for p in picks[v0:v1]], dtype=torch.int64)
        v0 = v1


def _stored(ds: "ShardDataset", max_clips: int) -> bool:
    """Whether :func:`video_level_table` reads ``ds``'s statistics from what ingest stored."""
    return max_clips == MAX_CLIPS and ds.level_stats is not None


def video_level_table(ds: "ShardDataset", floor: float, max_clips: int = MAX_CLIPS, batch_clips: int = 512,
                      device: torch.device | str = "cpu") -> tuple[np.ndarray, float, np.ndarray]:
    """:func:`video_level_offsets` of every video of ``ds`` (``[videos, n_mels]`` float32), the collection's
    gain they include (:func:`collection_gain` over ``ds``), and which videos had the floor of at least one
    band raised above the fixed one (``[videos]`` bool: a video that holds sound and has an offset under the
    gain).

    From the statistics ingest stored with each video (``ds.level_stats``, :mod:`videolabel.ingest.levelstats`)
    when every record has them and ``max_clips`` is theirs; otherwise (a cache ingested before they were
    stored) two passes over the cache's sound (the peaks, then the offsets), about ``batch_clips`` clips at a
    time, computed on ``device`` (the run's); a video longer than ``max_clips`` clips is measured on
    ``max_clips`` of them, evenly spaced."""
    if _stored(ds, max_clips):
        assert ds.level_stats is not None
        peaks, background = (torch.from_numpy(np.array(a)) for a in ds.level_stats)
        gain = collection_gain(peaks)
        table = offsets_from_background(peaks, background, floor, gain).numpy()
    else:
        peaks = torch.full((len(ds.videos),), -torch.inf)
        for v0, v1, clips, used in _chunks(ds, max_clips, batch_clips):
            peaks[v0:v1] = video_peaks(ds.read_audio(clips.tolist()).to(device), used).cpu()
        gain = collection_gain(peaks)
        table = np.zeros((len(ds.videos), ds.config.n_mels), np.float32)
        for v0, v1, clips, used in _chunks(ds, max_clips, batch_clips):
            audio = ds.read_audio(clips.tolist()).to(device)
            table[v0:v1] = video_level_offsets(audio, used, floor, gain).cpu().numpy()
    raised = torch.isfinite(peaks).numpy() & (table < gain - 1e-6).any(axis=1)
    return table, gain, raised


@dataclass(frozen=True)
class Levels:
    """What ``audio_level="video"`` measured on a cache: the offsets a run adds to its sound, and their summary."""

    offsets: torch.Tensor  #: ``[videos, n_mels]`` float32, on the run's device (:func:`video_level_offsets`)
    gain: float  #: the collection's gain, nats of power (:func:`collection_gain`)
    raised: np.ndarray  #: ``[videos]`` bool: at least one band's floor raised above the fixed one
    #: where each video's peak and background came from: ``"ingest"`` (stored with the records) or ``"measured"``
    #: (two passes over the sound of a cache ingested before they were stored)
    source: str = "ingest"

    @property
    def gain_db(self) -> float:
        """The gain in dB (of power), to 0.01 dB."""
        return round(10.0 * self.gain / math.log(10.0), 2)

    def record(self) -> dict[str, Any]:
        """The summary a run logs (``metrics.jsonl``, event ``levels``): the gain in dB, the raised floors, and
        where the statistics came from."""
        return {"event": "levels", "gain_db": self.gain_db, "floors_raised": int(self.raised.sum()),
                "videos": int(self.offsets.shape[0]), "source": self.source}


def apply_levels(audio: torch.Tensor, offsets: torch.Tensor, video_index: torch.Tensor) -> torch.Tensor:
    """Each clip's stored spectrogram ``audio [B, F, T]`` plus its video's offsets (``offsets [V, F]``, rows
    ``video_index [B]``), as float32 on ``audio``'s device. Pure."""
    rows = offsets.to(audio.device)[video_index.to(audio.device)]
    return audio.float() + rows.unsqueeze(-1)


def measuring_notice(ds: "ShardDataset") -> str:
    """What a user is told before the two passes of :func:`video_level_table` over an old cache's sound."""
    clips = int(np.minimum(ds.videos["n_clips"].to_numpy(np.int64), MAX_CLIPS).sum())
    return (f"levels: {ds.cache_dir} was ingested before the sound's level statistics were stored; measuring "
            f"them now, two passes over {clips:,} clips' sound (about 0.6-2 ms per clip; `videolabel ingest "
            "--overwrite` stores them)")


def levels_for(ds: "ShardDataset", level: str, log_floor: float, device: torch.device | str = "cpu", *,
               say: Callable[[str], None] | None = None) -> Levels | None:
    """The :class:`Levels` a run's ``audio_level`` asks for on ``ds``, their offsets on ``device``:
    :func:`video_level_table` for ``"video"`` (the fixed floor of ``log_floor`` under them), None for the others.
    ``say``, when given, is called with :func:`measuring_notice` before an old cache's sound is measured."""
    if level != "video":
        return None
    stored = _stored(ds, MAX_CLIPS)
    if say is not None and not stored:
        say(measuring_notice(ds))
    table, gain, raised = video_level_table(ds, math.log(max(log_floor, 1e-6)), device=device)
    return Levels(torch.from_numpy(table).to(device), gain, raised, "ingest" if stored else "measured")
