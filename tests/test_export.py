"""`videolabel export`: cluster folders of symlinks or copies, a features CSV, the FiftyOne guard."""

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

from videolabel.errors import VideolabelError
from videolabel.export import export_tree, write_features_csv
from videolabel.features import load_features

REPO = Path(__file__).resolve().parents[1]


def setup(tmp_path: Path):
    """Five videos; a/x.mp4 and b/x.mp4 share a name in cluster 1; c/gone.mp4 does not exist."""
    src = tmp_path / "videos"
    paths = ["a/one.mp4", "a/x.mp4", "b/x.mp4", "c/gone.mp4", "b/two.mp4"]
    for p in paths:
        if "gone" not in p:
            (src / p).parent.mkdir(parents=True, exist_ok=True)
            (src / p).write_bytes(p.encode())
    df = pd.DataFrame({"video_id": [f"{i:016x}" for i in range(5)], "path": paths,
                       "cluster": np.array([0, 1, 1, 1, 12], dtype=np.int64), "confidence": 0.9, "margin": 0.5})
    df["cluster_h0"] = df["cluster"]
    df["cluster_h1"] = np.array([2, 2, 2, 2, 2], dtype=np.int64)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata,
                                                  b"videolabel": json.dumps({"head": 0}).encode()}),
                   tmp_path / "a.parquet")
    return src, df


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videolabel", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_symlink_tree_with_missing_source_and_name_clash(tmp_path):
    src, df = setup(tmp_path)
    out = tmp_path / "tree"
    s = export_tree(df, src, out)
    assert (s.written, s.missing, s.missing_examples, s.renamed, s.clusters) == (4, 1, ["c/gone.mp4"], 1, 3)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())
    assert files == ["cluster_000/one.mp4", "cluster_001/0000000000000002_x.mp4", "cluster_001/x.mp4",
                     "cluster_012/two.mp4"]
    link = out / "cluster_001" / "0000000000000002_x.mp4"
    assert link.is_symlink() and link.resolve() == (src / "b/x.mp4").resolve()
    assert (out / "cluster_001" / "x.mp4").read_bytes() == b"a/x.mp4"
    again = export_tree(df, src, out)  # re-export into the same folder replaces its entries
    assert again.written == 4


def test_copy_and_head(tmp_path):
    src, df = setup(tmp_path)
    out = tmp_path / "copies"
    s = export_tree(df, src, out, copy=True, head=1)
    assert s.clusters == 1 and s.written == 4
    f = out / "cluster_002" / "two.mp4"
    assert f.is_file() and not f.is_symlink() and f.read_bytes() == b"b/two.mp4"


def test_features_csv(tmp_path):
    src, df = setup(tmp_path)
    v = np.arange(10, dtype=np.float32).reshape(5, 2)
    a = np.ones((5, 1), np.float32)
    pq.write_table(pa.table({
        "video_id": df["video_id"].to_numpy()[::-1], "path": df["path"].to_numpy()[::-1],
        "has_audio": np.ones(5, bool),
        "video_features": pa.FixedSizeListArray.from_arrays(pa.array(v[::-1].reshape(-1)), 2),
        "audio_features": pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), 1),
    }), tmp_path / "f.parquet")
    p = write_features_csv(df, load_features(tmp_path / "f.parquet"), tmp_path / "f.csv")
    back = pd.read_csv(p, dtype={"video_id": str})
    assert list(back.columns) == ["video_id", "path", "cluster", "f0", "f1", "f2"]
    np.testing.assert_allclose(back[["f0", "f1"]].to_numpy(), v)  # aligned by video_id
    assert back["cluster"].tolist() == [0, 1, 1, 1, 12]


def test_cli_export(tmp_path):
    src, _ = setup(tmp_path)
    proc = cli("export", tmp_path / "a.parquet", "--source-root", src, "--out", tmp_path / "t", "--copy")
    assert proc.returncode == 0, proc.stderr
    assert "copied 4 videos into 3 cluster folders" in proc.stdout and "1 source file(s) missing" in proc.stdout
    assert (tmp_path / "t" / "cluster_012" / "two.mp4").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--source-root", "{tmp}/nowhere", "--out", "{tmp}/t"], "source root is not a folder"),
    (["--source-root", "{tmp}/videos", "--out", "{tmp}/t", "--head", "7"], "no cluster_h7"),
    (["--source-root", "{tmp}/videos", "--features-csv", "{tmp}/f.csv"], "--features and --features-csv"),
])
def test_cli_export_errors(tmp_path, args, needle):
    setup(tmp_path)
    proc = cli("export", tmp_path / "a.parquet", *[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_cli_export_missing_assignments(tmp_path):
    proc = cli("export", tmp_path / "nope.parquet", "--source-root", tmp_path, "--out", tmp_path / "t")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not found" in proc.stderr


def test_fiftyone_missing_is_a_clear_error(tmp_path):
    """Without fiftyone (hidden from the import system when it is installed, as in CI)."""
    src, _ = setup(tmp_path)
    hide = "import sys; sys.modules['fiftyone'] = None; sys.argv[0] = 'videolabel'; from videolabel.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", hide, "export", str(tmp_path / "a.parquet"), "--source-root", str(src),
                           "--fiftyone", "clusters"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "pip install fiftyone" in proc.stderr


def test_fiftyone_dataset_has_a_field_per_head(tmp_path, monkeypatch):
    """The FiftyOne calls, against a stand-in module that records them (fiftyone itself is optional)."""
    import types

    made: dict[str, object] = {}

    class Classification:
        def __init__(self, label, confidence=None):
            self.label, self.confidence = label, confidence

    class Sample(dict):
        def __init__(self, filepath):
            super().__init__()
            self.filepath = filepath

    class Dataset:
        def __init__(self, name):
            made["name"], self.persistent, self.samples = name, False, []
            made["dataset"] = self

        def add_samples(self, samples):
            self.samples.extend(samples)

    fo = types.SimpleNamespace(Sample=Sample, Classification=Classification, Dataset=Dataset,
                               dataset_exists=lambda name: name == "taken")
    monkeypatch.setitem(sys.modules, "fiftyone", fo)
    from videolabel.export import export_fiftyone

    src, df = setup(tmp_path)
    n = export_fiftyone(df, src, "clusters")
    ds = made["dataset"]
    assert n == 4 and made["name"] == "clusters" and ds.persistent  # c/gone.mp4 has no source file
    first = ds.samples[0]
    assert first.filepath == str((src / "a/one.mp4").resolve())
    assert first["cluster"].label == "cluster_000" and first["cluster"].confidence == pytest.approx(0.9)
    assert first["cluster_h0"].label == "cluster_000" and first["cluster_h1"].label == "cluster_002"
    assert first["video_id"] == "0000000000000000"
    df["prob_h1"] = 0.25
    export_fiftyone(df, src, "by-head-1", head=1)  # the cluster field is head 1's, with head 1's confidence
    first = made["dataset"].samples[0]
    assert first["cluster"].label == "cluster_002" and first["cluster"].confidence == pytest.approx(0.25)
    with pytest.raises(VideolabelError, match="'taken' already exists"):
        export_fiftyone(df, src, "taken")
