"""`videolabel evaluate`: loading assignment files, joining ground truth, scores, tables, CLI errors."""

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

from videolabel.assignments import assignments_from_frame, load_assignments
from videolabel.errors import VideolabelError
from videolabel.evaluate import evaluate, render_table, summary_lines
from videolabel.groundtruth import read_ground_truth

REPO = Path(__file__).resolve().parents[1]


# --- helpers -------------------------------------------------------------------------------


def write_parquet(path: Path, df: pd.DataFrame, meta: dict | None = None) -> Path:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        md = dict(table.schema.metadata or {})
        md[b"videolabel"] = json.dumps(meta).encode()
        table = table.replace_schema_metadata(md)
    pq.write_table(table, path)
    return path


def wide_frame(paths: list[str], heads: list[np.ndarray], chosen: int = 0) -> pd.DataFrame:
    df = pd.DataFrame({"video_id": [f"{i:016x}" for i in range(len(paths))], "path": paths})
    df["cluster"] = np.asarray(heads[chosen], dtype=np.int64)
    df["confidence"] = 0.9
    df["margin"] = 0.5
    for h, c in enumerate(heads):
        df[f"cluster_h{h}"] = np.asarray(c, dtype=np.int64)
        df[f"prob_h{h}"] = 0.9
    df["has_audio"] = True
    df["av_agree"] = pd.array([True] * len(paths), dtype="boolean")
    return df


def long_frame(wide: pd.DataFrame, n_heads: int) -> pd.DataFrame:
    parts = []
    for h in range(n_heads):
        parts.append(pd.DataFrame({"video_id": wide["video_id"], "path": wide["path"], "head": h,
                                   "cluster": wide[f"cluster_h{h}"], "prob": wide[f"prob_h{h}"]}))
    return pd.concat(parts, ignore_index=True)


def write_gt(path: Path, paths: list[str], labels: list[str]) -> Path:
    pd.DataFrame({"path": paths, "label": labels}).to_csv(path, index=False)
    return path


def gt_frame(paths, labels) -> pd.DataFrame:
    return pd.DataFrame({"path": list(paths), "label": [str(x) for x in labels]})


