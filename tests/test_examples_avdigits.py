"""The AV-Digits builder (examples/avdigits/build.py), on its embedded subset."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import load_module

from videolabel.media.binary import find_ffmpeg

BUILD_PY = Path(__file__).resolve().parents[1] / "examples" / "avdigits" / "build.py"
W, H, FPS, SECONDS, SR = 64, 64, 30, 1.0, 16000
SPEAKERS = {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}


def _load():
    return load_module("avdigits_build", BUILD_PY)


@pytest.fixture(scope="module")
def avd():
    return _load()


def _build(avd, out: Path, **kw):
    args = dict(per_class=2, size=(W, H), fps=FPS, seconds=SECONDS, seed=7, workers=2)
    args.update(kw)
    return avd.build(out, **args)


@pytest.fixture(scope="module")
def built(avd, tmp_path_factory):
    out = tmp_path_factory.mktemp("avdigits") / "set"
    summary = _build(avd, out)
    return out, summary


def _rows(out: Path) -> list[dict]:
    with open(out / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _decode_video(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [find_ffmpeg(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, H, W)


def _decode_audio(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [find_ffmpeg(), "-v", "error", "-i", str(path), "-vn", "-f", "f32le", "-ac", "1",
         "-ar", str(SR), "pipe:1"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<f4")


def test_files_and_labels(built):
    out, summary = built
    rows = _rows(out)
    assert summary.n_videos == 20 and len(rows) == 20
    files = sorted(p.relative_to(out / "videos").as_posix() for p in (out / "videos").rglob("*.mp4"))
    assert files == sorted(r["path"] for r in rows)
    assert not list((out / "videos").rglob(".*"))  # no partial files left behind
    assert list(rows[0]) == ["path", "label", "speaker", "take", "digit_image", "recording",
                             "audio_offset_s", "audio_duration_s"]
    counts = np.bincount([int(r["label"]) for r in rows], minlength=10)
    assert counts.tolist() == [2] * 10
    for r in rows:
        d = int(r["label"])
        folder, name = r["path"].split("/")
        assert folder == str(d) and name.startswith(f"{d}_{r['speaker']}_{r['take']}_")
        assert r["recording"] == f"{d}_{r['speaker']}_{r['take']}.wav"
        assert r["speaker"] in SPEAKERS and 0 <= int(r["take"]) <= 4
        # embedded sheet: 20 columns, 5 rows per class -> 100 images per class
        assert d * 100 <= int(r["digit_image"]) < (d + 1) * 100
        assert 0 <= float(r["audio_offset_s"]) <= SECONDS
        assert 0 < float(r["audio_duration_s"]) <= SECONDS
    for d in range(10):  # distinct pictures and speakers within a class
        cls = [r for r in rows if int(r["label"]) == d]
        assert len({r["digit_image"] for r in cls}) == 2
        assert len({r["speaker"] for r in cls}) == 2


def test_decoded_streams(built):
    out, _ = built
    rows = _rows(out)
    row = min(rows, key=lambda r: float(r["audio_duration_s"]))  # short word: silence around it
    video = _decode_video(out / "videos" / row["path"])
    assert video.shape == (round(FPS * SECONDS), H, W)
    assert video.max() > 150  # the digit is drawn brightly over a darker noise background
    assert np.abs(video[0].astype(int) - video[-1].astype(int)).mean() > 1  # it moves (and noise)

    audio = _decode_audio(out / "videos" / row["path"])
    assert abs(len(audio) - SECONDS * SR) < 0.05 * SR
    start = round(float(row["audio_offset_s"]) * SR)
    stop = start + round(float(row["audio_duration_s"]) * SR)
    rms = lambda x: float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))  # noqa: E731
    assert rms(audio[start:stop]) > 0.02
    margin = int(0.05 * SR)
    quiet = np.concatenate([audio[: max(0, start - margin)], audio[stop + margin :]])
    assert quiet.size > 0.2 * SR
    assert rms(quiet) < 0.002


def test_deterministic(avd, built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    _build(avd, again, workers=1)  # the worker count does not change the output
    assert (again / "labels.csv").read_bytes() == (out / "labels.csv").read_bytes()
    first = _rows(out)[0]["path"]
    np.testing.assert_array_equal(_decode_video(again / "videos" / first)[0],
                                  _decode_video(out / "videos" / first)[0])
    other = tmp_path / "other"
    _build(avd, other, seed=8, per_class=1)
    assert (other / "labels.csv").read_bytes() != (out / "labels.csv").read_bytes()


def test_cli_exclude_speakers_and_takes(avd, tmp_path, capsys):
    out = tmp_path / "held"
    rc = avd.main(["--out", str(out), "--per-class", "3", "--size", "32x32", "--seconds", "0.5",
                   "--exclude-speakers", "george,jackson", "--takes", "0-1,3", "--workers", "2"])
    assert rc == 0
    assert capsys.readouterr().out.startswith("avdigits: 30 videos")
    rows = _rows(out)
    assert len(rows) == 30
    assert {r["speaker"] for r in rows} <= SPEAKERS - {"george", "jackson"}
    assert {int(r["take"]) for r in rows} <= {0, 1, 3}
    assert sorted({int(r["label"]) for r in rows}) == list(range(10))
    # a previous build is replaced; a foreign non-empty videos/ folder needs --overwrite
    assert avd.main(["--out", str(out), "--per-class", "1", "--size", "32x32", "--seconds", "0.3"]) == 0
    assert len(_rows(out)) == 10 and len(list((out / "videos").rglob("*.mp4"))) == 10
    foreign = tmp_path / "foreign"
    (foreign / "videos").mkdir(parents=True)
    (foreign / "videos" / "keep.txt").write_text("mine")
    assert avd.main(["--out", str(foreign), "--per-class", "1"]) == 2
    assert (foreign / "videos" / "keep.txt").exists()
    assert avd.main(["--out", str(tmp_path / "x"), "--speakers", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "unknown speaker" in err


def test_per_class_is_capped_by_recordings(avd, tmp_path):
    summary = _build(avd, tmp_path / "cap", per_class=99, speakers="theo", takes="0-1",
                     size=(32, 32), seconds=0.3)
    assert summary.n_videos == 20 and set(summary.per_class.values()) == {2}


def test_reuse_pairs_each_recording_with_other_images(avd):
    recs = [r for r in avd.find_recordings(avd.DEFAULT_FSDD) if r.speaker == "theo" and r.take < 2]
    sheet, cols = avd.load_digit_sheet(avd.DEFAULT_DIGITS)
    once = avd.plan(recs, sheet, cols, 99, 0, ".mp4")
    thrice = avd.plan(recs, sheet, cols, 99, 0, ".mp4", reuse=3)
    assert len(once) == 20 and len(thrice) == 60
    assert [j.recording for j in thrice[:2]] == [j.recording for j in once[:2]]  # a prefix of the order
    for d in range(10):
        jobs = [j for j in thrice if j.label == d]
        assert len({j.recording.path for j in jobs}) == 2  # each recording 3 times ...
        assert len({j.digit_image for j in jobs}) == 6 and len({j.rel_path for j in jobs}) == 6  # ... with other images


def test_sheet_layouts(avd, tmp_path):
    from PIL import Image

    small, cols = avd.load_digit_sheet(avd.DEFAULT_DIGITS)
    assert small.shape == (1000, 400) and cols == 20
    assert avd.class_images(small, cols, 3) == list(range(300, 400))
    full = np.tile(small, (1, 5))  # same layout as OpenCV's 2000x1000 sheet
    Image.fromarray(full).save(tmp_path / "full.png")
    sheet, cols = avd.load_digit_sheet(tmp_path / "full.png")
    assert cols == 100 and avd.class_images(sheet, cols, 9) == list(range(4500, 5000))
    np.testing.assert_array_equal(avd.digit_cell(sheet, cols, 4500 + 120),
                                  avd.digit_cell(small, 20, 900 + 20))
    Image.fromarray(full[:990]).save(tmp_path / "bad.png")
    with pytest.raises(avd.BuildError):
        avd.load_digit_sheet(tmp_path / "bad.png")


def test_parse_takes(avd):
    assert avd.parse_takes("0-4") == {0, 1, 2, 3, 4}
    assert avd.parse_takes("0-1, 7,9") == {0, 1, 7, 9}
    assert avd.parse_takes(None) is None
    with pytest.raises(avd.BuildError):
        avd.parse_takes("a-b")


def test_varied_style_draws_cover_the_ranges(avd):
    """--style varied: over many draws, every background kind, low resolution in about half, contrast
    kept, speech level and noise floor spread over their documented ranges."""
    styles = [avd.draw_style(np.random.default_rng([3, i])) for i in range(400)]
    assert {s.background for s in styles} == {"flat", "noise", "gradient", "texture"}
    assert 0.4 < np.mean([s.low_res > 0 for s in styles]) < 0.9
    for s in styles:
        assert 0.25 <= s.scale[0] <= s.scale[1] <= 0.70
        assert abs(avd._luma(np.asarray(s.bg_rgb)) - avd._luma(np.asarray(s.ink_rgb))) >= 70
        assert 10 ** -1.5 * 0.5 <= s.peak[0] < s.peak[1] <= 1.0
        assert 1e-4 <= s.floor <= 10 ** -1.75
    floors_db = 20 * np.log10([s.floor for s in styles])
    assert floors_db.min() < -75 and floors_db.max() > -40
    dark_ink = np.mean([avd._luma(np.asarray(s.ink_rgb)) < avd._luma(np.asarray(s.bg_rgb)) for s in styles])
    assert 0.2 < dark_ink < 0.8  # both polarities


def test_varied_style_frames_are_coloured_and_plain_is_unchanged(avd):
    digit = np.zeros((avd.CELL, avd.CELL), np.uint8)
    digit[4:16, 8:12] = 255  # a "1"
    style = avd.Style((0.5, 0.5), 8, "gradient", (200.0, 30.0, 30.0), (150.0, 60.0, 40.0), (20.0, 20.0, 220.0),
                      0.0, (0.1, 0.2), 1e-3)
    frames = np.concatenate(list(avd.render_frames(digit, 5, 48, 80, 10.0, np.random.default_rng(0), style=style)))
    assert frames.shape == (5, 80, 48, 3)
    blue = (frames[..., 2].astype(int) - frames[..., 0]) > 100  # the ink
    assert 0 < blue.mean() < 0.5  # the digit is drawn in the ink colour, and only where it is
    assert (frames[..., 0] > 120).mean() > 0.5  # the background is reddish
    plain = np.concatenate(list(avd.render_frames(digit, 5, 48, 80, 10.0, np.random.default_rng(0))))
    assert plain.shape == (5, 80, 48)  # grey, as before


def test_varied_build_decodes(avd, tmp_path):
    out = tmp_path / "varied"
    _build(avd, out, per_class=1, style="varied", size=(48, 80))
    rows = _rows(out)
    assert len(rows) == 10
    raw = subprocess.run([find_ffmpeg(), "-v", "error", "-i", str(out / "videos" / rows[0]["path"]),
                          "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                         capture_output=True, check=True).stdout
    frame = np.frombuffer(raw, np.uint8).reshape(80, 48, 3).astype(int)
    assert np.abs(frame[..., 0] - frame[..., 1]).mean() + np.abs(frame[..., 1] - frame[..., 2]).mean() > 3
    import json
    assert json.loads((out / "build.json").read_text())["style"] == "varied"
    with pytest.raises(avd.BuildError, match="style"):
        _build(avd, tmp_path / "bad", style="fancy")


def test_lowres_style_blurs_the_handwriting_and_keeps_the_plain_look(avd):
    """--style lowres: the plain grey look, the digit shrunk to a few pixels and blown up again, so its
    strokes lose their detail; the same random draws as plain otherwise."""
    digit = np.zeros((avd.CELL, avd.CELL), np.uint8)
    digit[3:17, 9:11] = 255  # a thin "1", 2 pixels wide
    sharp = np.concatenate(list(avd.render_frames(digit, 3, 64, 64, 10.0, np.random.default_rng(0))))
    low = np.concatenate(list(avd.render_frames(digit, 3, 64, 64, 10.0, np.random.default_rng(0), low_res=7)))
    assert low.shape == sharp.shape == (3, 64, 64)  # grey, as plain
    assert np.array_equal(avd._blow_up(digit, 7).shape, digit.shape)
    blown = avd._blow_up(digit, 7).astype(int)
    assert blown.max() < 240 and (blown > 40).sum() > 1.5 * (digit > 40).sum()  # fainter and wider strokes
    assert not np.array_equal(low, sharp)
    # the background (the same draws) is untouched far from the digit
    assert np.array_equal(low[:, :4, :4], sharp[:, :4, :4])


def test_lowres_build_records_its_style_and_sound(avd, tmp_path):
    import json

    out = tmp_path / "lowres"
    _build(avd, out, per_class=1, style="lowres", size=(48, 48))
    assert len(_rows(out)) == 10
    meta = json.loads((out / "build.json").read_text())
    assert (meta["style"], meta["sound"]) == ("lowres", "plain")
    # --sound varied: the same pictures, the varied levels and noise floors
    noisy = tmp_path / "noisy"
    _build(avd, noisy, per_class=1, style="lowres", sound="varied", size=(48, 48))
    assert json.loads((noisy / "build.json").read_text())["sound"] == "varied"
    with pytest.raises(avd.BuildError, match="sound"):
        _build(avd, tmp_path / "bad", style="lowres", sound="loud")
