"""The one lock helper (fsutil.try_lock / release / FolderLock), used by the run folder and the ingest
parts, and the manifest rebuilt from the committed records (ingest.manifest.rebuild_manifest)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from videolabel.errors import VideolabelError
from videolabel.fsutil import FolderLock, lock_holder, release, try_lock

HOLD = """
import sys, time
from videolabel.fsutil import try_lock
fd = try_lock(sys.argv[1], "pid held-by-child\\n")
print("locked" if fd is not None else "refused", flush=True)
time.sleep(60)
"""


def _child(path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "locked"
    return p


def test_lock_excludes_this_process_and_others_and_is_dropped_on_release(tmp_path) -> None:
    path = tmp_path / "a.lock"
    fd = try_lock(path, "me\n")
    assert fd is not None
    assert try_lock(path) is None  # the same process: refused too (POSIX locks alone would say yes)
    assert lock_holder(path) == "me\n"  # read from memory: reopening the file would drop the lock
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    probe = "import sys; from videolabel.fsutil import try_lock; print(try_lock(sys.argv[1]) is None)"
    other = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, env=env)
    assert other.stdout.strip() == "True", other.stderr  # still held after the checks above
    release(fd)
    release(None)
    fd = try_lock(path)
    assert fd is not None
    release(fd)


def test_lock_held_by_another_process_names_it_and_dies_with_it(tmp_path) -> None:
    p = _child(tmp_path / ".lock")
    try:
        assert try_lock(tmp_path / ".lock") is None
        with pytest.raises(VideolabelError, match="run folder .* is in use by pid held-by-child"):
            FolderLock(tmp_path, "run folder").acquire()
    finally:
        p.kill()
        p.wait()
    lock = FolderLock(tmp_path, "run folder").acquire()  # the kernel dropped the killed holder's lock
    assert lock_holder(tmp_path / ".lock").startswith(f"pid {os.getpid()} on ")
    lock.release()
    lock.release()  # twice is fine


def test_mkdir_only_when_asked(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        try_lock(tmp_path / "locks" / "x.lock")
    fd = try_lock(tmp_path / "locks" / "x.lock", mkdir=True)
    assert fd is not None
    release(fd)


def test_rebuild_manifest_from_records(avdigits_cache, tmp_path) -> None:
    """A lost or stale manifest.parquet is rebuilt from the shards' and failures' records, equal to the
    one the ingest wrote; a folder that is not a cache is a one-line error."""
    from videolabel.ingest.manifest import rebuild_manifest

    cache = tmp_path / "cache"
    shutil.copytree(avdigits_cache[0], cache)
    before = pd.read_parquet(cache / "manifest.parquet")
    (cache / "manifest.parquet").unlink()
    path = rebuild_manifest(cache)
    assert path == cache / "manifest.parquet"
    after = pd.read_parquet(path)
    assert len(after) == 80
    pd.testing.assert_frame_equal(after, before)
    with pytest.raises(VideolabelError):
        rebuild_manifest(tmp_path / "not-a-cache")
