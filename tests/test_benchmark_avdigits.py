"""benchmarks/avdigits.py end to end at toy size (CPU): build, ingest, train, assign, evaluate, report.

Runs the whole script once (--toy: 2 videos per digit per split, 2 epochs, 2 label solves), checks the
Markdown, JSON and PNG it writes and that held-out labels cover the held-out set, then runs it again
and checks that every run and assignment is reused.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import load_module
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "avdigits.py"
TABLE_KEYS = ("5", "2", "3", "a2", "f2", "tq")
HEADINGS = ("Table 5 analogue", "Table 2 analogue", "Table 3 analogue", "Table A.2 analogue", "Fig. 2 analogue",
            "Time to quality")
N_RUNS = 12  # full, 7 one-setting rows of Table 3, 3 other K, 1 shorter run for the time to quality


def _load():
    return load_module("benchmarks_avdigits", SCRIPT)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    bench = _load()
    tmp = tmp_path_factory.mktemp("avdigits-bench")
    argv = ["--toy", "--out", str(tmp / "w"), "--results", str(tmp / "r.md"), "--seeds", "0", "--tables", "all"]
    t0 = time.perf_counter()
    assert bench.main(argv) == 0
    return bench, tmp, argv, time.perf_counter() - t0


def _md_tables(text: str) -> dict[str, list[list[str]]]:
    """Heading -> rows of cells of the Markdown table under it."""
    out: dict[str, list[list[str]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            out[current] = []
        elif current and line.startswith("|") and not line.startswith("|---"):
            out[current].append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def test_markdown_tables(first_run):
    _, tmp, _, _ = first_run
    text = (tmp / "r.md").read_text(encoding="utf-8")
    assert "Command: `python benchmarks/avdigits.py --toy" in text
    assert "torch" in text and "CPU cores" in text and "held-out:" in text
    tables = _md_tables(text)
    number = re.compile(r"^-?\d+(\.\d+)?( ± \d+(\.\d+)?)?$")
    for heading in HEADINGS:
        title = next((t for t in tables if t.startswith(heading)), None)
        assert title is not None, f"missing {heading}"
        header, *rows = tables[title]
        assert len(header) == 3 + (heading == "Time to quality") + 10 and rows
        for cells in rows:
            assert all(number.match(c) for c in cells[3:]), cells
    table3 = next(rows for title, rows in tables.items() if title.startswith("Table 3 analogue"))
    assert any(cells[0] == "Feature concatenation, one head" for cells in table3[1:])


def test_json_numbers(first_run):
    _, tmp, _, _ = first_run
    doc = json.loads((tmp / "r.json").read_text())
    assert set(doc["tables"]) == set(TABLE_KEYS)
    expected_rows = {"5": 8, "2": 3, "3": 8, "a2": 4, "f2": 12, "tq": 2}
    for key, res in doc["tables"].items():
        assert len(res["rows"]) == expected_rows[key]
        for row in res["rows"]:
            for split in ("train", "heldout"):
                nmi = row[split]["nmi"]["mean"]
                assert nmi is not None and math.isfinite(nmi) and 0.0 <= nmi <= 1.0, (key, row["name"], split)
                assert row["per_seed"][0][split]["n_videos"] == doc["sizes"][split]["n_videos"]
    a2 = [r["settings"]["num_clusters"] for r in doc["tables"]["a2"]["rows"]]
    assert a2 == [10, 8, 20, 40]
    assert set(doc["sizes"]["train"]["speakers"]).isdisjoint(doc["sizes"]["heldout"]["speakers"])
    assert len(doc["runs_trained"]) == N_RUNS  # the full run is shared by every table
    tq = doc["tables"]["tq"]["rows"]
    assert [r["settings"].get("epochs") for r in tq] == [1, None]  # the full run keeps --epochs
    assert all(r["train_seconds"]["mean"] > 0 for r in tq)


@pytest.mark.parametrize("name", ["r_fig2.png", "r_tq.png"])
def test_figures(first_run, name):
    _, tmp, _, _ = first_run
    with Image.open(tmp / name) as im:
        im.load()
        assert im.format == "PNG" and im.width > 0 and im.height > 0
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or [0] * 3) > 2  # something is drawn


def test_heldout_coverage(first_run):
    _, tmp, _, _ = first_run
    doc = json.loads((tmp / "r.json").read_text())
    with open(doc["sizes"]["heldout"]["labels"], newline="", encoding="utf-8") as f:
        labels = [r["path"] for r in csv.DictReader(f)]
    files = {row["per_seed"][0]["heldout"]["file"] for res in doc["tables"].values() for row in res["rows"]}
    assert files
    for path in files:
        df = pd.read_parquet(path)
        assert len(df) == len(labels)
        assert df["path"].is_unique and sorted(df["path"]) == sorted(labels)


def test_rerun_reuses_everything(first_run):
    bench, tmp, argv, first_s = first_run
    finals = sorted((tmp / "w" / "runs").glob("*/model-final.pt"))
    assert len(finals) == N_RUNS
    before = {p: p.stat().st_mtime_ns for p in finals}
    assert bench.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in finals} == before
    doc = json.loads((tmp / "r.json").read_text())
    assert doc["runs_trained"] == [] and len(doc["runs_reused"]) == N_RUNS
    assert doc["assignments_made"] == 0


def test_label_free_rows(first_run):
    """Table 5's label-free rows: the head that `assign --head auto` chose (the lowest k-means objective on a
    tiny run, stored per head in the file), the consensus head (`--head consensus`: the medoid of the file's
    heads), the head `--head agreement` would choose (the highest frames-vs-audio NMI in the file's
    metadata), and head 0, all read from the same file."""
    import pyarrow.parquet as pq

    from videolabel.cluster.select import consensus_head

    _, tmp, _, _ = first_run
    doc = json.loads((tmp / "r.json").read_text())
    rows = {r["name"]: r for r in doc["tables"]["5"]["rows"]}
    h0, chosen = rows["SeLaVi, head 0"], rows["SeLaVi, head chosen by `assign` (lowest k-means objective)"]
    agreed, cons = rows["SeLaVi, head chosen by A/V agreement"], rows["SeLaVi, consensus head"]
    picked = rows["SeLaVi, seed and head chosen by `assign`"]
    for split in ("train", "heldout"):
        for e0, ec, ea, em in zip(h0["per_seed"], chosen["per_seed"], agreed["per_seed"], cons["per_seed"]):
            assert e0[split]["file"] == ec[split]["file"] == ea[split]["file"] == em[split]["file"]
            meta = json.loads(pq.read_schema(ec[split]["file"]).metadata[b"videolabel"])
            heads = pd.read_parquet(ec[split]["file"])
            objective = meta["head_objective"]
            assert meta["head_choice"] == "objective" and ec[split]["head"] == meta["head"]
            assert objective[meta["head"]] == min(objective)  # (rounded in the file: ties are not a flip)
            medoid = consensus_head(np.stack([heads[f"cluster_h{h}"] for h in range(meta["num_heads"])]))
            assert em[split]["consensus_head"] == medoid and em[split]["scores"] == em[split]["consensus"]
            scores = meta["head_av_nmi"]
            assert ea[split]["agreement_head"] == scores.index(max(scores))
            assert ea[split]["scores"] == ea[split]["agreement"]
            assert ec[split]["scores"] == ec[split]["chosen"] and e0[split]["scores"] == e0[split]["head0"]
        assert len(picked["per_seed"]) == 1  # one value from all seeds' runs
        if len(doc["settings"]["seeds"]) == 1:  # one candidate: the chosen-head assignment of that run
            assert picked[split]["nmi"]["mean"] == pytest.approx(chosen[split]["nmi"]["mean"])


def test_default_size_and_tables():
    """The default is the size where rows separate: 1,000 training videos, 500 held-out, Tables 5 and 2 and
    the time-to-quality curve; the embedded subset reaches it by reusing each recording in 5 videos."""
    bench = _load()
    args = bench.parse_args([])
    assert (args.per_class, args.heldout_per_class, args.epochs) == (100, 50, 30)
    assert args.tables == ["5", "2", "tq"]
    assert bench.parse_args(["--tables", "all"]).tables == list(TABLE_KEYS)
    recs = bench.load_builder().find_recordings(args.fsdd)
    speakers = sorted({r.speaker for r in recs})[:-2]
    assert bench.reuse_needed(recs, speakers, 100) == 5  # 4 speakers x 5 takes per digit
    assert bench.reuse_needed(recs, speakers, 20) == 1
    with pytest.raises(SystemExit):
        bench.parse_args(["--reuse", "0"])


def test_finished_run_refuses_a_run_of_other_settings(tmp_path):
    """varied.py and conditions.py reuse a finished run by its folder's name; a folder whose run was trained
    under other settings (a default changed since) ends the script with a one-line error instead of being
    reported under the new settings."""
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    from _common import finished_run

    from videolabel.train.checkpoint import FINAL
    from videolabel.train.config import make_config

    cfg = make_config(None, {"preset": "tiny", "num_clusters": 10, "epochs": 12})
    run = tmp_path / "tiny-e12-s0"
    run.mkdir()
    assert not finished_run(run, cfg, "varied")  # nothing trained yet
    (run / FINAL).write_bytes(b"x")
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert finished_run(run, cfg, "varied")
    old = make_config(None, {"preset": "tiny", "num_clusters": 10, "epochs": 12, "n_solves": 40})
    (run / "config.json").write_text(json.dumps(old.to_dict()))
    with pytest.raises(SystemExit, match=r"varied: .*tiny-e12-s0 holds a run of other settings \(n_solves: run has "
                                         r"40, asked 16\)"):
        finished_run(run, cfg, "varied")
    (run / "config.json").write_text("{")
    with pytest.raises(SystemExit, match="without a readable config.json"):
        finished_run(run, cfg, "varied")
