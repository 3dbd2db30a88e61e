"""`videolabel select`, `propagate` and `evaluate --simulate-budget`: from a few human labels to all videos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from videolabel.budget import simulate_budget
from videolabel.errors import VideolabelError
from videolabel.features import load_features
from videolabel.propagate import propagate_labels, read_seeds, select_for_labelling, write_selection

REPO = Path(__file__).resolve().parents[1]


# --- helpers -------------------------------------------------------------------------------


def frame(clusters, confidence=None, margin=None) -> pd.DataFrame:
    n = len(clusters)
    return pd.DataFrame({
        "video_id": [f"{i:016x}" for i in range(n)],
        "path": [f"v/{i:03d}.mp4" for i in range(n)],
        "cluster": np.asarray(clusters, dtype=np.int64),
        "confidence": np.full(n, 0.9) if confidence is None else np.asarray(confidence, dtype=np.float64),
        "margin": np.full(n, 0.5) if margin is None else np.asarray(margin, dtype=np.float64),
    })


def write_assignments(path: Path, df: pd.DataFrame) -> Path:
    df = df.copy()
    df["cluster_h0"] = df["cluster"]
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                          b"videolabel": json.dumps({"head": 0}).encode()})
    pq.write_table(table, path)
    return path


def write_features(path: Path, df: pd.DataFrame, video: np.ndarray, audio: np.ndarray | None = None) -> Path:
    video = np.asarray(video, dtype=np.float32)
    audio = np.zeros((len(df), 3), np.float32) if audio is None else np.asarray(audio, dtype=np.float32)
    pq.write_table(pa.table({
        "video_id": pa.array(df["video_id"].to_numpy()),
        "path": pa.array(df["path"].to_numpy()),
        "has_audio": pa.array(np.ones(len(df), bool)),
        "video_features": pa.FixedSizeListArray.from_arrays(pa.array(video.reshape(-1)), video.shape[1]),
        "audio_features": pa.FixedSizeListArray.from_arrays(pa.array(audio.reshape(-1)), audio.shape[1]),
    }), path)
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videolabel", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videolabel: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and needle in lines[0]


def perfect(n_classes=4, per_class=5, seed=0):
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(n_classes), per_class)
    df = frame(classes, confidence=rng.uniform(0.5, 1.0, len(classes)), margin=rng.uniform(0, 1, len(classes)))
    gt = pd.Series([f"class{c}" for c in classes])
    return df, gt


# --- propagate ----------------------------------------------------------------------------


def test_one_correct_seed_per_cluster_labels_everything():
    df, gt = perfect()
    first = df.groupby("cluster").head(1)
    seeds = pd.DataFrame({"path": first["path"], "label": gt[first.index]})
    out = propagate_labels(df, seeds)
    assert list(out.columns[:6]) == ["video_id", "path", "cluster", "label", "source", "confidence"]
    assert (out["label"].to_numpy(dtype=object) == gt.to_numpy()).all()
    assert (out["source"] == "seed").sum() == 4 and (out["source"] == "cluster").sum() == 16
    assert (out.loc[out["source"] == "seed", "confidence"] == 1.0).all()
    rest = out["source"] == "cluster"
    np.testing.assert_allclose(out.loc[rest, "confidence"], df.loc[rest, "confidence"])  # 1/1 x confidence


def conflict_setup():
    """Feature classes A (e0) and B (e1). Cluster 0: seeds A (row 0) and B (row 1) tie, plus unlabelled
    rows 2 (near A) and 3 (near B). Cluster 1: seeds A, A, B (2-1 majority) and row 7. Cluster 2: seed B, row 9."""
    clusters = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3]
    feat_class = ["A", "B", "A", "B", "A", "A", "B", "B", "B", "B", "A"]
    df = frame(clusters)
    video = np.array([[1.0, 0.0] if c == "A" else [0.0, 1.0] for c in feat_class]) + 0.01 * np.arange(11)[:, None]
    seeds = pd.DataFrame({"video_id": df["video_id"].iloc[[0, 1, 4, 5, 6, 8]].to_numpy(),
                          "label": ["A", "B", "A", "A", "B", "B"]})
    return df, video, seeds


def test_conflicting_seeds_fall_back_to_neighbours(tmp_path):
    df, video, seeds = conflict_setup()
    feats = load_features(write_features(tmp_path / "f.parquet", df, video))
    out = propagate_labels(df, seeds, features=feats)
    lab = out["label"].to_numpy(dtype=object)
    src = out["source"].tolist()
    # cluster 0 is a 1-1 tie: every unlabelled video asks its k = min(5, 6) = 5 nearest seeds
    assert (lab[2], src[2]) == ("A", "neighbour")  # nearest: 3 A seeds + 2 B seeds
    assert (lab[3], src[3]) == ("B", "neighbour")
    assert 0.5 < out["confidence"][2] <= 0.6 + 1e-6  # 3/5 votes x mean (1 + cos)/2 ~ 1
    # cluster 1: strict 2-1 majority -> A, confidence 2/3 x 0.9; the B seed keeps its own label
    assert (lab[7], src[7]) == ("A", "cluster")
    assert out["confidence"][7] == pytest.approx(2 / 3 * 0.9)
    assert (lab[6], src[6]) == ("B", "seed")
    assert (lab[9], src[9]) == ("B", "cluster")
    assert (lab[10], src[10]) == ("A", "neighbour")  # cluster 3 has no seeds


def test_neighbour_fallback_in_blocks_matches_one_block(monkeypatch):
    rng = np.random.default_rng(4)
    n, n_seeds = 300, 40
    df = frame(list(rng.integers(0, 100, n)))  # many clusters without seeds: most rows use neighbours
    feats = rng.standard_normal((n, 8))
    pick = rng.choice(n, n_seeds, replace=False)
    feats[pick[1]] = feats[pick[0]]  # tied similarities must break the same way in every block layout
    seeds = pd.DataFrame({"video_id": df["video_id"].iloc[pick].to_numpy(),
                          "label": rng.choice(["a", "b", "c"], n_seeds)})
    whole = propagate_labels(df, seeds, features=feats)
    assert (whole["source"] == "neighbour").sum() > n // 2
    import videolabel.propagate as P

    monkeypatch.setattr(P, "_SIM_BLOCK", 3 * n_seeds)  # blocks of 3 rows, the last one short
    pd.testing.assert_frame_equal(propagate_labels(df, seeds, features=feats), whole)


def test_without_features_unseeded_abstain_and_conflicts_take_the_plurality():
    df, _, seeds = conflict_setup()
    out = propagate_labels(df, seeds)
    assert out["source"][10] == "abstain" and pd.isna(out["label"][10]) and "no seeds" in out["reason"][10]
    # cluster 0: a 1-1 tie between seeds of equal confidence -> the smaller label, half the confidence
    for i in (2, 3):
        assert (out["label"][i], out["source"][i]) == ("A", "cluster")
        assert out["confidence"][i] == pytest.approx(0.5 * df["confidence"][i])
    seeds2 = seeds.copy()
    df2 = df.copy()
    df2.loc[1, "confidence"] = 0.99  # the B seed is now the more confident one: B wins the tie
    assert propagate_labels(df2, seeds2)["label"][2] == "B"
    assert out["source"][7] == "cluster" and pd.isna(out["reason"][7])


def test_min_confidence_abstains_but_keeps_seeds():
    df, _, seeds = conflict_setup()
    out = propagate_labels(df, seeds, min_confidence=0.7)
    assert out["source"][7] == "abstain" and pd.isna(out["label"][7])  # 2/3 x 0.9 = 0.6 < 0.7
    assert "min-confidence" in out["reason"][7]
    assert out["source"][9] == "cluster"  # 1 x 0.9
    assert (out["source"].iloc[[0, 1, 4, 5, 6, 8]] == "seed").all()


def test_seeds_not_in_assignments_are_an_error():
    df, _ = perfect()
    seeds = pd.DataFrame({"path": ["v/000.mp4", "nope/a.mp4", "nope/b.mp4"], "label": ["x", "y", "z"]})
    with pytest.raises(VideolabelError, match=r"2 of 3 seed\(s\) match no video.*nope/a.mp4"):
        propagate_labels(df, seeds)


# --- select -------------------------------------------------------------------------------


def test_select_is_deterministic_and_the_csv_round_trips(tmp_path):
    conf = [0.5, 0.9, 0.9, 0.7, 0.95, 0.2, 0.6, 0.6]
    margin = [0.1, 0.3, 0.3, 0.4, 0.9, 0.01, 0.05, 0.2]
    df = frame([0, 0, 0, 0, 1, 1, 1, 1], conf, margin).iloc[::-1]  # row order must not matter
    sel = select_for_labelling(df, per_cluster=2, uncertain=2)
    assert list(sel.columns) == ["path", "video_id", "cluster", "confidence", "reason", "label"]
    # cluster 0: rows 1 and 2 tie on confidence and margin -> smaller video_id first
    assert sel["video_id"].str[-1].tolist() == ["1", "2", "4", "7", "5", "6"]
    assert sel["reason"].tolist() == ["representative"] * 4 + ["uncertain"] * 2
    assert (sel["label"] == "").all()
    assert select_for_labelling(df.sample(frac=1, random_state=3), 2, 2).equals(sel)
    p = write_selection(sel, tmp_path / "to_label.csv")
    back = pd.read_csv(p, dtype={"path": str, "video_id": str, "reason": str, "label": str}, keep_default_na=False)
    pd.testing.assert_frame_equal(back, sel, check_dtype=False)
    back.loc[:1, "label"] = ["cat", "cat"]  # the annotator fills some labels in; the rest are skipped
    back.to_csv(p, index=False)
    assert read_seeds(p)[["video_id", "label"]].values.tolist() == [[sel["video_id"][0], "cat"],
                                                                    [sel["video_id"][1], "cat"]]


# --- budget simulation --------------------------------------------------------------------


def noisy(seed=0, n_classes=10, per_class=30):
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(n_classes), per_class)
    clusters = classes.copy()
    swap = rng.random(len(classes)) < 0.2
    clusters[swap] = (classes[swap] + rng.integers(1, n_classes, swap.sum())) % n_classes
    # misassigned videos tend to have lower (but overlapping) confidence
    conf = np.where(swap, rng.uniform(0.2, 0.8, len(classes)), rng.uniform(0.4, 1.0, len(classes)))
    df = frame(clusters, conf, conf * rng.uniform(0.5, 1.0, len(classes)))
    centres = rng.normal(size=(n_classes, 16))
    video = centres[classes] + 0.1 * rng.normal(size=(len(classes), 16))
    return df, pd.Series([f"c{c}" for c in classes]), video


def test_simulate_budget_is_monotone_on_a_noisy_clustering():
    for seed in range(3):
        df, gt, video = noisy(seed)
        rows = simulate_budget(df, gt, [1, 2, 3, 5, 10], features=video)
        acc = [r["accuracy"] for r in rows]
        assert all(b >= a for a, b in zip(acc, acc[1:])), acc
        assert [r["seeds"] for r in rows] == [10, 20, 30, 50, 100]
        assert all(r["coverage"] == 1.0 for r in rows)
        assert 0.7 < acc[0] and acc[-1] < 1.0


def test_simulate_budget_one_on_a_perfect_clustering_is_exact():
    df, gt = perfect()
    rows = simulate_budget(df, gt, [1])
    assert rows == [{"budget": 1, "seeds": 4, "accuracy": 1.0, "coverage": 1.0, "n": 20}]


# --- CLI ----------------------------------------------------------------------------------


def test_cli_select_propagate_and_evaluate_budget(tmp_path):
    df, gt = perfect()
    a = write_assignments(tmp_path / "a.parquet", df)
    sel_csv = tmp_path / "to_label.csv"
    proc = cli("select", a, "--per-cluster", "1", "--uncertain", "2", "--out", sel_csv)
    assert proc.returncode == 0, proc.stderr
    sel = pd.read_csv(sel_csv, dtype=str, keep_default_na=False)
    assert len(sel) == 6 and (sel["reason"] == "representative").sum() == 4
    truth = dict(zip(df["path"], gt))
    sel["label"] = sel["path"].map(truth)
    sel.head(4).to_csv(sel_csv, index=False)
    out = tmp_path / "labels.parquet"
    proc = cli("propagate", a, "--seeds", sel_csv, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["abstain"] == 0
    labels = pd.read_parquet(out)
    assert (labels["label"].to_numpy(dtype=object) == gt.to_numpy()).all()
    gt_csv = tmp_path / "gt.csv"
    pd.DataFrame({"path": df["path"], "label": gt}).to_csv(gt_csv, index=False)
    proc = cli("evaluate", a, "--gt", gt_csv, "--simulate-budget", "1,2", "--json")
    assert proc.returncode == 0, proc.stderr
    budget = json.loads(proc.stdout)["budget"]
    assert [(r["budget"], r["accuracy"], r["coverage"]) for r in budget] == [(1, 1.0, 1.0), (2, 1.0, 1.0)]
    proc = cli("evaluate", a, "--gt", gt_csv, "--simulate-budget", "1")
    assert proc.returncode == 0 and "budget" in proc.stdout


def test_cli_error_paths(tmp_path):
    df, _ = perfect()
    a = write_assignments(tmp_path / "a.parquet", df)
    seeds = tmp_path / "seeds.csv"
    pd.DataFrame({"path": ["v/000.mp4", "elsewhere/x.mp4"], "label": ["a", "b"]}).to_csv(seeds, index=False)
    assert_one_line_error(cli("propagate", a, "--seeds", seeds, "--out", tmp_path / "l.parquet"),
                          "elsewhere/x.mp4")
    assert_one_line_error(cli("propagate", tmp_path / "missing.parquet", "--seeds", seeds, "--out",
                              tmp_path / "l.parquet"), "not found")
    assert_one_line_error(cli("propagate", a, "--seeds", tmp_path / "none.csv", "--out", tmp_path / "l.parquet"),
                          "seeds file not found")
    assert_one_line_error(cli("select", tmp_path / "missing.parquet", "--per-cluster", "1", "--out",
                              tmp_path / "s.csv"), "not found")
    gt_csv = tmp_path / "gt.csv"
    pd.DataFrame({"path": df["path"], "label": "x"}).to_csv(gt_csv, index=False)
    assert_one_line_error(cli("evaluate", a, "--gt", gt_csv, "--simulate-budget", "1,x"), "--simulate-budget")


def test_budget_simulation_is_monotone_on_avdigits(avdigits_cache, tmp_path):
    """A real (tiny) run on real AV-Digits: more seeds per cluster never buy lower accuracy."""
    from videolabel.assign import AssignOptions, assign
    from videolabel.assignments import load_assignments
    from videolabel.groundtruth import join_ground_truth, read_ground_truth
    from videolabel.train.config import make_config
    from videolabel.train.loop import train

    cache, labels = avdigits_cache
    cfg = make_config(None, dict(preset="tiny", num_clusters=10, num_heads=1, epochs=3, batch_size=16, workers=0,
                                 n_solves=3, align_proposals=200, progress="none"))
    train(cache, tmp_path / "run", cfg, device="cpu")
    assign(tmp_path / "run", tmp_path / "a.parquet", options=AssignOptions(workers=0), device="cpu")
    a = load_assignments(tmp_path / "a.parquet")
    gt, _ = join_ground_truth(a.df["path"], read_ground_truth(labels))
    rows = simulate_budget(a.df, gt, [1, 2, 3, 5, 8])
    acc = [r["accuracy"] for r in rows]
    assert all(later >= earlier - 1e-12 for earlier, later in zip(acc, acc[1:])), acc
    assert all(r["coverage"] == 1.0 for r in rows)  # every cluster has seeds: nothing abstains
    assert acc[-1] > acc[0]
