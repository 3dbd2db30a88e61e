"""The run folder and the stop flag, without training."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from videolabel.errors import VideolabelError
from videolabel.train.config import TrainConfig, as_saved, diff_configs, make_config
from videolabel.train.rundir import RunFolder, check_resumable, hash_ids
from videolabel.train.signals import StopFlag


def test_run_folder_lifecycle(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rd = RunFolder(out, is_main=True)
    with pytest.raises(VideolabelError, match="nothing to resume"):
        rd.open(resume=True)
    rd.open(resume=False)
    try:
        with pytest.raises(VideolabelError, match="in use"):
            RunFolder(out, is_main=True).open(resume=False)  # one writer per folder
        rd.start(TrainConfig(), {"seed": 0})
        assert json.loads((out / "config.json").read_text()) == TrainConfig().to_dict()
        for step in (1, 2, 3):
            rd.log({"event": "train", "step": step})
        rd.drop_metrics_after(2)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2] and all("time" in r for r in rows)
        videos = pd.DataFrame({"video_id": ["a", "b"], "path": ["a.mp4", "b.mp4"]})
        path = rd.write_labels(videos, np.array([[0, 1], [1, 1]]))
        assert path is not None
        got = pd.read_parquet(path)
        assert list(got.columns) == ["video_id", "path", "label_h0", "label_h1"]
        assert got["label_h1"].tolist() == [1, 1]
        (out / "checkpoint-last.pt").write_bytes(b"")
        with pytest.raises(VideolabelError, match="already holds a run"):
            rd.start(TrainConfig(), {})
        assert rd.checkpoint_to_resume().name == "checkpoint-last.pt"
    finally:
        rd.close()
    RunFolder(out, is_main=True).open(resume=True)  # free again once closed
    assert not RunFolder(tmp_path / "other", is_main=False).write_labels(videos, np.zeros((1, 2), int))


def test_resume_checks() -> None:
    cfg = TrainConfig()
    state = {"train_config": cfg.to_dict(), "ingest_hash": "i", "videos_hash": hash_ids(["a", "b"]),
             "n_videos": 2, "world_size": 1}
    check_resumable(state, cfg, ingest_hash="i", videos_hash=hash_ids(["a", "b"]), videos=2, world_size=1)
    for kw, msg in ((dict(ingest_hash="j"), "ingest config"), (dict(videos_hash=hash_ids(["a"])), "videos changed"),
                    (dict(world_size=2), "process")):
        args = dict(ingest_hash="i", videos_hash=hash_ids(["a", "b"]), videos=2, world_size=1) | kw
        with pytest.raises(VideolabelError, match=msg):
            check_resumable(state, cfg, **args)
    with pytest.raises(VideolabelError, match="different config"):
        check_resumable(state, TrainConfig(lam=5.0), ingest_hash="i", videos_hash=state["videos_hash"], videos=2,
                        world_size=1)


def test_stop_flag_catches_sigterm_and_restores() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = StopFlag()
    stop.install()
    try:
        assert not stop.raised
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.raised
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_progress_modes_are_one_list() -> None:
    from videolabel.ingest.progress import PROGRESS_MODES as ingest_modes
    from videolabel.train.progress import PROGRESS_MODES

    assert ingest_modes == PROGRESS_MODES
    with pytest.raises(VideolabelError, match="progress"):
        TrainConfig(progress="bars").validate()
    with pytest.raises(VideolabelError, match="unknown preset"):
        TrainConfig(preset="huge").validate()


def test_resume_compares_a_setting_the_run_predates_at_its_default() -> None:
    """A run saved before a setting existed trained at the setting's dataclass default (the behaviour of
    then): resuming it under another value is refused, under the default it goes on."""
    tiny = make_config(None, {"preset": "tiny"})
    saved = {k: v for k, v in tiny.to_dict().items() if k != "spec_masks"}  # a tiny run of before spec_masks
    assert diff_configs(saved, tiny) == ["spec_masks: run has 2, asked 1 (the default then)"]
    assert diff_configs(saved, make_config(None, {"preset": "tiny", "spec_masks": 2})) == []
    assert diff_configs(tiny.to_dict(), tiny) == []
    state = {"train_config": saved, "ingest_hash": "i", "videos_hash": "v", "n_videos": 2, "world_size": 1}
    with pytest.raises(VideolabelError, match="spec_masks: run has 2, asked 1"):
        check_resumable(state, tiny, ingest_hash="i", videos_hash="v", videos=2, world_size=1)


def test_a_saved_run_reads_a_setting_it_predates_at_the_default_of_then() -> None:
    """``--resume`` reads the run's config.json through :func:`as_saved`: a setting the run predates takes its
    dataclass default (what the run trained with), not the preset's recipe, so the run resumes as it was."""
    tiny = make_config(None, {"preset": "tiny"})
    assert tiny.stream_weights == "auto" and TrainConfig().stream_weights == "equal"
    saved = {k: v for k, v in tiny.to_dict().items() if k not in ("stream_weights", "spec_masks")}
    assert make_config(saved).stream_weights == "auto"  # the recipe's: resuming would be refused
    cfg = make_config(as_saved(saved))
    assert (cfg.stream_weights, cfg.spec_masks, cfg.preset) == ("equal", 2, "tiny") and diff_configs(saved, cfg) == []
    assert make_config(as_saved(tiny.to_dict())) == tiny  # a run saved with every setting: itself
    assert make_config(as_saved(saved), {"stream_weights": "auto"}).stream_weights == "auto"  # a flag still wins
