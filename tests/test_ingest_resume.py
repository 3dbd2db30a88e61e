"""Resumable and idempotent: kill -9 and resume, reruns, appends, config changes, --part shares."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PYTHON, make_set, make_video, run_cli

from videolabel.config import IngestConfig
from videolabel.data.dataset import ShardDataset
from videolabel.errors import ConfigMismatchError
from videolabel.ingest import run_ingest
from videolabel.ingest.shards import SHARDS, committed_shards, garbage

VOLATILE = ["shard", "shard_offset", "decode_s"]  # where and how fast, not what


def manifest_of(cache: Path) -> pd.DataFrame:
    m = pd.read_parquet(cache / "manifest.parquet").drop(columns=VOLATILE)
    return m.sort_values("video_id").reset_index(drop=True)


def assert_same_content(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(manifest_of(a), manifest_of(b))
    da, db = ShardDataset(a), ShardDataset(b)
    assert len(da) == len(db)
    pd.testing.assert_frame_equal(da.videos, db.videos)
    for vid in da.videos["video_id"]:
        xa, xb = da.video_clips(vid), db.video_clips(vid)
        assert np.array_equal(xa["video"].numpy(), xb["video"].numpy()), vid
        assert np.array_equal(xa["audio"].numpy(), xb["audio"].numpy()), vid


def committed_videos(cache: Path) -> int:
    return sum(len(pd.read_parquet(cache / SHARDS / f"{n}.videos.parquet")) for n in committed_shards(cache))


@pytest.fixture(scope="module")
def src_and_reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    src = base / "src"
    make_set(src, 20, seconds=1.5)
    ref = base / "ref"
    s = run_ingest(src, ref, IngestConfig(), workers=2, shard_size=2, progress="none")
    assert s.ingested == 20 and s.failed == 0
    return src, ref


def start_cli(src: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "videolabel", "ingest", str(src), "--out", str(out), "--shard-size", "2", "--workers", "2", "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def kill_after_shards(proc: subprocess.Popen[str], cache: Path, n_shards: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        if len(committed_shards(cache)) >= n_shards:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.communicate()


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, src_and_reference) -> None:
    src, ref = src_and_reference
    out = tmp_path / "cache"
    kill_after_shards(start_cli(src, out), out, 1)
    first = committed_videos(out)
    assert 0 < first < 20, f"the kill should land mid-run ({first} videos committed)"
    kill_after_shards(start_cli(src, out), out, len(committed_shards(out)) + 1)  # killed again
    second = committed_videos(out)
    assert first <= second < 20
    r = run_cli("ingest", str(src), "--out", str(out), "--shard-size", "2", "--workers", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["skipped_existing"] == second and doc["ingested"] == 20 - second  # nothing decoded twice
    assert committed_videos(out) == 20  # no duplicates
    assert garbage(out) == {}  # leftovers of the killed runs are gone
    assert_same_content(out, ref)


def test_rerun_does_nothing_then_appends(tmp_path, src_and_reference) -> None:
    src, ref = src_and_reference
    out = tmp_path / "cache"
    run_ingest(src, out, IngestConfig(), workers=2, shard_size=8, progress="none")
    before = sorted(p.name for p in (out / SHARDS).iterdir())
    mtime = (out / "manifest.parquet").stat().st_mtime_ns
    r = run_cli("ingest", str(src), "--out", str(out))
    assert r.returncode == 0 and "nothing to do" in r.stdout
    assert sorted(p.name for p in (out / SHARDS).iterdir()) == before
    assert (out / "manifest.parquet").stat().st_mtime_ns == mtime
    # a new file in SRC is appended on a rerun
    src2 = tmp_path / "src2"
    import shutil

    shutil.copytree(src, src2, symlinks=True)
    make_video(src2 / "new" / "added.mp4", seconds=1.5, video="redblue")
    s = run_ingest(src2, out, IngestConfig(), workers=1, progress="none")
    assert (s.ingested, s.skipped_existing, s.found) == (1, 20, 21)
    ds = ShardDataset(out)
    assert len(ds.videos) == 21 and "new/added.mp4" in set(ds.videos["path"])


def test_other_config_refused_unless_overwrite(tmp_path) -> None:
    src = tmp_path / "src"
    make_set(src, 2, seconds=1.2)
    out = tmp_path / "cache"
    run_ingest(src, out, IngestConfig(), workers=1, progress="none")
    r = run_cli("ingest", str(src), "--out", str(out), "--fps", "25")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "different ingest config" in lines[0] and "fps 30.0 -> 25.0" in lines[0]
    with pytest.raises(ConfigMismatchError):
        run_ingest(src, out, IngestConfig(frames=16), workers=1, progress="none")
    r = run_cli("ingest", str(src), "--out", str(out), "--fps", "25", "--frames", "16", "--overwrite", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ingested"] == 2
    ds = ShardDataset(out)
    assert ds.config.fps == 25.0 and ds[0]["video"].shape[0] == 16 and len(ds.videos) == 2


def test_two_parts_union_equals_one_part(tmp_path, src_and_reference) -> None:
    src, ref = src_and_reference
    out = tmp_path / "cache"
    procs = [start_cli(src, out, "--part", f"{i}/2", "--workers", "1") for i in range(2)]  # concurrently
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    parts = [pd.read_parquet(out / f"manifest-part-{i}-of-2.parquet") for i in range(2)]
    ids = [set(p["video_id"]) for p in parts]
    assert ids[0].isdisjoint(ids[1]) and len(ids[0] | ids[1]) == 20 and ids[0] and ids[1]
    names = [n for n in committed_shards(out)]
    assert any(n.startswith("p0of2-") for n in names) and any(n.startswith("p1of2-") for n in names)
    assert_same_content(out, ref)


LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_leftovers_are_cleaned_unless_their_part_is_running(tmp_path) -> None:
    from videolabel.errors import VideolabelError

    src = tmp_path / "src"
    make_set(src, 2, seconds=1.2)
    out = tmp_path / "cache"
    run_ingest(src, out, IngestConfig(), workers=1, progress="none")
    dead = [out / "shards" / "p0of1-dead-00000.video.npy", out / "shards" / ".p0of1-dead-00001.audio.npy.ab12cd.tmp",
            out / "failures" / ".p0of1-dead-00002.parquet.ab12cd.tmp"]
    live = out / "shards" / "p1of2-live-00000.video.npy"
    for f in dead + [live]:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"partial")
    lock = out / "locks" / "part-1-of-2.lock"
    holder = subprocess.Popen([PYTHON, "-c", LOCKER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        s = run_ingest(src, out, IngestConfig(), workers=1, progress="none")
        assert s.nothing_to_do
        assert not any(f.exists() for f in dead)  # a killed run's leftovers
        assert live.exists()  # part 1/2 is running: its files are not garbage
        with pytest.raises(VideolabelError, match="another ingest of part 1/2"):
            run_ingest(src, out, IngestConfig(), workers=1, part="1/2", progress="none")
    finally:
        holder.kill()
        holder.wait()
    run_ingest(src, out, IngestConfig(), workers=1, progress="none")
    assert not live.exists()


def test_fresh_cache_reads_its_records_without_pandas(tmp_path) -> None:
    """pyarrow imports pandas with the first table a process builds (0.4 s): a fresh cache must not pay
    that before its first video is decoded (the driver warms it in a thread meanwhile)."""
    code = ("import sys; from pathlib import Path; from videolabel.ingest.manifest import read_records; "
            f"t = read_records(Path({str(tmp_path)!r})); "
            "assert t.num_rows == 0 and t.column_names[:2] == ['video_id', 'path'], t.schema; "
            "print('pandas' in sys.modules)")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
