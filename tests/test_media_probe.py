"""Probing with the ffmpeg binary alone: canned outputs (old and new ffmpeg) and generated files."""

from __future__ import annotations

import pytest
from conftest import FFMPEG, make_video, remux

from videolabel.ingest.discover import Source
from videolabel.ingest.probeahead import ProbeAhead
from videolabel.media.probe import (
    MediaError,
    measure_duration,
    parse_probe_output,
    probe,
    probe_many,
    probe_many_command,
    split_probe_output,
)

OLD_FFMPEG = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mp4':
  Metadata:
    major_brand     : qt
    creation_time   : 2019-06-01T10:00:00.000000Z
  Duration: 00:01:02.53, start: 0.000000, bitrate: 17013 kb/s
    Stream #0:0(eng): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709), 1920x1080, 16837 kb/s, SAR 1:1 DAR 16:9, 29.97 fps, 29.97 tbr, 600 tbn, 1200 tbc (default)
    Metadata:
      rotate          : 90
      creation_time   : 2019-06-01T10:00:00.000000Z
      handler_name    : Core Media Video
    Side data:
      displaymatrix: rotation of -90.00 degrees
    Stream #0:1(eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 172 kb/s (default)
    Stream #0:2(eng): Data: none (mebx / 0x7862656D), 0 kb/s (default)
At least one output file must be specified
"""

COVER_ART = """\
Input #0, mp3, from 'song.mp3':
  Duration: 00:03:00.05, start: 0.025057, bitrate: 320 kb/s
  Stream #0:0: Audio: mp3 (mp3float), 44100 Hz, stereo, fltp, 320 kb/s
  Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 500x500 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)
"""

ANAMORPHIC_NA = """\
Input #0, mpegts, from 'dv.ts':
  Duration: N/A, start: 1.400000, bitrate: N/A
  Program 1
  Stream #0:0[0x100]: Video: mpeg2video (Main) ([2][0][0][0] / 0x0002), yuv420p(tv, top first), 720x576 [SAR 64:45 DAR 16:9], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101](fre): Audio: mp2 ([3][0][0][0] / 0x0003), 48000 Hz, stereo, fltp, 192 kb/s
"""


def test_parse_old_ffmpeg_rotation_and_streams() -> None:
    info = parse_probe_output(OLD_FFMPEG)
    assert info.duration == pytest.approx(62.53)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert (info.coded_width, info.coded_height) == (1920, 1080)
    assert info.rotation == -90.0
    assert (info.width, info.height) == (1080, 1920)  # post-rotation
    assert info.fps == pytest.approx(29.97)
    assert info.audio_codec == "aac" and info.sample_rate == 48000 and info.channels == "stereo"
    assert info.video_index == 0 and info.audio_index == 1


def test_parse_cover_art_is_not_video() -> None:
    info = parse_probe_output(COVER_ART)
    assert not info.has_video and info.has_audio
    assert info.audio_codec == "mp3" and info.duration == pytest.approx(180.05)


def test_parse_duration_na_and_sar() -> None:
    info = parse_probe_output(ANAMORPHIC_NA)
    assert info.duration is None and info.start == pytest.approx(1.4)
    assert info.video_codec == "mpeg2video" and (info.width, info.height) == (720, 576)
    assert info.sar == pytest.approx(64 / 45) and info.fps == 25.0
    assert info.audio_codec == "mp2"


def test_parse_garbage_gives_empty_info() -> None:
    info = parse_probe_output("something: Invalid data found when processing input\n")
    assert not info.has_video and not info.has_audio and info.duration is None


@pytest.mark.parametrize(
    "name,kw,expect",
    [
        ("h264.mp4", dict(), dict(video_codec="h264", pix_fmt="yuv420p", audio_codec="aac", sample_rate=44100)),
        ("vp9.webm", dict(vcodec="libvpx-vp9", acodec="libopus", sample_rate=48000, out_args=["-deadline", "realtime", "-cpu-used", "8"]),
         dict(video_codec="vp9", audio_codec="opus", sample_rate=48000)),
        ("mjpeg.avi", dict(vcodec="mjpeg", pix_fmt="yuvj422p", acodec="pcm_s16le"), dict(video_codec="mjpeg", pix_fmt="yuvj422p", audio_codec="pcm_s16le")),
        ("mpeg4.mkv", dict(vcodec="mpeg4", acodec="libmp3lame"), dict(video_codec="mpeg4", audio_codec="mp3")),
        ("gray.mkv", dict(vcodec="ffv1", pix_fmt="gray", audio=None), dict(video_codec="ffv1", pix_fmt="gray", audio_codec=None)),
        ("yuv444.mp4", dict(pix_fmt="yuv444p", fps=25), dict(pix_fmt="yuv444p", fps=25.0)),
    ],
)
def test_probe_generated(tmp_path, name, kw, expect) -> None:
    path = make_video(tmp_path / name, seconds=1.0, size=(160, 120), **kw)
    info = probe(path, FFMPEG)
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert (info.width, info.height) == (160, 120)
    for key, value in expect.items():
        assert getattr(info, key) == value, key
    assert info.has_audio == (expect.get("audio_codec", "x") is not None)


def test_probe_rotation_reports_post_rotation_size(tmp_path) -> None:
    src = make_video(tmp_path / "a.mp4", seconds=1.0, size=(160, 96))
    rot = remux(src, tmp_path / "rot.mp4", "-display_rotation", "90")
    info = probe(rot, FFMPEG)
    assert abs(info.rotation) == 90.0
    assert (info.coded_width, info.coded_height) == (160, 96)
    assert (info.width, info.height) == (96, 160)


def test_duration_na_falls_back_to_decoding(tmp_path) -> None:
    # Matroska written to a pipe has no duration in its header
    piped = make_video(tmp_path / "piped.mkv", seconds=1.6, audio=None, fmt="matroska", pipe=True)
    info = probe(piped, FFMPEG)
    assert info.duration is None
    assert measure_duration(piped, FFMPEG, info) == pytest.approx(1.6, abs=0.05)


@pytest.mark.parametrize("kind", ["empty", "text", "missing", "directory"])
def test_probe_errors_are_one_line(tmp_path, kind) -> None:
    p = tmp_path / "x.mp4"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("not a video\n" * 10)
    elif kind == "directory":
        p.mkdir()
    with pytest.raises(MediaError) as err:
        probe(p, FFMPEG)
    msg = str(err.value)
    assert msg and "\n" not in msg
    expected = {"empty": "empty", "text": "Invalid data", "missing": "not found", "directory": "directory"}[kind]
    assert expected in msg


# --- several files per ffmpeg process (videolabel.ingest.probeahead) -----------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Files of several kinds (rotation, no audio, no duration) with unreadable ones among them."""
    root = tmp_path_factory.mktemp("mixed")
    files = [
        make_video(root / "a.mp4", seconds=1.0, size=(160, 96)),
        remux(make_video(root / "src.mp4", seconds=1.0, size=(160, 96)), root / "rot.mp4", "-display_rotation", "90"),
        make_video(root / "b.mkv", seconds=1.0, vcodec="mpeg4", acodec="libmp3lame"),
        make_video(root / "silent.webm", seconds=1.0, audio=None, vcodec="libvpx-vp9",
                   out_args=["-deadline", "realtime", "-cpu-used", "8"]),
    ]
    text = root / "text.mp4"
    text.write_text("not a video\n" * 10)
    after = [make_video(root / "c.avi", seconds=1.0, vcodec="mjpeg", pix_fmt="yuvj422p", acodec="pcm_s16le"),
             make_video(root / "piped.mkv", seconds=1.0, audio=None, fmt="matroska", pipe=True)]
    return [*files, text, root / "missing.mp4", *after]


