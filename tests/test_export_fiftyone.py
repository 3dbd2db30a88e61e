"""`videolabel export --fiftyone` against the real FiftyOne package and its MongoDB.

Skipped where fiftyone is not installed (``make install`` does not install it; ``.ci/run`` does, with
a MongoDB binary, see there). Where it is installed the test must pass: a FiftyOne whose database
does not start is a failure, not a skip. Two processes, as a user would have them: the CLI exports,
then a fresh Python reloads the persistent dataset through FiftyOne's own API.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_export import REPO, setup

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("fiftyone") is None,
                                 reason="fiftyone not installed (.ci/run installs it; pip install fiftyone)"),
              pytest.mark.slow]  # two fresh processes, each importing FiftyOne and starting its MongoDB

RELOAD = r"""
import json, sys
import fiftyone as fo
from videolabel.errors import VideolabelError
from videolabel.assignments import load_assignments
from videolabel.export import export_fiftyone

name, assignments, src = sys.argv[1:4]
ds = fo.load_dataset(name)
schema = ds.get_field_schema()
out = {
    "persistent": ds.persistent, "media_type": ds.media_type, "count": len(ds),
    "fields": {k: type(v).__name__ + ":" + (getattr(getattr(v, "document_type", None), "__name__", "") or "")
               for k, v in schema.items()},
    "samples": [{"filepath": s.filepath, "video_id": s["video_id"],
                 **{k: [s[k].label, s[k].confidence] for k in ("cluster", "cluster_h0", "cluster_h1")}}
                for s in ds.sort_by("filepath")],
    "head1": ds.count_values("cluster_h1.label"),
}
try:  # a second export under the same name is refused, the dataset kept
    export_fiftyone(load_assignments(assignments).df, src, name)
    out["again"] = "exported twice"
except VideolabelError as exc:
    out["again"] = str(exc)
out["count_after"] = len(fo.load_dataset(name))
fo.load_dataset(name).delete()
out["left"] = fo.dataset_exists(name)
print("RESULT " + json.dumps(out))
"""


def test_export_then_reload_through_fiftyone(tmp_path):
    src, df = setup(tmp_path)  # five videos, one without its source file; two heads
    df["confidence"] = [0.91, 0.82, 0.73, 0.64, 0.55]  # distinct per video; head 1 has its own
    df["prob_h1"] = [0.35, 0.45, 0.55, 0.65, 0.75]
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"videolabel": b'{"head": 0}'}),
                   tmp_path / "a.parquet")
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp_path / "db"), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATASET_ZOO_DIR": str(tmp_path / "zoo"), "FIFTYONE_DEFAULT_DATASET_DIR": str(tmp_path / "fo")}
    name = "videolabel-test"
    proc = subprocess.run([sys.executable, "-m", "videolabel", "export", str(tmp_path / "a.parquet"), "--source-root",
                           str(src), "--fiftyone", name], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"FiftyOne dataset '{name}': 4 videos" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", RELOAD, name, str(tmp_path / "a.parquet"), str(src)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert got["persistent"] is True and got["media_type"] == "video" and got["count"] == 4
    for field in ("cluster", "cluster_h0", "cluster_h1"):
        assert got["fields"][field] == "EmbeddedDocumentField:Classification"
    assert got["fields"]["video_id"] == "StringField:"
    by_path = {s["filepath"]: s for s in got["samples"]}
    expected = df[df["path"] != "c/gone.mp4"]
    assert sorted(by_path) == sorted(str((src / p).resolve()) for p in expected["path"])
    for _, row in expected.iterrows():
        s = by_path[str((src / row["path"]).resolve())]
        assert s["video_id"] == row["video_id"]
        assert s["cluster"] == [f"cluster_{row['cluster']:03d}", pytest.approx(row["confidence"])]
        assert s["cluster_h0"] == [f"cluster_{row['cluster_h0']:03d}", None]  # the file has no prob_h0
        assert s["cluster_h1"] == ["cluster_002", pytest.approx(row["prob_h1"])]
    assert got["head1"] == {"cluster_002": 4}
    assert "already exists" in got["again"] and got["count_after"] == 4
    assert got["left"] is False
