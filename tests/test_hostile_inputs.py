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
    refused(capsys, "train", cache, "--out", tmp_path / "r3", *big, "--device", "cpu", needle="GiB")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r3").exists()


def test_bad_ingest_and_assign_values(tiny, tmp_path, capsys) -> None:
    src, _, run = tiny
    refused(capsys, "ingest", src, "--out", tmp_path / "c", "--frames", "99999999999999999999", needle="per video")
    assert not (tmp_path / "c").exists()  # nothing stored, least of all that value in a config.json
    refused(capsys, "ingest", src, "--out", tmp_path / "c", "-q", "--progress", "banana", needle="banana")
    refused(capsys, "assign", run, "--method", "kmeans", "--k", "0", "--out", tmp_path / "k.parquet", needle="--k")


# --- output that can hurt -------------------------------------------------------------------------

HOSTILE_NAMES = ["=cmd|' /C calc'!A0.mp4", "+1.mp4", "-2.mp4", "@SUM(A1).mp4", "\tt.mp4", "'=quoted.mp4",
                 "plain.mp4", "'plain.mp4"]


def _assignments(tmp_path: Path, names: list[str]) -> Path:
    from videolabel.assignments import write_assignments

    df = pd.DataFrame({"video_id": [f"v{i}" for i in range(len(names))], "path": names,
                       "cluster": [i % 2 for i in range(len(names))], "confidence": 0.9, "margin": 0.5,
                       "cluster_h0": [i % 2 for i in range(len(names))], "prob_h0": 0.9})
    path = tmp_path / "a.parquet"
    write_assignments(df, path, {"method": "selavi", "num_clusters": 2, "num_heads": 1, "head": 0, "layout": "wide"})
    return path


def test_csv_cells_never_start_a_formula_and_round_trip(tmp_path, capsys) -> None:
    import csv

    from videolabel.fsutil import CSV_FORMULA_START, csv_text, csv_untext

    for name in HOSTILE_NAMES + ["", "'", "''=x", "'-"]:
        assert csv_untext(csv_text(name)) == name
    a = _assignments(tmp_path, HOSTILE_NAMES)
    assert vl(capsys, "select", a, "--per-cluster", "4", "--out", tmp_path / "sel.csv")[0] == 0
    feats = tmp_path / "f.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(HOSTILE_NAMES)
    flat = pa.array([-0.5] * (4 * n), pa.float32())
    pq.write_table(pa.table({"video_id": [f"v{i}" for i in range(n)], "path": HOSTILE_NAMES, "has_audio": [True] * n,
                             "video_features": pa.FixedSizeListArray.from_arrays(flat, 4),
                             "audio_features": pa.FixedSizeListArray.from_arrays(flat, 4)}), feats)
    assert vl(capsys, "export", a, "--source-root", tmp_path, "--features", feats,
              "--features-csv", tmp_path / "f.csv")[0] == 0
    for out, text_cols in ((tmp_path / "sel.csv", ("path", "video_id")), (tmp_path / "f.csv", ("path", "video_id"))):
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == n
        for row in rows:
            for col in text_cols:
                assert not row[col].startswith(CSV_FORMULA_START), (out.name, row[col])
        assert sorted(csv_untext(r["path"]) for r in rows) == sorted(HOSTILE_NAMES)
    assert float(rows[0]["f0"]) == -0.5  # numbers stay numbers
    # the filled-in selection goes back in as seeds, names intact
    sel = pd.read_csv(tmp_path / "sel.csv", dtype=str, keep_default_na=False)
    sel["label"] = "x"
    sel.to_csv(tmp_path / "seeds.csv", index=False)
    from videolabel.propagate import read_seeds

    assert sorted(read_seeds(tmp_path / "seeds.csv")["path"]) == sorted(HOSTILE_NAMES)


def test_backslash_is_part_of_a_file_name(tmp_path, capsys) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    (root / "a\\b.mp4").write_bytes(b"x")
    (root / "sub").mkdir()
    (root / "sub" / "c.mp4").write_bytes(b"y")
    a = _assignments(tmp_path, ["a\\b.mp4", "sub/c.mp4"])
    rc, out, _ = vl(capsys, "export", a, "--source-root", root, "--out", tmp_path / "tree", "--copy")
    assert rc == 0 and "missing" not in out
    assert (tmp_path / "tree" / "cluster_000" / "a\\b.mp4").read_bytes() == b"x"


