"""Every kind of awkward input is either ingested correctly or recorded with its reason."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_video, remux, run_cli

from videolabel.config import IngestConfig
from videolabel.data.dataset import ShardDataset
from videolabel.ingest import run_ingest

UNICODE = "vidéo über 東京 1.mp4"
IS_ROOT = os.geteuid() == 0

# rel path -> expected status ("ok" / "failed") and a substring of the error for failures
EXPECT: dict[str, tuple[str, str | None]] = {
    "bad/empty.mp4": ("failed", "empty file"),
    "bad/truncated.mp4": ("failed", "moov atom not found"),
    "bad/notvideo.mp4": ("failed", "Invalid data"),
    "bad/audioonly.mp4": ("failed", "no video stream"),
    "bad/dangling.mp4": ("failed", "dangling symlink"),
    "bad/unreadable.mp4": ("ok" if IS_ROOT else "failed", None if IS_ROOT else "Permission denied"),
    "odd/noaudio.mp4": ("ok", None),
    "odd/short.mp4": ("ok", None),
    "odd/mpeg4.avi": ("ok", None),
    "odd/yuv444.mkv": ("ok", None),
    "odd/vp9.webm": ("ok", None),
    "odd/mjpeg.avi": ("ok", None),
    "odd/gray.mkv": ("ok", None),
    "odd/vfr.mkv": ("ok", None),
    "odd/rotated.mp4": ("ok", None),
    "odd/huge.mp4": ("ok", None),
    "odd/piped.mkv": ("ok", None),
    "odd/truncated_stream.mkv": ("ok", None),
    f"odd/{UNICODE}": ("ok", None),
    "odd/latin1-\\xe9t\\xe9.mp4": ("ok", None),  # a name that is not UTF-8, stored readable
    "containers/c.flv": ("ok", None),
    "containers/c.wmv": ("ok", None),
    "containers/c.mpg": ("ok", None),
    "containers/c.ts": ("ok", None),
    "containers/c.3gp": ("ok", None),
    "containers/c.ogv": ("ok", None),
    "containers/c.mov": ("ok", None),
    "containers/c.m4v": ("ok", None),
}


def build_bad_src(root: Path) -> Path:
    bad, odd, cont = root / "bad", root / "odd", root / "containers"
    for d in (bad, odd, cont):
        d.mkdir(parents=True)
    (bad / "empty.mp4").write_bytes(b"")
    good = make_video(root.parent / "good.mp4", seconds=2.0)
    data = good.read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom is at the end: gone
    (bad / "notvideo.mp4").write_text("this is not a video\n" * 50)
    make_video(bad / "audioonly.mp4", video=None, seconds=1.0)
    os.symlink(bad / "gone.mp4", bad / "dangling.mp4")
    shutil.copy(good, bad / "unreadable.mp4")
    os.chmod(bad / "unreadable.mp4", 0)
    os.symlink(root, bad / "loop")  # a directory cycle: must neither hang nor duplicate

    make_video(odd / "noaudio.mp4", seconds=1.5, audio=None)
    make_video(odd / "short.mp4", seconds=0.5)
    make_video(odd / "mpeg4.avi", seconds=1.5, vcodec="mpeg4", acodec="libmp3lame")
    make_video(odd / "yuv444.mkv", seconds=1.5, pix_fmt="yuv444p")
    make_video(odd / "vp9.webm", seconds=1.5, vcodec="libvpx-vp9", acodec="libopus", sample_rate=48000,
               out_args=["-deadline", "realtime", "-cpu-used", "8"])
    make_video(odd / "mjpeg.avi", seconds=1.5, vcodec="mjpeg", pix_fmt="yuvj422p", acodec="pcm_s16le")
    make_video(odd / "gray.mkv", seconds=1.5, vcodec="ffv1", pix_fmt="gray", audio=None)
    make_video(odd / "vfr.mkv", seconds=2.0, out_args=["-vf", "setpts='N/(30*TB)+if(eq(mod(N,3),0),0.013/TB,0)'", "-fps_mode", "vfr"])
    rb = make_video(root.parent / "rb.mp4", seconds=1.5, size=(160, 96), video="redblue")
    remux(rb, odd / "rotated.mp4", "-display_rotation", "90")
    make_video(odd / "huge.mp4", seconds=0.3, size=(3840, 2160))
    make_video(odd / "piped.mkv", seconds=1.5, fmt="matroska", pipe=True)
    long_mkv = make_video(root.parent / "long.mkv", seconds=3.0, audio=None)
    blob = long_mkv.read_bytes()
    (odd / "truncated_stream.mkv").write_bytes(blob[: int(len(blob) * 0.6)])
    make_video(odd / UNICODE, seconds=1.5)
    shutil.copy(good, os.fsdecode(os.fsencode(odd) + b"/latin1-\xe9t\xe9.mp4"))

    make_video(cont / "c.flv", seconds=1.2, vcodec="flv", acodec="libmp3lame", sample_rate=44100)
    make_video(cont / "c.wmv", seconds=1.2, vcodec="wmv2", acodec="wmav2")
    make_video(cont / "c.mpg", seconds=1.2, vcodec="mpeg2video", acodec="mp2")
    make_video(cont / "c.ts", seconds=1.2)
    make_video(cont / "c.3gp", seconds=1.2, size=(176, 144))
    make_video(cont / "c.ogv", seconds=1.2, vcodec="libtheora", acodec="libvorbis")
    make_video(cont / "c.mov", seconds=1.2)
    make_video(cont / "c.m4v", seconds=1.2, fmt="mp4")
    return root


@pytest.fixture(scope="module")
def bad_cache(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    src = build_bad_src(base / "src")
    out = base / "cache"
    summary = run_ingest(src, out, IngestConfig(clips_per_video=2), workers=2, shard_size=4, progress="none")
    manifest = pd.read_parquet(out / "manifest.parquet")
    return src, out, summary, manifest


def test_every_file_has_exactly_one_row(bad_cache) -> None:
    _, _, summary, manifest = bad_cache
    assert sorted(manifest["path"]) == sorted(EXPECT)  # the symlink loop added no duplicates
    assert manifest["video_id"].is_unique
    ok = sum(1 for s, _ in EXPECT.values() if s == "ok")
    assert summary.found == len(EXPECT) and summary.ingested == ok and summary.failed == len(EXPECT) - ok
    assert summary.clips == int(manifest["n_clips"].sum())


@pytest.mark.parametrize("rel", sorted(EXPECT))
def test_each_kind(bad_cache, rel) -> None:
    _, _, _, manifest = bad_cache
    row = manifest.set_index("path").loc[rel]
    status, error = EXPECT[rel]
    assert row["status"] == status, row["error"]
    if status == "failed":
        assert error in row["error"] and "\n" not in row["error"]
        assert row["n_clips"] == 0
    else:
        assert row["error"] is None or pd.isna(row["error"])
        assert row["n_clips"] >= 1 and row["width"] > 0 and row["height"] > 0 and row["duration"] > 0


def test_specific_facts(bad_cache) -> None:
    _, out, _, manifest = bad_cache
    m = manifest.set_index("path")
    assert not m.loc["odd/noaudio.mp4", "has_audio"] and m.loc["containers/c.ts", "has_audio"]
    assert m.loc["odd/short.mp4", "n_clips"] == 1 and m.loc["odd/short.mp4", "padded_frames"] == 15
    assert (m.loc["odd/rotated.mp4", "width"], m.loc["odd/rotated.mp4", "height"]) == (96, 160)
    assert m.loc["odd/huge.mp4", "width"] == 3840
    assert m.loc["odd/mpeg4.avi", "video_codec"] == "mpeg4" and m.loc["odd/vp9.webm", "video_codec"] == "vp9"
    assert m.loc["odd/gray.mkv", "pix_fmt"] == "gray" and m.loc["odd/mjpeg.avi", "video_codec"] == "mjpeg"
    assert m.loc["odd/piped.mkv", "duration"] == pytest.approx(1.5, abs=0.05)  # measured by decoding
    # the truncated Matroska (3 s announced, ~1.8 s decodable) keeps only the clip it can decode
    assert m.loc["odd/truncated_stream.mkv", "n_clips"] == 1
    assert m.loc["odd/truncated_stream.mkv", "padded_frames"] == 0
    ds = ShardDataset(out)
    assert len(ds) == int(m["n_clips"].sum())
    row = ds.videos.set_index("path").loc[f"odd/{UNICODE}"]
    clip = ds[int(row["first_clip"])]
    assert clip["video"].shape == (30, 128, 171, 3) and clip["video"].float().std() > 10  # a real picture


def test_failures_table(bad_cache) -> None:
    _, out, _, manifest = bad_cache
    failures = pd.read_parquet(out / "failures")
    failed = manifest[manifest["status"] == "failed"]
    assert sorted(failures["path"]) == sorted(failed["path"])
    assert failures["error"].map(bool).all()


def test_short_skip_and_require_audio(tmp_path) -> None:
    src = tmp_path / "src"
    make_video(src / "short.mp4", seconds=0.5)
    make_video(src / "mute.mp4", seconds=1.5, audio=None)
    make_video(src / "fine.mp4", seconds=1.5)
    s = run_ingest(src, tmp_path / "c", IngestConfig(short="skip", require_audio=True), workers=1, progress="none")
    m = pd.read_parquet(tmp_path / "c" / "manifest.parquet").set_index("path")
    assert m.loc["short.mp4", "status"] == "skipped" and "shorter than one clip" in m.loc["short.mp4", "error"]
    assert m.loc["mute.mp4", "status"] == "failed" and "no audio stream" in m.loc["mute.mp4", "error"]
    assert m.loc["fine.mp4", "status"] == "ok"
    assert (s.ingested, s.failed, s.skipped) == (1, 1, 1)


def test_max_failures_exit_code_3(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"")
    (src / "b.mp4").write_text("nope")
    make_video(src / "good.mp4", seconds=1.2)
    out = tmp_path / "cache"
    r = run_cli("ingest", str(src), "--out", str(out), "--max-failures", "1", "--workers", "1", "--json")
    assert r.returncode == 3, r.stderr
    err_lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert err_lines[-1].startswith("videolabel: error:") and "max-failures" in err_lines[-1]
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["failed"] == 2 and doc["ingested"] == 1
    assert (out / "manifest.parquet").exists()  # everything was written before exiting
    # within the limit: exit 0 (a rerun that has nothing to do also reports the recorded failures)
    r = run_cli("ingest", str(src), "--out", str(out), "--max-failures", "2", "--quiet")
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = run_cli("ingest", str(src), "--out", str(out), "--max-failures", "0", "--quiet")
    assert r.returncode == 3


def test_arrays_hold_what_the_decoder_produced(bad_cache) -> None:
    _, out, _, manifest = bad_cache
    ds = ShardDataset(out)
    row = ds.videos.set_index("path").loc["odd/noaudio.mp4"]
    batch = ds.__getitems__(list(range(int(row["first_clip"]), int(row["first_clip"] + row["n_clips"]))))
    assert np.all(batch["audio"].numpy() == np.float16(np.log(1e-6)))
