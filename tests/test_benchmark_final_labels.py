"""benchmarks/final_labels.py on a real (tiny) run: an arm with the run's own settings reproduces the run bit for
bit, an arm that changes only the end differs where it should, settings that act earlier are refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import load_module

from videolabel.errors import VideolabelError
from videolabel.train.checkpoint import FINAL, LAST, load_checkpoint, save_checkpoint
from videolabel.train.config import make_config
from videolabel.train.loop import train

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "final_labels.py"


@pytest.fixture(scope="module")
def fl():
    return load_module("final_labels_bench", SCRIPT)


@pytest.fixture(scope="module")
def run(avdigits_cache, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, labels.csv): a finished tiny run (stream weights auto, the default), its labels made by the final
    k-means."""
    cache, labels = avdigits_cache
    out = tmp_path_factory.mktemp("final_labels") / "run"
    cfg = make_config(None, dict(preset="tiny", num_clusters=6, num_heads=2, epochs=1, batch_size=16, workers=0,
                                 n_solves=1, align_proposals=200, distill_epochs=3, progress="none", seed=0))
    train(cache, out, cfg, device="cpu")
    return out, labels


def test_own_settings_reproduce_the_run(fl, run, tmp_path) -> None:
    run_dir, _ = run
    row = fl.finish_again(run_dir, tmp_path / "own", {})
    assert row["event"] == "distill" and row["reproduced"] is True
    # the same setting named explicitly is still the run's own
    assert fl.finish_again(run_dir, tmp_path / "named", {"stream_weights": "auto"})["reproduced"] is True


def test_an_arm_changes_only_the_end(fl, run, tmp_path) -> None:
    run_dir, _ = run
    row = fl.finish_again(run_dir, tmp_path / "d1", {"distill_epochs": "1"})
    assert "reproduced" not in row
    # fewer distillation epochs: the same k-means labels (made before the distillation), other head weights
    assert pd.read_parquet(tmp_path / "d1" / "labels.parquet").equals(pd.read_parquet(run_dir / "labels.parquet"))
    assert not fl.same_result(run_dir, tmp_path / "d1")
    assert json.loads((tmp_path / "d1" / "config.json").read_text())["distill_epochs"] == 1


def test_settings_that_act_before_the_end_are_refused(fl, run, tmp_path) -> None:
    run_dir, _ = run
    with pytest.raises(VideolabelError, match="lr act"):
        fl.finish_again(run_dir, tmp_path / "x", {"lr": "0.1"})
    assert not (tmp_path / "x").exists()


def test_a_run_whose_training_has_not_ended_is_refused(fl, run, tmp_path) -> None:
    run_dir, _ = run
    cut = tmp_path / "cut"
    shutil.copytree(run_dir, cut)
    state = load_checkpoint(cut / LAST)
    save_checkpoint({**state, "step": int(state["step"]) - 1}, cut / LAST)
    with pytest.raises(VideolabelError, match="has not ended"):
        fl.finish_again(cut, tmp_path / "y", {})


def test_a_run_saved_before_a_setting_existed_keeps_the_default_of_then(fl, run, tmp_path) -> None:
    run_dir, _ = run
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    state = load_checkpoint(old / LAST)
    saved = {k: v for k, v in state["train_config"].items() if k != "stream_weights"}  # before the setting
    save_checkpoint({**state, "train_config": saved}, old / LAST)
    row = fl.finish_again(old, tmp_path / "z", {})
    assert "reproduced" in row  # the run's own settings: equal weights, the dataclass default, not tiny's auto
    assert json.loads((tmp_path / "z" / "config.json").read_text())["stream_weights"] == "equal"


def test_the_script_end_to_end(run, tmp_path) -> None:
    run_dir, labels = run
    res = tmp_path / "r.md"
    p = subprocess.run([sys.executable, str(SCRIPT), "--run", str(run_dir), "--labels", str(labels),
                        "--set", "stream_weights=equal", "--set", "stream_weights=auto", "--out", str(tmp_path / "w"),
                        "--results", str(res)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(res.with_suffix(".json").read_text())
    assert [r["arm"] for r in rows] == [{"stream_weights": "equal"}, {"stream_weights": "auto"}]
    assert rows[0]["reproduced"] is None and rows[1]["reproduced"] is True
    for r in rows:
        assert r["train"]["videos"] == 80 and 0 <= r["train"]["nmi"] <= 100
        assert (tmp_path / "w" / f"run-stream_weights={r['arm']['stream_weights']}" / FINAL).is_file()
    table = [line for line in res.read_text().splitlines() if line.startswith("| run ")]
    assert len(table) == 3 and "| - |" in table[1] and "| yes |" in table[2]