def test_ragged_labels_csv_names_the_line(tmp_path, capsys) -> None:
    a = _assignments(tmp_path, ["x.mp4", "y.mp4"])
    (tmp_path / "gt.csv").write_text("path,label\nx.mp4,1\ny.mp4,2,extra\n")
    refused(capsys, "evaluate", a, "--gt", tmp_path / "gt.csv", needle="line 3 has 3 field(s)")
    (tmp_path / "gt2.csv").write_text("path,label\nx.mp4,1,a\ny.mp4,2,b\n")  # pandas would index by path
    refused(capsys, "evaluate", a, "--gt", tmp_path / "gt2.csv", needle="line 2 has 3 field(s)")
    (tmp_path / "gt3.csv").write_text("path,label\nx.mp4,1\n,2\n")
    refused(capsys, "evaluate", a, "--gt", tmp_path / "gt3.csv", needle="without a path")


def test_sigterm_keeps_the_row_of_the_steps_in_progress(tiny, tmp_path) -> None:
    """The signal lands mid-epoch, between log rows: the checkpoint's step has its metrics row."""
    import json
    import signal

    from videolabel.train.config import make_config
    from videolabel.train.loop import Trainer

    _, cache, _ = tiny
    cfg = make_config(None, dict(preset="tiny", num_clusters=2, num_heads=1, epochs=3, batch_size=2, workers=0,
                                 precise_bn_clips=0, label_bn="eval", n_solves=1, align=False, log_every=1000,
                                 progress="none"))
    trainer = Trainer(cache, tmp_path / "run", cfg, device="cpu")
    step = trainer.train_step

    def step_then_signal(*args, **kw):
        loss = step(*args, **kw)
        if trainer.step == 1:  # the second step (3 per epoch): not an epoch end, not a log step
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    trainer.train_step = step_then_signal
    summary = trainer.run()
    assert summary.preempted and summary.steps == 2
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("event") == "train"][-1] == 2
    assert torch.load(tmp_path / "run" / "checkpoint-last.pt", weights_only=True)["step"] == 2


# --- the CLI itself -------------------------------------------------------------------------------


def test_version(capsys) -> None:
    import videolabel

    rc, out, err = vl(capsys, "--version")
    assert rc == 0 and out.strip() == f"videolabel {videolabel.__version__}" and not err


def test_default_loader_workers_fit_the_machine(tiny, tmp_path, capsys) -> None:
    import json

    from videolabel.data.loader import default_loader_workers, usable_cpus

    _, cache, _ = tiny
    assert default_loader_workers() == max(0, min(4, usable_cpus() - 1))
    args = [a for a in TINY if a not in ("--workers", "0")]
    assert vl(capsys, "train", cache, "--out", tmp_path / "r", *args)[0] == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["workers"] == default_loader_workers()


def test_too_many_workers_warn_once(tiny, tmp_path, capfd, monkeypatch) -> None:
    """More loader workers than CPUs: one line of ours, not torch's warning at every loader (there is a
    loader per label pass and per epoch)."""
    import warnings

    import videolabel.data.loader as loader
    import videolabel.train.loop as loop
    from videolabel.train.config import make_config

    _, cache, _ = tiny
    monkeypatch.setattr(loader, "usable_cpus", lambda: 1)
    monkeypatch.setattr(loader, "_warned_workers", False)
    cfg = make_config(None, dict(preset="tiny", num_clusters=2, num_heads=1, epochs=2, batch_size=2, workers=2,
                                 precise_bn_clips=0, label_bn="eval", n_solves=3, align=False, progress="none"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        loop.train(cache, tmp_path / "r", cfg, device="cpu", progress=None)
    err = capfd.readouterr().err
    assert err.count("loader workers on 1 usable CPU") == 1, err
    assert not [w for w in seen if "DataLoader will create" in str(w.message)]
