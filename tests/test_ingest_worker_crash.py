"""A decode worker that dies (killed for memory, a crash in a codec) costs its video, not the run."""

from __future__ import annotations

import os
import sys

import pandas as pd
import pytest

import videolabel.ingest.driver as driver
from videolabel.config import IngestConfig
from videolabel.ingest import run_ingest
from videolabel.ingest.worker import process_video


def die_on_v001(source, settings, info=None):
    """Stands in for process_video in the forked workers: the process dies on one video."""
    if source.rel.endswith("v001.mp4"):
        os._exit(9)
    return process_video(source, settings, info)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs the fork start method")
def test_a_worker_that_keeps_dying_fails_only_its_video(video_set, tmp_path, monkeypatch):
    src = video_set(4)
    monkeypatch.setenv("VIDEOLABEL_MP_START", "fork")
    monkeypatch.setattr(driver, "process_video", die_on_v001)  # inherited by the forked workers
    cfg = IngestConfig(frames=4, fps=4.0, height=32, width=32, clips_per_video=1)
    summary = run_ingest(src, tmp_path / "cache", cfg, workers=2, progress="none")
    manifest = pd.read_parquet(tmp_path / "cache" / "manifest.parquet").set_index("path")
    assert len(manifest) == 4
    bad = manifest.loc[[p for p in manifest.index if p.endswith("v001.mp4")][0]]
    assert bad["status"] == "failed" and "worker died" in bad["error"]
    assert (manifest.drop(index=bad.name)["status"] == "ok").all()
    assert summary.failed == 1


def test_decoding_in_the_driver_runs_one_blas_thread(video_set, tmp_path, monkeypatch):
    """With one worker the driver decodes itself: its BLAS must not keep one busy-waiting thread per core
    (as the pool's workers do not), and gets its threads back afterwards."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    seen: list[list[int]] = []

    def spy(source, settings, info=None):
        seen.append(blas_threads())
        return process_video(source, settings, info)

    before = blas_threads()
    monkeypatch.setattr(driver, "process_video", spy)
    cfg = IngestConfig(frames=4, fps=4.0, height=32, width=32, clips_per_video=1)
    summary = run_ingest(video_set(2), tmp_path / "cache", cfg, workers=1, progress="none")
    assert summary.ingested == 2 and len(seen) == 2
    assert all(n == 1 for threads in seen for n in threads) and seen[0]
    assert blas_threads() == before
