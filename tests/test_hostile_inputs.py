"""Damaged caches, damaged checkpoints and bad values: one line on stderr and exit code 2, never a
traceback, never a silently smaller data set (issue 18).

The CLI runs in this process (``videolabel.cli.main`` with ``sys.argv`` set), so that the many cases
stay fast; an unexpected exception escapes it and fails the test, as a traceback would show.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import make_set
from videolabel.cli import main

TINY = ["--preset", "tiny", "--clusters", "2", "--heads", "1", "--epochs", "1", "--workers", "0",
        "--set", "precise_bn_clips=0", "--set", "label_bn=eval", "--set", "n_solves=1", "--no-align",
        "--progress", "none", "--device", "cpu"]
INGEST = ["--frames", "4", "--fps", "4", "--size", "32x32", "--clips-per-video", "1", "--shard-size", "3",
          "--workers", "1", "-q"]


def vl(capsys, *args: str) -> tuple[int, str, str]:
    """``videolabel ARGS`` in this process: (exit code, stdout, stderr)."""
    argv = sys.argv
    sys.argv = ["videolabel", *map(str, args)]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out, err


def refused(capsys, *args: str, needle: str = "", code: int = 2) -> str:
    """Run and assert a one-line error (containing ``needle``) with exit code ``code``; returns it."""
    rc, _, err = vl(capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("videolabel: error: "), err
    assert "Traceback" not in err and needle in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, single_thread):
    """(src, cache, run): 6 small videos in two shards and a one-step tiny run on them."""
    from videolabel.config import IngestConfig
    from videolabel.ingest import run_ingest
    from videolabel.train.config import make_config
    from videolabel.train.loop import train

    root = tmp_path_factory.mktemp("hostile")
    make_set(root / "src", 6, seconds=1.0)
    run_ingest(root / "src", root / "cache", IngestConfig(frames=4, fps=4.0, height=32, width=32, clips_per_video=1),
               workers=1, progress="none", shard_size=3)
    cfg = make_config(None, dict(preset="tiny", num_clusters=2, num_heads=1, epochs=1, workers=0, precise_bn_clips=0,
                                 label_bn="eval", n_solves=1, align=False, progress="none"))
    train(root / "cache", root / "run", cfg, device="cpu", progress=None)
    return root / "src", root / "cache", root / "run"


def copy_cache(cache: Path, dst: Path) -> Path:
    shutil.copytree(cache, dst)
    return dst


def shard_files(cache: Path, suffix: str) -> list[Path]:
    return sorted((cache / "shards").glob(f"*{suffix}"))


# --- damaged caches -------------------------------------------------------------------------------


def test_garbage_cache_config_is_one_line_everywhere(tiny, tmp_path, capsys) -> None:
    src, cache, run = tiny
    bad = copy_cache(cache, tmp_path / "c")
    (bad / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    refused(capsys, "train", bad, "--out", tmp_path / "r", *TINY, needle="config.json")
    refused(capsys, "assign", run, "--cache", bad, "--out", tmp_path / "a.parquet", "--workers", "0", needle="config.json")
    refused(capsys, "ingest", src, "--out", bad, *INGEST, needle="config.json")
    # valid JSON, wrong types: refused as well (not a crash later in arithmetic)
    (bad / "config.json").write_text('{"format_version": 1, "config": {"frames": "four"}}')
    refused(capsys, "train", bad, "--out", tmp_path / "r", *TINY, needle="frames")


def test_truncated_shard_is_refused_and_ingest_notices(tiny, tmp_path, capsys) -> None:
    src, cache, run = tiny
    bad = copy_cache(cache, tmp_path / "c")
    npy = shard_files(bad, ".video.npy")[0]
    os.truncate(npy, npy.stat().st_size // 2)
    refused(capsys, "train", bad, "--out", tmp_path / "r", *TINY, needle="truncated")
    refused(capsys, "assign", run, "--cache", bad, "--out", tmp_path / "a.parquet", "--workers", "0", needle="truncated")
    good = tmp_path / "a.parquet"
    assert vl(capsys, "assign", run, "--cache", cache, "--out", good, "--workers", "0")[0] == 0
    refused(capsys, "report", good, "--cache", bad, "--out", tmp_path / "rep", needle="truncated")
    # ingest must not say "nothing to do" over a damaged cache; following its advice repairs it
    line = refused(capsys, "ingest", src, "--out", bad, *INGEST, needle="truncated")
    assert "nothing to do" not in line
    for f in (bad / "shards").glob(npy.name.split(".")[0] + ".*"):
        f.unlink()
    rc, out, _ = vl(capsys, "ingest", src, "--out", bad, *INGEST)
    assert rc == 0 and "ingested 3 videos" in out
    from videolabel.data.dataset import ShardDataset

    assert len(ShardDataset(bad).videos) == 6


def test_damaged_records_are_refused_not_dropped(tiny, tmp_path, capsys) -> None:
    """Item 4: a corrupt ``.videos.parquet`` used to make train/assign use 3 of 6 videos, exit 0."""
    src, cache, run = tiny
    bad = copy_cache(cache, tmp_path / "c")
    shard_files(bad, ".videos.parquet")[0].write_bytes(b"not parquet at all")
    refused(capsys, "train", bad, "--out", tmp_path / "r", *TINY, needle="videos.parquet")
    refused(capsys, "assign", run, "--cache", bad, "--out", tmp_path / "a.parquet", "--workers", "0",
            needle="videos.parquet")
    refused(capsys, "ingest", src, "--out", bad, *INGEST, needle="videos.parquet")
    # a damaged failures table too
    bad2 = copy_cache(cache, tmp_path / "c2")
    (bad2 / "failures").mkdir(exist_ok=True)
    (bad2 / "failures" / "p0of1-abc-00009.parquet").write_bytes(b"PAR1 broken")
    refused(capsys, "train", bad2, "--out", tmp_path / "r2", *TINY, needle="failures")
    # a missing clips table
    bad3 = copy_cache(cache, tmp_path / "c3")
    shard_files(bad3, ".clips.parquet")[1].unlink()
    refused(capsys, "train", bad3, "--out", tmp_path / "r3", *TINY, needle="clips.parquet is missing")


def test_corrupt_manifest_is_a_view_that_ingest_rebuilds(tiny, tmp_path, capsys) -> None:
    """manifest.parquet is rebuilt from the shard records (README): train reads the records, so a corrupt
    manifest costs no video, and the next ingest rewrites it."""
    src, cache, _ = tiny
    bad = copy_cache(cache, tmp_path / "c")
    (bad / "manifest.parquet").write_bytes(b"junk")
    from videolabel.data.dataset import ShardDataset

    assert len(ShardDataset(bad).videos) == 6
    rc, out, _ = vl(capsys, "ingest", src, "--out", bad, *INGEST)
    assert rc == 0 and "manifest.parquet" in out
    assert len(pd.read_parquet(bad / "manifest.parquet")) == 6


# --- damaged checkpoints --------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _with_checkpoint(run: Path, dst: Path, state, name: str = "model-final.pt") -> Path:
    shutil.copytree(run, dst)
    for f in dst.glob("*.pt"):
        f.unlink()
    if isinstance(state, bytes):
        (dst / name).write_bytes(state)
    else:
        torch.save(state, dst / name)
    return dst


def _cases(state: dict) -> dict:
    return {
        "empty": ({}, "no 'model'"),
        "no-model": ({k: v for k, v in state.items() if k != "model"}, "no 'model'"),
        "shapes": (dict(state, model={k: v[:1] if v.ndim else v for k, v in state["model"].items()}), "shape"),
        "string-number": (dict(state, train_config=dict(state["train_config"], num_clusters="two")), "num_clusters"),
        "not-a-dict": ([1, 2, 3], "list"),
        "config-not-a-dict": (dict(state, train_config="paper"), "train_config"),
        "not-a-checkpoint": (b"garbage\x00", "not a checkpoint"),
    }


def test_checkpoints_with_the_wrong_structure_are_refused(tiny, tmp_path, capsys) -> None:
    _, cache, run = tiny
    state = torch.load(run / "model-final.pt", weights_only=True)
    for name, (bad, needle) in _cases(state).items():
        d = _with_checkpoint(run, tmp_path / name, bad)
        refused(capsys, "assign", d, "--cache", cache, "--out", tmp_path / f"{name}.parquet", "--workers", "0",
                needle=needle)
    # resume reads more of it: the optimiser, the labels, the generator state
    last = dict(state)
    for name, (bad, needle) in {
        "labels": (dict(last, labels=last["labels"][:, :2]), "labels"),
        "optimizer": (dict(last, optimizer={"state": {}, "param_groups": []}), "parameter groups"),
        "rng": (dict(last, rng_cpu=torch.zeros(3)), "RNG"),
        "step": (dict(last, step="x"), "step"),
        **{k: v for k, v in _cases(last).items() if k in ("empty", "shapes")},
    }.items():
        d = _with_checkpoint(run, tmp_path / f"resume-{name}", bad, "checkpoint-last.pt")
        refused(capsys, "train", cache, "--out", d, "--resume", *TINY, needle=needle)


def test_weights_only_refusal_is_one_line_without_torchs_advice(tiny, tmp_path, capsys) -> None:
    _, cache, run = tiny
    d = _with_checkpoint(run, tmp_path / "evil", {"model": _Evil()})
    line = refused(capsys, "assign", d, "--cache", cache, "--out", tmp_path / "e.parquet", "--workers", "0",
                   needle="refused checkpoint")
    said = line.split("model-final.pt", 1)[1]  # (the test's folder name holds the words)
    assert "weights_only" not in said and "trusted" not in said and "posix.system" in said
    assert not (tmp_path / "e.parquet").exists()


# --- bad values -----------------------------------------------------------------------------------


def test_bad_devices_and_unfillable_k(tiny, tmp_path, capsys) -> None:
    _, cache, run = tiny
    args = [a for a in TINY if a not in ("--device", "cpu")]
    refused(capsys, "train", cache, "--out", tmp_path / "r1", *args, "--device", "banana", needle="banana")
    refused(capsys, "assign", run, "--out", tmp_path / "a.parquet", "--device", "banana", needle="banana")
    if not torch.cuda.is_available():
        refused(capsys, "train", cache, "--out", tmp_path / "r2", *args, "--device", "cuda", needle="no CUDA GPU")
    big = [a if a != "2" or args[i - 1] != "--clusters" else "100000000" for i, a in enumerate(args)]
    refused(capsys, "train", cache, "--out", tmp_path / "r3", *big, "--device", "cpu", needle="K <= 6")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r3").exists()


def test_bad_ingest_and_assign_values(tiny, tmp_path, capsys) -> None:
    src, _, run = tiny
    refused(capsys, "ingest", src, "--out", tmp_path / "c", "--frames", "99999999999999999999", needle="per video")
    assert not (tmp_path / "c").exists()  # nothing stored, least of all that value in a config.json
    refused(capsys, "ingest", src, "--out", tmp_path / "c", "-q", "--progress", "banana", needle="banana")
    refused(capsys, "assign", run, "--method", "kmeans", "--k", "0", "--out", tmp_path / "k.parquet", needle="--k")