def frame_assignments(paths, *heads, meta=None):
    meta = meta or {}
    df = wide_frame(list(paths), [np.asarray(h) for h in heads], chosen=int(meta.get("head", 0)))
    return assignments_from_frame(df, meta)


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run videolabel.cli.main in-process (through the VideolabelError handler) -> (code, out, err)."""
    from videolabel.cli import main

    monkeypatch.setattr(sys, "argv", ["videolabel", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("videolabel: error:"), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def dataset(tmp_path):
    """200 videos, 4 classes, 3 random-ish heads; gt misses 2 videos and has 3 extra."""
    rng = np.random.default_rng(0)
    n = 200
    paths = [f"class{i % 4}/vid{i:03d}.mp4" for i in range(n)]
    y = np.array([f"c{i % 4}" for i in range(n)])
    heads = [
        np.where(rng.random(n) < 0.7, np.arange(n) % 4, rng.integers(0, 6, n)),  # fairly good
        rng.integers(0, 6, n),  # random
        np.where(rng.random(n) < 0.9, (np.arange(n) % 4 + 1) % 4, rng.integers(0, 6, n)),  # best
    ]
    wide = wide_frame(paths, heads)
    meta = {"run_id": "r1", "method": "selavi", "num_clusters": 6, "num_heads": 3, "head": 0, "layout": "wide",
            "name": "selavi"}
    a_path = write_parquet(tmp_path / "assign.parquet", wide, meta)
    long_path = write_parquet(tmp_path / "assign_long.parquet", long_frame(wide, 3), {**meta, "layout": "long",
                                                                                      "name": "selavi-long"})
    gt_paths = paths[2:] + ["extra/a.mp4", "extra/b.mp4", "./extra/c.mp4"]
    gt_labels = list(y[2:]) + ["c0", "c1", "c2"]
    gt_path = write_gt(tmp_path / "labels.csv", gt_paths, gt_labels)
    return {"paths": paths, "y": y, "heads": heads, "wide": wide, "a": a_path, "long": long_path, "gt": gt_path,
            "tmp": tmp_path}


# --- hand-made known values ----------------------------------------------------------------


def test_perfect_labelling_scores_one():
    paths = [f"v{i}.mp4" for i in range(12)]
    y = [i % 3 for i in range(12)]
    pred = [(i % 3 + 1) % 3 + 10 for i in range(12)]  # permuted cluster ids
    r = evaluate(frame_assignments(paths, pred), gt_frame(paths, y))
    for m in ("nmi", "ari", "acc"):
        assert r.chosen[m] == pytest.approx(1.0)
    assert r.n_matched == 12 and r.n_unmatched_assignments == 0 and r.n_unmatched_gt == 0


def test_all_in_one_cluster_has_zero_nmi():
    paths = [f"v{i}.mp4" for i in range(12)]
    y = [i % 3 for i in range(12)]
    r = evaluate(frame_assignments(paths, [7] * 12), gt_frame(paths, y))
    assert r.chosen["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert r.chosen["ari"] == pytest.approx(0.0, abs=1e-12)
    assert r.chosen["acc"] == pytest.approx(4 / 12)


def test_hand_computed_accuracy_fewer_clusters_than_classes():
    # classes a a a b b c ; clusters 0 0 1 1 1 1  -> best matching 0->a (2), 1->b (2): 4/6
    paths = [f"v{i}.mp4" for i in range(6)]
    r = evaluate(frame_assignments(paths, [0, 0, 1, 1, 1, 1]), gt_frame(paths, list("aaabbc")))
    assert r.chosen["acc"] == pytest.approx(4 / 6)
    assert r.chosen["n"] == 6


def test_chosen_head_mean_std_inter_and_oracle():
    paths = [f"v{i}.mp4" for i in range(8)]
    y = [0, 0, 1, 1, 2, 2, 3, 3]
    perfect = [5, 5, 6, 6, 7, 7, 8, 8]
    one = [0] * 8
    a = frame_assignments(paths, one, perfect, meta={"head": 0})
    r = evaluate(a, gt_frame(paths, y))
    assert r.chosen_head == 0 and r.chosen["nmi"] == pytest.approx(0.0, abs=1e-12)  # label-free: no peeking
    assert r.mean["nmi"] == pytest.approx(0.5) and r.std["nmi"] == pytest.approx(0.5)
    assert r.oracle is None and "oracle" not in r.to_dict()
    assert r.inter_head_nmi == pytest.approx(0.0, abs=1e-12)
    ro = evaluate(a, gt_frame(paths, y), oracle=True)
    assert ro.oracle_head == 1 and ro.oracle["nmi"] == pytest.approx(1.0)
    assert ro.to_dict()["oracle"]["head"] == 1
    # meta head 1 -> chosen is head 1
    r1 = evaluate(frame_assignments(paths, one, perfect, meta={"head": 1}), gt_frame(paths, y))
    assert r1.chosen_head == 1 and r1.chosen["nmi"] == pytest.approx(1.0)
    # identical heads: inter-head NMI 1
    r2 = evaluate(frame_assignments(paths, perfect, perfect), gt_frame(paths, y))
    assert r2.inter_head_nmi == pytest.approx(1.0)


def test_cluster_only_producer_and_video_id_key():
    df = pd.DataFrame({"video_id": ["a1", "b2", "c3", "d4"], "cluster": [1, 1, 2, 2]})
    a = assignments_from_frame(df, {"method": "propagate"})
    assert a.heads == [0] and a.name == "propagate"
    gt = pd.DataFrame({"video_id": ["a1", "b2", "c3", "d4"], "label": ["x", "x", "y", "y"]})
    r = evaluate(a, gt, key="video_id")
    assert r.chosen["nmi"] == pytest.approx(1.0) and r.inter_head_nmi is None
    with pytest.raises(VideolabelError, match="no path column.*--key video_id"):
        evaluate(a, gt, key="path")


def test_gt_key_and_path_normalisation():
    paths = ["a/x.mp4", "a/y.mp4", "b/z.mp4"]
    a = frame_assignments(paths, [0, 0, 1])
    gt = pd.DataFrame({"file": ["./a/x.mp4", "a\\y.mp4", "b/z.mp4"], "cls": ["p", "p", "q"]})
    r = evaluate(a, gt, gt_key="file", gt_label="cls")
    assert r.n_matched == 3 and r.chosen["acc"] == pytest.approx(1.0)


def test_leading_zero_video_ids_survive_csv(tmp_path):
    gt_path = tmp_path / "ids.csv"
    pd.DataFrame({"video_id": ["0012345678901234", "0099"], "label": ["1", "2"]}).to_csv(gt_path, index=False)
    gt = read_ground_truth(gt_path, key="video_id")
    assert list(gt["video_id"]) == ["0012345678901234", "0099"]


# --- files, layouts, sklearn ---------------------------------------------------------------


def test_matches_sklearn_end_to_end_via_cli_json(dataset, monkeypatch, capsys):
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    code, out, err = run_cli(["evaluate", dataset["a"], "--gt", dataset["gt"], "--json"], monkeypatch, capsys)
    assert code == 0, err
    doc = json.loads(out)  # exactly one JSON document on stdout
    assert isinstance(doc, dict)
    assert doc["n_rows"] == 200 and doc["n_matched"] == 198
    assert doc["n_unmatched_assignments"] == 2 and doc["n_unmatched_gt"] == 3
    assert doc["unmatched_assignment_examples"] == dataset["paths"][:2]
    assert sorted(doc["unmatched_gt_examples"]) == ["extra/a.mp4", "extra/b.mp4", "extra/c.mp4"]  # normalised
    y = dataset["y"][2:]
    per = {d["head"]: d for d in doc["per_head"]}
    assert sorted(per) == [0, 1, 2]
    for h, pred in enumerate(dataset["heads"]):
        p = pred[2:]
        assert per[h]["nmi"] == pytest.approx(normalized_mutual_info_score(y, p), abs=1e-9)
        assert per[h]["ari"] == pytest.approx(adjusted_rand_score(y, p), abs=1e-9)
        c = pd.crosstab(p, y).to_numpy()
        r, cc = linear_sum_assignment(-c)
        assert per[h]["acc"] == pytest.approx(c[r, cc].sum() / len(y), abs=1e-9)
        assert per[h]["n"] == 198
    assert doc["chosen_head"] == 0 and doc["chosen"]["nmi"] == per[0]["nmi"]
    nmis = [per[h]["nmi"] for h in range(3)]
    assert doc["mean"]["nmi"] == pytest.approx(np.mean(nmis)) and doc["std"]["nmi"] == pytest.approx(np.std(nmis))
    assert "oracle" not in doc
    assert 0.0 <= doc["inter_head_nmi"] <= 1.0
    assert doc["meta"]["run_id"] == "r1" and doc["name"] == "selavi"


def test_long_and_wide_layouts_agree(dataset):
    gt = read_ground_truth(dataset["gt"])
    wide = load_assignments(dataset["a"])
    long = load_assignments(dataset["long"])
    assert wide.heads == long.heads == [0, 1, 2]
    rw, rl = evaluate(wide, gt).to_dict(), evaluate(long, gt).to_dict()
    for k in ("per_head", "chosen", "mean", "std", "inter_head_nmi", "n_matched", "n_unmatched_gt",
              "unmatched_assignment_examples"):
        assert rw[k] == rl[k], k
    np.testing.assert_array_equal(long.df["cluster_h2"].to_numpy(), dataset["heads"][2])


def test_text_output_table_and_unmatched(dataset, monkeypatch, capsys):
    code, out, err = run_cli(["evaluate", dataset["a"], "--gt", dataset["gt"]], monkeypatch, capsys)
    assert code == 0, err
    assert "matched 198 of 200 assignment rows; 3 ground-truth rows unmatched" in out
    assert "class0/vid000.mp4" in out and "extra/a.mp4" in out  # unmatched examples listed
    assert "chosen: head 0" in out and "mean ± std over 3 heads" in out and "head 2" in out
    assert "NMI" in out and "Acc" in out and "⟨p_max⟩" in out
    assert "oracle" not in out
    assert "inter-head NMI" in out
    code, out, _ = run_cli(["evaluate", dataset["a"], "--gt", dataset["gt"], "--show-unmatched", "0"],
                           monkeypatch, capsys)
    assert code == 0 and "class0/vid000.mp4" not in out


def test_oracle_only_when_asked(dataset, monkeypatch, capsys):
    code, out, _ = run_cli(["evaluate", dataset["a"], "--gt", dataset["gt"], "--oracle"], monkeypatch, capsys)
    assert code == 0 and "oracle: head 2" in out
    code, out, _ = run_cli(["evaluate", dataset["a"], "--gt", dataset["gt"], "--oracle", "--json"],
                           monkeypatch, capsys)
    assert code == 0 and json.loads(out)["oracle"]["head"] == 2


def test_multi_file_comparison(dataset, monkeypatch, capsys):
    km = wide_frame(dataset["paths"], [dataset["heads"][2]])
    km_path = write_parquet(dataset["tmp"] / "km.parquet", km, {"method": "kmeans", "num_clusters": 6, "head": 0})
    args = ["evaluate", dataset["a"], dataset["long"], km_path, "--gt", dataset["gt"]]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "comparison of 3 assignment files" in out
    for name in ("selavi", "selavi-long", "kmeans"):
        assert name in out
    assert "NMI mean±std" in out
    assert "selavi: matched 198 of 200" in out and "kmeans: matched 198 of 200" in out
    code, out, err = run_cli(args + ["--json"], monkeypatch, capsys)
    docs = json.loads(out)
    assert [d["name"] for d in docs] == ["selavi", "selavi-long", "kmeans"]
    assert docs[0]["per_head"] == docs[1]["per_head"]
    assert docs[2]["chosen"]["nmi"] == pytest.approx(docs[0]["per_head"][2]["nmi"])


def test_duplicate_names_are_made_unique(dataset):
    from videolabel.evaluate import evaluate_paths

    other = dataset["tmp"] / "other.parquet"
    other.write_bytes(Path(dataset["a"]).read_bytes())
    reports = evaluate_paths([dataset["a"], other], dataset["gt"])
    names = [r.name for r in reports]
    assert len(set(names)) == 2 and names[0].startswith("selavi")
    table = render_table(reports)
    assert table.row_count == 2
    assert summary_lines(reports)[0].startswith(names[0] + ": matched")


def test_single_table_rows(dataset):
    gt = read_ground_truth(dataset["gt"])
    t = render_table([evaluate(load_assignments(dataset["a"]), gt, oracle=True)])
    assert t.row_count == 1 + 1 + 3 + 1  # chosen, mean, heads, oracle


# --- errors --------------------------------------------------------------------------------


def test_error_missing_assignments_file(dataset, monkeypatch, capsys):
    res = run_cli(["evaluate", dataset["tmp"] / "nope.parquet", "--gt", dataset["gt"]], monkeypatch, capsys)
    assert_one_line_error(*res, "assignments file not found", "nope.parquet")


def test_error_missing_gt_file(dataset, monkeypatch, capsys):
    res = run_cli(["evaluate", dataset["a"], "--gt", dataset["tmp"] / "nolabels.csv"], monkeypatch, capsys)
    assert_one_line_error(*res, "ground-truth file not found")


def test_error_not_parquet(dataset, monkeypatch, capsys):
    bad = dataset["tmp"] / "bad.parquet"
    bad.write_text("path,cluster\na,1\n")
    res = run_cli(["evaluate", bad, "--gt", dataset["gt"]], monkeypatch, capsys)
    assert_one_line_error(*res, "cannot read assignments", "as Parquet")


def test_error_empty_file(dataset, monkeypatch, capsys):
    empty = write_parquet(dataset["tmp"] / "empty.parquet", dataset["wide"].iloc[:0], {"method": "selavi"})
    res = run_cli(["evaluate", empty, "--gt", dataset["gt"]], monkeypatch, capsys)
    assert_one_line_error(*res, "has no rows")


def test_error_missing_columns(dataset, monkeypatch, capsys):
    no_cluster = write_parquet(dataset["tmp"] / "nc.parquet", dataset["wide"][["video_id", "path", "confidence"]])
    res = run_cli(["evaluate", no_cluster, "--gt", dataset["gt"]], monkeypatch, capsys)
    assert_one_line_error(*res, "lack cluster column(s)")
    no_id = write_parquet(dataset["tmp"] / "ni.parquet", dataset["wide"][["cluster", "cluster_h0"]])
    res = run_cli(["evaluate", no_id, "--gt", dataset["gt"]], monkeypatch, capsys)
    assert_one_line_error(*res, "need video_id or path")
    res = run_cli(["evaluate", dataset["a"], "--gt", dataset["gt"], "--gt-label", "klass"], monkeypatch, capsys)
    assert_one_line_error(*res, "lacks column(s) klass")


def test_error_nothing_matches(dataset, monkeypatch, capsys):
    other_gt = write_gt(dataset["tmp"] / "other.csv", ["elsewhere/1.mp4", "elsewhere/2.mp4"], ["a", "b"])
    res = run_cli(["evaluate", dataset["a"], "--gt", other_gt], monkeypatch, capsys)
    assert_one_line_error(*res, "no row of assignments selavi matches", "'class0/vid000.mp4'",
                          "'elsewhere/1.mp4'", "path")


def test_error_bad_key(dataset, monkeypatch, capsys):
    res = run_cli(["evaluate", dataset["a"], "--gt", dataset["gt"], "--key", "name"], monkeypatch, capsys)
    assert_one_line_error(*res, "--key must be path or video_id")


def test_error_incomplete_long_layout(dataset):
    long = long_frame(dataset["wide"], 3).iloc[:-1]
    with pytest.raises(VideolabelError, match="lack a row for head 2"):
        assignments_from_frame(long, {"layout": "long"})


def test_error_via_subprocess_no_traceback(dataset):
    proc = subprocess.run(
        [sys.executable, "-m", "videolabel", "evaluate", str(dataset["tmp"] / "missing.parquet"),
         "--gt", str(dataset["gt"])],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "assignments file not found")
