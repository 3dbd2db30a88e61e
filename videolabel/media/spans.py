"""The read plan of a video's clip windows: which spans of the file one ffmpeg command decodes, and
putting the decoded frames and samples back into clips. Pure (numpy only); see :mod:`videolabel.media.decode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["MERGE_GAP_S", "Group", "Span", "assemble_audio", "assemble_video", "group_windows", "plan_spans"]

#: windows closer than this are decoded as one span (seeking costs up to a GOP of decoding)
MERGE_GAP_S = 10.0


@dataclass(frozen=True)
class Group:
    first: int  # first unit (frame or sample) of the group, on the output time grid
    ranges: tuple[tuple[int, int], ...]  # union of the windows, relative to `first`, sorted, disjoint

    @property
    def count(self) -> int:
        return sum(b - a for a, b in self.ranges)

    @property
    def span(self) -> int:
        return self.ranges[-1][1]


def group_windows(starts: Sequence[int], length: int, merge_gap: int, *, from_zero: bool = False) -> list[Group]:
    """Group windows ``[s, s + length)`` whose gaps are at most ``merge_gap`` units. Pure.

    ``from_zero``: one group anchored at 0 (decode from the start, no seeking).
    """
    if from_zero:
        merged = group_windows(starts, length, 10**15)
        if not merged:
            return []
        g = merged[0]
        return [Group(0, tuple((a + g.first, b + g.first) for a, b in g.ranges))]
    groups: list[Group] = []
    cur: list[list[int]] = []
    for s in sorted(set(int(x) for x in starts)):
        if cur and s - cur[-1][1] <= merge_gap:
            if s <= cur[-1][1]:
                cur[-1][1] = max(cur[-1][1], s + length)
            else:
                cur.append([s, s + length])
        else:
            if cur:
                groups.append(_make_group(cur))
            cur = [[s, s + length]]
    if cur:
        groups.append(_make_group(cur))
    return groups


def _make_group(ranges: list[list[int]]) -> Group:
    first = ranges[0][0]
    return Group(first, tuple((a - first, b - first) for a, b in ranges))


@dataclass
class Span:
    """One decoded span of the file: a ``-ss``/``-t`` input feeding a video and/or audio chain."""

    start_s: float  # seek point (on the frame grid when it has video)
    end_s: float
    first_frame: int = 0  # frame index of start_s on the fps grid
    video: Group | None = None  # frame ranges relative to first_frame
    audio_first: int = 0  # sample index of start_s
    audio_len: int = 0  # samples produced for this span (exactly: apad + atrim)


def plan_spans(
    starts: Sequence[int], frames: int, fps: float,
    audio_starts: Sequence[int], audio_length: int, sample_rate: int, seek: bool,
) -> list[Span]:
    """Group the video windows (frames) and audio windows (samples) into spans. Pure."""
    items: list[tuple[float, float, str, int]] = [(s / fps, (s + frames) / fps, "v", int(s)) for s in starts]
    for a in audio_starts:
        if a + audio_length > 0:
            items.append((max(0, a) / sample_rate, (a + audio_length) / sample_rate, "a", int(a)))
    items.sort()
    if not items:
        return []
    merged: list[list] = []
    for lo, hi, kind, x in items:
        if merged and (not seek or lo - merged[-1][1] <= MERGE_GAP_S):
            merged[-1][1] = max(merged[-1][1], hi)
            merged[-1][2].append((kind, x))
        else:
            merged.append([lo, hi, [(kind, x)]])
    spans = []
    for lo, hi, members in merged:
        if not seek:
            lo = 0.0
        vstarts = [x for kind, x in members if kind == "v"]
        astarts = [x for kind, x in members if kind == "a"]
        if vstarts:
            first = int(np.floor(lo * fps + 1e-6))
            start_s = first / fps
        else:
            first = 0
            start_s = max(0, min(astarts)) / sample_rate if seek else 0.0
        span = Span(start_s=start_s, end_s=hi, first_frame=first)
        if vstarts:
            g = group_windows([v - first for v in vstarts], frames, 10**15)[0]
            span.video = Group(0, tuple((a + g.first, b + g.first) for a, b in g.ranges))
        if astarts:
            span.audio_first = int(round(start_s * sample_rate))
            span.audio_len = max(a + audio_length for a in astarts) - span.audio_first
        spans.append(span)
    return spans


def assemble_video(spans: list[Span], per_span: list[np.ndarray], starts: Sequence[int], frames: int,
                    height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    video = np.zeros((len(starts), frames, height, width, 3), np.uint8)
    real = np.zeros(len(starts), np.int64)
    for span, got in zip(spans, per_span):
        g = span.video
        if g is None:
            continue
        union = np.concatenate([np.arange(a, b) for a, b in g.ranges])  # frame order in the output
        for k, s in enumerate(starts):
            rel = int(s) - span.first_frame
            if not any(a <= rel < b for a, b in g.ranges):
                continue
            want = np.searchsorted(union, np.arange(rel, rel + frames))
            n_real = int((want < got.shape[0]).sum())
            real[k] = n_real
            if n_real:
                video[k, :n_real] = got[want[:n_real]]
                video[k, n_real:] = got[want[n_real - 1]]
    return video, real


def assemble_audio(spans: list[Span], pcm: np.ndarray, audio_starts: Sequence[int], length: int) -> np.ndarray:
    out = np.zeros((len(audio_starts), length), np.float32)
    total = sum(sp.audio_len for sp in spans)
    if pcm.shape[0] < total:  # cannot happen with apad/atrim; be safe
        pcm = np.concatenate([pcm, np.zeros(total - pcm.shape[0], np.float32)])
    pos = 0
    offsets = []
    for sp in spans:
        if sp.audio_len > 0:
            offsets.append((sp.audio_first, sp.audio_first + sp.audio_len, pos))
            pos += sp.audio_len
    for k, a in enumerate(audio_starts):
        a = int(a)
        lo = max(0, a)
        for first, end, p in offsets:
            if first <= lo < end:
                n = min(a + length, end) - lo
                out[k, lo - a : lo - a + n] = pcm[p + lo - first : p + lo - first + n]
                break
    np.nan_to_num(out, copy=False)
    return out