def test_probe_many_equals_probe_file_by_file(mixed) -> None:
    infos = probe_many([str(p) for p in mixed], FFMPEG)
    assert [i is not None for i in infos] == [True] * 4 + [False] * 4  # ffmpeg stops at the text file
    for p, info in zip(mixed[:4], infos):
        assert info == probe(p, FFMPEG), p.name
    assert infos[1].rotation != 0 and not infos[3].has_audio
    tail = probe_many([str(p) for p in mixed[6:]], FFMPEG)
    assert tail == [probe(p, FFMPEG) for p in mixed[6:]] and tail[1].duration is None


def test_split_probe_output_refuses_text_out_of_order() -> None:
    one = OLD_FFMPEG.split("At least one")[0]
    two = one + one.replace("Input #0", "Input #1").replace("Stream #0:", "Stream #1:")
    texts = split_probe_output(two, 2)
    assert [parse_probe_output(t) for t in texts] == [parse_probe_output(one)] * 2  # type: ignore[arg-type]
    assert split_probe_output(two.replace("Input #0", "Input #2"), 3) == [None] * 3
    assert split_probe_output(one + one, 2) == [None, None]  # input 0 twice
    assert split_probe_output("garbage\n", 2) == [None, None]


def _sources(paths):
    return [Source(rel=p.name, path=str(p), video_id=p.name) for p in paths]


def test_probe_ahead_hands_out_what_probe_says(mixed) -> None:
    sources = _sources(mixed)
    ahead = ProbeAhead(FFMPEG, sources, batch=3, ahead=4)
    got = [ahead.take(s) for s in sources]
    ahead.close()
    unreadable = {"text.mp4", "missing.mp4"}
    for p, info in zip(mixed, got):
        if p.name in unreadable:
            assert info is None, p.name  # its worker probes it and gives the reason
        else:  # the files after an unreadable one are batched again
            assert info == probe(p, FFMPEG), p.name


def test_probe_ahead_first_batch_is_its_own_size(mixed, monkeypatch) -> None:
    readable = [p for p in mixed if p.name not in {"text.mp4", "missing.mp4"}][:5]
    sizes: list[int] = []
    real = probe_many_command

    def spy(ffmpeg, paths):
        sizes.append(len(paths))
        return real(ffmpeg, paths)

    monkeypatch.setattr("videolabel.ingest.probeahead.probe_many_command", spy)
    sources = _sources(readable)
    ahead = ProbeAhead(FFMPEG, sources, batch=3, ahead=8, first=1)
    got = [ahead.take(s) for s in sources]
    ahead.close()
    assert sizes == [1, 3, 1]  # the first decode waits for one probe, the rest come three at a time
    assert got == [probe(p, FFMPEG) for p in readable]


def test_probe_ahead_past_its_time_hands_out_nothing(mixed) -> None:
    sources = _sources(mixed[:3])
    ahead = ProbeAhead(FFMPEG, sources, batch=3, timeout=0.0)
    assert [ahead.take(s) for s in sources] == [None, None, None]
    assert ahead._job is None
    ahead.close()
