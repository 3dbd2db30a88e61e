"""Decoding against known content: colours where they belong, the tone in its mel band, silence."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pytest
from conftest import FFMPEG, make_video, remux

from videolabel.config import IngestConfig
from videolabel.errors import VideolabelError
from videolabel.ingest.discover import Source
from videolabel.ingest.logmel import window_samples
from videolabel.ingest.worker import Settings, plan_clips, process_video
from videolabel.media.decode import Deadline, decode_audio
from videolabel.media.probe import probe
from videolabel.media.spans import group_windows
from videolabel.melscale import hz_to_mel, mel_to_hz

CFG = IngestConfig()


def run(path, cfg: IngestConfig = CFG, timeout: float = 60.0):
    return process_video(Source(path.name, str(path), "0" * 16), Settings(cfg, FFMPEG, timeout))


def is_red(px) -> bool:
    r, g, b = (int(x) for x in px)
    return r > 200 and g < 60 and b < 60


def is_blue(px) -> bool:
    r, g, b = (int(x) for x in px)
    return b > 200 and r < 60 and g < 60


def is_green(px) -> bool:
    r, g, b = (int(x) for x in px)
    return g > 200 and r < 60 and b < 60


def test_colours_and_tone_land_where_they_should(tmp_path) -> None:
    path = make_video(tmp_path / "rb.mp4", seconds=3.0, size=(320, 240), video="redblue", freq=440.0)
    res = run(path)
    assert res.status == "ok", res.record["error"]
    v, a = res.video, res.audio
    assert v.shape == (3, 30, 128, 171, 3) and v.dtype == np.uint8
    assert a.shape == (3, 257, 199) and a.dtype == np.float16
    # scale to cover (240 -> 128 rows, 320 -> 171 columns) keeps the split at the middle column
    for clip in range(3):
        for t in (0, 15, 29):
            frame = v[clip, t]
            assert all(is_red(frame[y, x]) for y in (5, 64, 122) for x in (3, 40, 80)), "left half must be red"
            assert all(is_blue(frame[y, x]) for y in (5, 64, 122) for x in (91, 130, 167)), "right half must be blue"
    # the spectral peak lies in a mel band whose triangle contains 440 Hz
    mel_pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(CFG.sample_rate / 2), CFG.n_mels + 2))
    for clip in range(3):
        profile = a[clip].astype(np.float32)[:, 60:140].mean(axis=1)  # frames well inside the audio
        peak = int(np.argmax(profile))
        assert mel_pts[peak] < 440.0 < mel_pts[peak + 2], (peak, mel_pts[peak], mel_pts[peak + 2])
        assert profile[peak] > profile.mean() + 5.0  # a clear peak, not noise
        assert profile[-20:].max() < profile[peak] - 8.0  # nothing up at 8 kHz
    assert res.record["has_audio"] is True and res.record["n_clips"] == 3


def test_clips_spread_over_time(tmp_path) -> None:
    path = make_video(tmp_path / "rg.mp4", seconds=4.0, video="redgreen", audio=None)
    cfg = IngestConfig(clips_per_video=2)
    res = run(path, cfg)
    assert res.status == "ok"
    assert res.clip_starts == pytest.approx([0.5, 2.5])
    assert all(is_red(res.video[0, t, 64, 85]) for t in range(30)), "clip 0 (0.5-1.5 s) is in the red half"
    assert all(is_green(res.video[1, t, 64, 85]) for t in range(30)), "clip 1 (2.5-3.5 s) is in the green half"


def test_no_audio_gives_silent_floor(tmp_path) -> None:
    path = make_video(tmp_path / "mute.mp4", seconds=2.0, audio=None)
    res = run(path)
    assert res.status == "ok" and res.record["has_audio"] is False and res.record["audio_codec"] is None
    floor = np.float16(np.log(np.float32(CFG.log_eps)))
    assert np.all(res.audio == floor)


def test_audio_outside_the_file_is_silence(tmp_path) -> None:
    path = make_video(tmp_path / "one.mp4", seconds=1.0, freq=1000.0, sample_rate=16000)
    info = probe(path, FFMPEG)
    n = window_samples(CFG)  # 2 s centred on the 1 s clip: 0.5 s before and 0.5 s after the file
    pcm = decode_audio(path, FFMPEG, info, [-8000], length=n, sample_rate=16000, deadline=Deadline.after(30))
    assert pcm.shape == (1, n)
    assert np.all(pcm[0, :8000] == 0.0)
    assert np.all(pcm[0, 24100:] == 0.0)
    rms = float(np.sqrt(np.mean(pcm[0, 9000:23000] ** 2)))
    assert rms == pytest.approx(0.125 / np.sqrt(2), rel=0.1)  # lavfi sine: amplitude 1/8


def test_rotation_metadata_is_applied(tmp_path) -> None:
    src = make_video(tmp_path / "rb.mp4", seconds=1.2, size=(160, 96), video="redblue", audio=None)
    rot = remux(src, tmp_path / "rot.mp4", "-display_rotation", "90")
    res = run(rot)
    assert res.status == "ok"
    assert (res.record["width"], res.record["height"]) == (96, 160)
    f = res.video[0, 10]
    top, bottom = f[8], f[120]
    # after rotation the split is horizontal: each row is one colour, top and bottom differ
    assert all(is_red(top[x]) for x in (5, 85, 165)) or all(is_blue(top[x]) for x in (5, 85, 165))
    assert is_red(top[85]) != is_red(bottom[85]) and is_blue(top[85]) != is_blue(bottom[85])


def test_variable_frame_rate(tmp_path) -> None:
    path = make_video(
        tmp_path / "vfr.mkv", seconds=3.0, audio=None,
        out_args=["-vf", "setpts='N/(30*TB)+if(eq(mod(N,3),0),0.013/TB,0)+if(gt(N,40),0.5/TB,0)'", "-fps_mode", "vfr"],
    )
    res = run(path)
    assert res.status == "ok", res.record["error"]
    assert res.video.shape[1] == 30 and res.record["n_clips"] >= 2


def test_huge_resolution_short_clip_is_padded(tmp_path) -> None:
    path = make_video(tmp_path / "4k.mp4", seconds=0.4, size=(3840, 2160), video="redblue")
    res = run(path)
    assert res.status == "ok", res.record["error"]
    assert res.video.shape == (1, 30, 128, 171, 3)
    assert res.record["padded_frames"] == 30 - 12
    assert np.array_equal(res.video[0, 29], res.video[0, 11])  # last frame repeated
    assert is_red(res.video[0, 0, 64, 20]) and is_blue(res.video[0, 0, 64, 150])


def test_gray_pixel_format(tmp_path) -> None:
    path = make_video(tmp_path / "gray.mkv", seconds=1.2, vcodec="ffv1", pix_fmt="gray", video="white", audio=None)
    res = run(path)
    assert res.status == "ok"
    v = res.video.astype(int)
    assert v.min() > 230 and np.all(v[..., 0] == v[..., 1])


def test_timeout_is_a_failure_not_a_hang(tmp_path) -> None:
    path = make_video(tmp_path / "t.mp4", seconds=1.0)
    res = run(path, timeout=1e-4)
    assert res.status == "failed" and "timed out" in res.record["error"]


def test_group_windows_pure() -> None:
    g = group_windows([0, 100, 40], 30, merge_gap=20)
    assert [(x.first, x.ranges) for x in g] == [(0, ((0, 30), (40, 70))), (100, ((0, 30),))]
    g = group_windows([0, 10], 30, merge_gap=0)  # overlapping windows merge into one range
    assert [(x.first, x.ranges, x.count) for x in g] == [(0, ((0, 40),), 40)]
    g = group_windows([50, 200], 30, merge_gap=5, from_zero=True)
    assert [(x.first, x.ranges) for x in g] == [(0, ((50, 80), (200, 230)))]


def test_plan_clips_pure() -> None:
    cfg = IngestConfig(clips_per_video=3)
    assert plan_clips(300, cfg) == [35, 135, 235]  # centres of thirds, minus half a clip
    assert plan_clips(20, cfg) == [0]  # shorter than a clip
    assert plan_clips(30, cfg) == [0]
    assert plan_clips(45, cfg) == [0, 8, 15]  # overlapping, clamped inside


def test_one_process_equals_separate_decoding(tmp_path) -> None:
    from videolabel.media.decode import decode_clips, decode_frames

    path = make_video(tmp_path / "j.mp4", seconds=4.0, size=(200, 150))
    info = probe(path, FFMPEG)
    starts = plan_clips(120, CFG)
    a_starts = [int(round((s + 15) / 30 * 16000)) - 16000 for s in starts]
    n = window_samples(CFG)
    v1, r1, p1 = decode_clips(path, FFMPEG, info, starts, a_starts, frames=30, fps=30.0, height=128, width=171,
                              audio_length=n, sample_rate=16000, deadline=Deadline.after(60))
    v2, r2 = decode_frames(path, FFMPEG, info, starts, frames=30, fps=30.0, height=128, width=171, deadline=Deadline.after(60))
    p2 = decode_audio(path, FFMPEG, info, a_starts, length=n, sample_rate=16000, deadline=Deadline.after(60))
    assert np.array_equal(v1, v2) and np.array_equal(r1, r2) and (r1 == 30).all()
    assert np.abs(p1 - p2).max() < 0.02  # resampler phase after different seek points


def test_joint_failure_falls_back_and_names_the_stream(tmp_path, monkeypatch) -> None:
    from videolabel.media import decode as dec

    path = make_video(tmp_path / "f.mp4", seconds=1.5)
    info = probe(path, FFMPEG)
    assert info.has_video and info.has_audio  # the joint decode below has both streams to fail on
    real_run = dec._Job.run
    calls = []

    def flaky(self, spans, video, audio, deadline):
        calls.append((video, audio))
        if video and audio:
            raise dec.MediaError("ffmpeg failed decoding frames and audio: boom")
        if audio and not video and monkeypatch_state["audio_broken"]:
            raise dec.MediaError("ffmpeg failed decoding audio: bad audio")
        return real_run(self, spans, video, audio, deadline)

    monkeypatch_state = {"audio_broken": False}
    monkeypatch.setattr(dec._Job, "run", flaky)
    res = run(path)
    assert res.status == "ok" and calls == [(True, True), (True, False), (False, True)]
    monkeypatch_state["audio_broken"] = True
    res = run(path)
    assert res.status == "failed" and res.record["error"].startswith("audio: ")


def _portrait_with_red_top(path) -> None:
    """A 90x160 (portrait) video: a red bar over the top eighth, blue below."""
    graph = "color=c=blue:s=90x160:r=30:d=1.2,drawbox=x=0:y=0:w=90:h=20:color=red:t=fill"
    subprocess.run([FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", graph, "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True)


def test_fit_contain_keeps_what_cover_cuts_away(tmp_path) -> None:
    path = tmp_path / "portrait.mp4"
    _portrait_with_red_top(path)
    cover, contain = run(path), run(path, replace(CFG, fit="contain"))
    assert cover.status == contain.status == "ok"
    # cover: scaled to 171 x 304 and the middle 128 rows kept; the red top (38 rows) is cut away
    f = cover.video[0, 10]
    assert all(is_blue(f[y, x]) for y in (2, 64, 125) for x in (3, 85, 167))
    # contain: scaled to 72 x 128, centred on black (columns 49-120); the red top is the first 16 rows
    f = contain.video[0, 10]
    assert is_red(f[4, 85]) and is_blue(f[64, 85]) and is_blue(f[125, 85])
    assert int(f[:, :45].max()) < 20 and int(f[:, 125:].max()) < 20, "the sides must be black"
    assert contain.video.shape == cover.video.shape == (3, 30, 128, 171, 3)


def test_fit_cover_keeps_the_hash_of_caches_made_before_the_setting() -> None:
    import dataclasses
    import hashlib
    import json

    old = dataclasses.asdict(CFG)
    del old["fit"]  # a config.json written before the setting existed
    blob = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert CFG.hash() == hashlib.sha1(blob.encode()).hexdigest()[:12]
    assert replace(CFG, fit="contain").hash() != CFG.hash()
    with pytest.raises(VideolabelError, match="fit must be"):
        replace(CFG, fit="letterbox").validate()
