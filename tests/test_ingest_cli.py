"""The ``ingest`` command: one-line errors with exit code 2, summaries, --json, --ffmpeg."""

from __future__ import annotations

import json

import pytest
from conftest import FFMPEG, make_video, run_cli


def assert_one_line_error(r, code: int = 2, contains: str = "") -> None:
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("videolabel: error:") and contains in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_missing_src(tmp_path) -> None:
    r = run_cli("ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "c"))
    assert_one_line_error(r, 2, "source not found")
    assert not (tmp_path / "c").exists()  # nothing created for a bad SRC


def test_out_under_a_regular_file(tmp_path) -> None:
    (tmp_path / "src").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("ingest", str(tmp_path / "src"), "--out", str(blocker / "cache"))
    assert_one_line_error(r, 2, "cannot create cache directory")
    r = run_cli("ingest", str(tmp_path / "src"), "--out", str(blocker))
    assert_one_line_error(r, 2, "cache")


@pytest.mark.parametrize(
    "args,contains",
    [
        (["--part", "3/2"], "--part"),
        (["--size", "big"], "--size"),
        (["--short", "maybe"], "short must be"),
        (["--fit", "stretch"], "fit must be"),
        (["--ffmpeg", "/no/such/ffmpeg"], "--ffmpeg"),
        (["--n-fft", "512"], "mel filters are empty"),
    ],
)
def test_bad_flags(tmp_path, args, contains) -> None:
    (tmp_path / "src").mkdir()
    r = run_cli("ingest", str(tmp_path / "src"), "--out", str(tmp_path / "c"), *args)
    assert_one_line_error(r, 2, contains)


def test_bad_ffmpeg_env(tmp_path) -> None:
    (tmp_path / "src").mkdir()
    r = run_cli("ingest", str(tmp_path / "src"), "--out", str(tmp_path / "c"), env={"VIDEOLABEL_FFMPEG": str(tmp_path)})
    assert_one_line_error(r, 2, "VIDEOLABEL_FFMPEG")


def test_summary_log_lines_and_json(tmp_path) -> None:
    src = tmp_path / "src"
    make_video(src / "a.mp4", seconds=1.2)
    make_video(src / "b.mkv", seconds=1.2, audio=None)
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "cache"
    r = run_cli("ingest", str(src), "--out", str(out), "--ffmpeg", FFMPEG, "--workers", "2", "--glob", "*.mp4")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("ingested 1 videos (3 clips)")
    wrote = lines.index("wrote:")
    paths = [ln.strip() for ln in lines[wrote + 1 :]]
    assert str(out / "config.json") in paths and str(out / "manifest.parquet") == paths[-1]
    assert "videolabel ingest:" in r.stderr  # plain log lines when stderr is not a terminal
    r = run_cli("ingest", str(src), "--out", str(out), "--json", "--quiet")
    assert r.returncode == 0 and r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["found"] == 2 and doc["ingested"] == 1 and doc["skipped_existing"] == 1 and doc["part"] == "0/1"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format_version"] == 1 and cfg["config"]["height"] == 128 and cfg["ffmpeg_version"].startswith("ffmpeg version")


def test_fit_travels_with_the_cache(tmp_path) -> None:
    src = tmp_path / "src"
    make_video(src / "a.mp4", seconds=1.2, size=(96, 160))  # portrait
    out = tmp_path / "cache"
    r = run_cli("ingest", str(src), "--out", str(out), "--ffmpeg", FFMPEG, "--size", "64x96", "--fit", "contain", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["config"]["fit"] == "contain"
    # the same cache with the default fit is another config: refused, with what differs
    r = run_cli("ingest", str(src), "--out", str(out), "--ffmpeg", FFMPEG, "--size", "64x96")
    assert_one_line_error(r, 2, "fit 'contain' -> 'cover'")
