"""The SeLaVi training loop on a small real AV-Digits cache (tiny preset, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from videolabel.data.loader import StepBatches
from videolabel.errors import VideolabelError
from videolabel.metrics import nmi
from videolabel.train.config import TrainConfig, make_config
from videolabel.train.dist import split_range
from videolabel.train.loop import Trainer, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(preset="tiny", num_clusters=10, num_heads=2, epochs=2, batch_size=16, workers=0,
                n_solves=3, align_proposals=2000, align_restarts=2, progress="none", eval_batch_size=32)
    base.update(kw)
    return make_config(None, base)


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videolabel", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def labels_of(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "labels.parquet").sort_values("video_id").reset_index(drop=True)


# ------------------------------------------------------------------ pure parts

def test_split_range_covers_without_overlap():
    for n in (0, 1, 7, 10, 101):
        for world in (1, 2, 3, 4):
            parts = [split_range(n, world, r) for r in range(world)]
            covered = [i for a, b in parts for i in range(a, b)]
            assert covered == list(range(n))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


def test_step_batches_visit_every_video_each_epoch_across_ranks():
    n_videos, batch, world = 23, 4, 2
    first = np.arange(n_videos) * 3
    counts = np.full(n_videos, 3)
    per_rank = [list(StepBatches(first, counts, batch, world, r, seed=5, start=0, total=3)) for r in range(world)]
    steps = max(1, -(-n_videos // (batch * world)))
    assert steps == 3 and all(len(b) == 3 for b in per_rank)
    seen = sorted({c // 3 for r in range(world) for b in per_rank[r] for c in b})
    assert seen == list(range(n_videos))  # padding repeats some videos, none is missing
    for b in per_rank[0]:
        assert all(first[c // 3] <= c < first[c // 3] + 3 for c in b)
    # resuming at step 2 yields exactly the tail of the uninterrupted order
    tail = list(StepBatches(first, counts, batch, world, 0, seed=5, start=2, total=3))
    assert tail == per_rank[0][2:]


def test_tiny_solves_follow_the_run_length():
    """The tiny recipe's 40 solves are for 30 epochs: a shorter run gets their density, unless a file or a
    flag (or the config.json of a resumed run) names ``n_solves``; the paper preset keeps its own count."""
    import math

    from videolabel.train.config import solves_for_epochs

    for epochs in range(1, 200):  # against the definition, brute force
        want = max(2, min(40, math.ceil(40 * epochs / 30)))
        assert solves_for_epochs(epochs, 40, 30) == want
    assert [solves_for_epochs(e, 1, 30) for e in (1, 60)] == [1, 1]  # never more than asked
    with pytest.raises(ValueError):
        solves_for_epochs(0, 40, 30)
    assert make_config(None, {"preset": "tiny"}).n_solves == 40
    assert [make_config(None, {"preset": "tiny", "epochs": e}).n_solves for e in (3, 6, 12, 60)] == [4, 8, 16, 40]
    assert make_config(None, {"preset": "tiny", "epochs": 12, "n_solves": "40"}).n_solves == 40  # --set wins
    assert make_config({"epochs": 6}, {"preset": "tiny"}).n_solves == 8  # epochs from a file
    assert make_config({"n_solves": 20}, {"preset": "tiny", "epochs": 12}).n_solves == 20  # a file's count wins
    assert make_config(None, {"epochs": 12}).n_solves == TrainConfig().n_solves  # paper: unchanged
    # a resumed run reads its saved config (config.json names n_solves): a 12-epoch run of before keeps 40
    saved = make_config(None, {"preset": "tiny", "epochs": 12, "n_solves": 40}).to_dict()
    assert make_config(saved, {"preset": "tiny", "epochs": 12}).n_solves == 40


def test_config_file_and_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  num_clusters: 7\n  epochs: 3\n")
    (tmp_path / "c.toml").write_text("num_heads = 4\nprior = 'gaussian'\n")
    from videolabel.train.config import read_config_file

    cfg = make_config(read_config_file(tmp_path / "c.yaml"), {"epochs": 5})
    assert (cfg.num_clusters, cfg.epochs) == (7, 5)
    cfg = make_config(read_config_file(tmp_path / "c.toml"), {})
    assert (cfg.num_heads, cfg.prior) == (4, "gaussian")
    with pytest.raises(VideolabelError, match="unknown setting"):
        make_config({"clusterz": 3}, {})
    with pytest.raises(VideolabelError, match="bad value"):
        make_config(None, {"epochs": "many"})
    with pytest.raises(VideolabelError, match="num_clusters"):
        make_config(None, {"num_clusters": 1})
    # the tiny recipe's nuisance augmentations, and their checks
    tiny = make_config(None, {"preset": "tiny"})
    assert (tiny.scale_jitter_max, tiny.blur, tiny.pixel_noise) == (64, 1.5, 0.5)
    assert (TrainConfig().scale_jitter_max, TrainConfig().blur, TrainConfig().pixel_noise) == (0, 0.0, 0.0)
    for bad in ({"scale_jitter_max": 40}, {"blur": -1}, {"pixel_noise": -0.5}):
        with pytest.raises(VideolabelError, match=next(iter(bad))):
            make_config(None, {"preset": "tiny", **bad})
    # they reach the training inputs only; the evaluation inputs keep the preset's geometry
    from videolabel.models import PRESETS
    from videolabel.train.build import make_inputs

    inp = make_inputs(PRESETS["tiny"], tiny, cuda=False)
    assert inp.video_train.preset.scale_jitter == (48, 64) and inp.video_eval.preset.scale_jitter == (48, 54)
    assert (inp.video_train.blur, inp.video_train.noise) == (1.5, 0.5)
    assert (inp.video_eval.blur, inp.video_eval.noise) == (0.0, 0.0)
    paper = make_inputs(PRESETS["paper"], make_config(None, {}), cuda=False)
    assert paper.video_train.preset == PRESETS["paper"] and (paper.video_train.blur, paper.video_train.noise) == (0, 0)
    # the polarity rule is part of what a picture is: training and inference alike
    skew = make_inputs(PRESETS["tiny"], make_config(None, {"preset": "tiny", "polarity": "skew"}), cuda=False)
    assert (skew.video_train.polarity, skew.video_eval.polarity) == ("skew", "skew")
    with pytest.raises(VideolabelError, match="polarity"):
        make_config(None, {"polarity": "flip"})
    auto = make_inputs(PRESETS["tiny"], make_config(None, {"preset": "tiny", "audio_level": "auto"}), cuda=False)
    assert (auto.audio_train.level, auto.audio_eval.level) == ("auto", "auto")
    # the tiny recipe levels per video (applied before the augmentation, whose own floor is then the fixed one);
    # the paper's inputs keep the fixed floor
    assert (inp.audio_train.level, inp.audio_eval.level) == ("video", "video")
    assert (paper.audio_train.level, paper.audio_eval.level) == ("fixed", "fixed")
    with pytest.raises(VideolabelError, match="audio_level"):
        make_config(None, {"audio_level": "loud"})
    # SpecAugment's masks per axis reach the training spectrograms only
    assert (inp.audio_train.freq_masks, inp.audio_train.time_masks, inp.audio_train.specaugment) == (1, 1, True)
    assert not inp.audio_eval.specaugment
    two = make_inputs(PRESETS["tiny"], make_config(None, {"preset": "tiny", "spec_masks": "2"}), cuda=False)
    assert (two.audio_train.freq_masks, two.audio_train.time_masks) == (2, 2)
    assert (paper.audio_train.freq_masks, paper.audio_train.time_masks) == (2, 2)
    with pytest.raises(VideolabelError, match="spec_masks"):
        make_config(None, {"spec_masks": -1})


# ------------------------------------------------------------------ training on AV-Digits

def test_tiny_towers_learn_the_digits_from_true_labels(avdigits_cache):
    """The supervised ceiling (benchmarks/ceiling.py) in small: the tiny preset's video tower, trained on
    the true digits of 4 speakers with the preset's recipe (inputs, augmentations, optimiser), names the
    digits of the 2 unseen speakers. Measured 0.56-0.74 over 3 seeds at 30 epochs (chance 0.10; 27 videos;
    0.30-0.41 at 15 epochs since the recipe blurs, adds noise and zooms: slower on the true labels of a tiny
    set); the bound sits far from both, so the CPU's floating-point path cannot decide it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ceiling_bench", ROOT / "benchmarks" / "ceiling.py")
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    from videolabel.data.dataset import ShardDataset

    cache, labels_csv = avdigits_cache
    lab = pd.read_csv(labels_csv).set_index("path").loc[ShardDataset(cache).videos["path"]]
    y, held = lab["label"].to_numpy(), np.isin(lab["speaker"].to_numpy(), ["theo", "yweweler"])
    cfg = make_config(None, {"preset": "tiny"})
    data = ceiling._load(cache, cfg)

    def subset(mask: np.ndarray) -> dict:
        remap = np.full(len(mask), -1)
        remap[mask] = np.arange(mask.sum())
        vid = data["vidx"].numpy()
        sel = np.flatnonzero(mask[vid])
        return {"video": data["video"][sel], "audio": data["audio"][sel],
                "vidx": torch.as_tensor(remap[vid[sel]]), "n_videos": int(mask.sum())}

    res = ceiling.train_tower(cfg, "video", subset(~held), y[~held], subset(held), y[held], 10, seed=0, epochs=30)
    assert res["heldout_acc"] > 0.4, res


def test_tiny_training_runs_end_to_end(avdigits_cache, tmp_path):
    """The tiny recipe trains, solves and logs end to end (label quality: benchmarks/avdigits.py)."""
    cache, labels_csv = avdigits_cache
    cfg = tiny_cfg(epochs=6, num_heads=2, n_solves=6, batch_size=16, align_proposals=2000)
    summary = train(cache, tmp_path / "run", cfg, gt=labels_csv, device="cpu")
    assert summary.finished and summary.steps == summary.total_steps
    got = labels_of(tmp_path / "run")
    gt = pd.read_csv(labels_csv)
    assert len(got.merge(gt, on="path")) == len(got) == len(gt)
    assert all(got[f"label_h{h}"].nunique() > 1 for h in range(2))  # not collapsed into one cluster
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    distill = [r for r in records if r.get("event") == "distill"]
    assert len(distill) == 1 and 0.0 <= distill[0]["heads_fit"] <= 1.0 and "nmi_gt_head0" in distill[0]
    # the final labels are the distilled ones, and the saved heads reproduce most of them
    assert distill[0]["heads_fit"] > 0.3  # measured 0.63-0.77 over seeds 0-2 (chance 0.1)
    # run folder contents
    run = tmp_path / "run"
    for name in ("config.json", "run.json", "metrics.jsonl", "model-final.pt", "checkpoint-last.pt"):
        assert (run / name).is_file(), name
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    solves = [r for r in records if r.get("event") == "solve"]
    assert len(solves) == summary.solves and "nmi_gt_head0" in solves[-1]
    assert solves and any("label_stability" in r for r in solves)
    for r in solves:  # both modalities: the towers' agreement and which one the labels follow
        assert 0.0 <= r["modality_agreement"] <= 1.0
        assert 0.0 <= r["labels_nmi_video"] <= 1.0 + 1e-9 and 0.0 <= r["labels_nmi_audio"] <= 1.0 + 1e-9
    trains = [r for r in records if r.get("event") == "train"]
    assert trains, "no train rows in metrics.jsonl"
    assert all({"loss", "lr", "clips_per_s", "data_wait"} <= set(r) for r in trains)


def test_kill_then_resume_matches_uninterrupted(avdigits_cache, tmp_path):
    cache, _ = avdigits_cache
    args = ["--preset", "tiny", "--clusters", "10", "--heads", "2", "--epochs", "4", "--batch-size", "16",
            "--workers", "0", "--deterministic", "--set", "n_solves=4", "--set", "align_proposals=500",
            "--progress", "none", "--device", "cpu"]
    full = cli("train", str(cache), "--out", str(tmp_path / "full"), *args)
    assert full.returncode == 0, full.stderr
    # interrupted: SIGKILL once the first checkpoint exists, then resume
    run = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "videolabel", "train", str(cache), "--out", str(run), *args],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (run / "checkpoint-last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model-final.pt").exists(), "the run finished before it could be killed"
    again = cli("train", str(cache), "--out", str(run), *args, "--resume")
    assert again.returncode == 0, again.stderr
    a, b = labels_of(tmp_path / "full"), labels_of(run)
    pd.testing.assert_frame_equal(a, b)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x).get("event") == "train"]
    assert steps == sorted(set(steps)), "metrics logged twice for the same step"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signal_checkpoints_and_resumes(avdigits_cache, tmp_path, sig):
    cache, _ = avdigits_cache
    run = tmp_path / "run"
    # Ctrl-C in a terminal signals the whole process group: the loader worker too (it must leave it alone)
    workers = "1" if sig == signal.SIGINT else "0"
    args = ["--preset", "tiny", "--clusters", "10", "--heads", "1", "--epochs", "30", "--batch-size", "8",
            "--workers", workers, "--set", "n_solves=2", "--set", "align_proposals=200", "--progress", "log",
            "--device", "cpu", "--set", "log_every=1"]
    proc = subprocess.Popen([sys.executable, "-m", "videolabel", "train", str(cache), "--out", str(run), *args],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").is_file() and '"event": "train"' in (run / "metrics.jsonl").read_text():
            break
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, (proc.returncode, err)
    assert "resume with --resume" in out and "Traceback" not in err
    if sig == signal.SIGINT:
        assert "finishing the step and writing a checkpoint" in err
    import torch

    state = torch.load(run / "checkpoint-last.pt", weights_only=True)
    assert 0 < state["step"] < state["total_steps"]
    assert not (run / "model-final.pt").exists()


# balanced: the spreads are summed over processes; concat: the fusion heads under DDP
@pytest.mark.parametrize("extra", [["--set", "balance_modalities=false"], ["--set", "balance_modalities=true"],
                                   ["--modalities", "concat"]], ids=["plain", "balanced", "concat"])
def test_two_process_gloo_matches_single_process_first_solve(avdigits_cache, tmp_path, extra):
    cache, _ = avdigits_cache
    args = ["--preset", "tiny", "--clusters", "10", "--heads", "2", "--epochs", "1", "--batch-size", "8",
            "--workers", "0", "--set", "n_solves=1", "--set", "align_proposals=500", "--progress", "none",
            "--device", "cpu", "--set", "eval_batch_size=7", *extra]
    # label_bn=batch (the tiny recipe's default) normalises each label-pass batch by its own statistics,
    # so rows depend on how they are batched; precise statistics are the same for any number of processes
    # final_labels=heads: the first solve's labels are compared (k-means on the final features would
    # compare two different trainings: one process steps on 8 clips, two on 16)
    args += ["--set", "label_bn=precise", "--set", "final_labels=heads"]
    one = cli("train", str(cache), "--out", str(tmp_path / "one"), *args)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "videolabel", "train", str(cache), "--out", str(tmp_path / "two"), *args],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = labels_of(tmp_path / "one"), labels_of(tmp_path / "two")
    assert len(a) == len(b) == a["video_id"].nunique()
    pd.testing.assert_frame_equal(a, b)
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["world_size"] == 2


def test_adaptive_prior_follows_the_predictions_after_its_warm_up(avdigits_cache, tmp_path):
    cache, _ = avdigits_cache
    cfg = tiny_cfg(epochs=2, n_solves=4, prior="adaptive", final_labels="heads")
    train(cache, tmp_path / "run", cfg, device="cpu")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    solves = [r for r in records if r.get("event") == "solve"]
    assert len(solves) == 4
    assert "prior_max_ratio" not in solves[0]  # the first quarter of the solves: uniform
    ratios = [r["prior_max_ratio"] for r in solves[1:]]
    assert all(1.0 <= x <= 100.0 for x in ratios)  # floor 0.1/K: at most (1 - 0.9 * 0.1) / 0.01 ~ 91
    assert labels_of(tmp_path / "run")["label_h0"].nunique() > 1


def test_concat_baseline_trains_fusion_heads_and_assigns(avdigits_cache, tmp_path):
    """Table 3(b)'s baseline: one head set on [f_v; f_a]; the per-modality heads are not used."""
    from videolabel.assign import AssignOptions, assign

    cache, _ = avdigits_cache
    run = tmp_path / "run"
    trainer = Trainer(cache, run, tiny_cfg(epochs=1, n_solves=2, num_heads=1, modalities="concat"), device="cpu")
    assert trainer.model.fusion and not trainer.aligned
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.run()
    assert summary.finished
    final = trainer.model.state_dict()
    assert not torch.equal(init["fused_heads.0.fc2.weight"], final["fused_heads.0.fc2.weight"])
    assert torch.equal(init["video_heads.0.fc2.weight"], final["video_heads.0.fc2.weight"])  # unused
    assert trainer.model.fused_heads[0].fc1.in_features == 2 * 128
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    solves = [r for r in records if r.get("event") == "solve"]
    assert len(solves) == 2 and "modality_agreement" not in solves[0]
    labels = labels_of(run)
    assert labels["label_h0"].nunique() > 1

    s = assign(run, tmp_path / "a.parquet", options=AssignOptions(workers=0), device="cpu")
    got = pd.read_parquet(tmp_path / "a.parquet")
    assert s.videos == len(got) == len(labels) and got["cluster"].between(0, 9).all()
    assert got["av_agree"].isna().all()  # no per-modality heads to agree
    with pytest.raises(VideolabelError, match="concatenated features"):
        assign(run, tmp_path / "v.parquet", options=AssignOptions(modality="visual", workers=0), device="cpu")


def test_clean_errors(avdigits_cache, tmp_path):
    cache, _ = avdigits_cache
    r = cli("train", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "--preset", "tiny")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "bad.yaml").write_text("epochs: [1, 2\n")
    r = cli("train", str(cache), "--out", str(tmp_path / "r"), "--config", str(tmp_path / "bad.yaml"))
    assert r.returncode == 2 and "cannot parse" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", str(cache), "--out", str(tmp_path / "r"), "--set", "num_clusters=1")
    assert r.returncode == 2 and "num_clusters" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", str(cache), "--out", str(tmp_path / "r"), "--resume", "--preset", "tiny")
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_resume_refuses_changed_config_and_cache(avdigits_cache, tmp_path):
    cache, _ = avdigits_cache
    run = tmp_path / "run"
    train(cache, run, tiny_cfg(epochs=1, n_solves=1, num_heads=1), device="cpu")
    with pytest.raises(VideolabelError, match="different config"):
        Trainer(cache, run, tiny_cfg(epochs=1, n_solves=1, num_heads=1, num_clusters=12), resume=True, device="cpu")
    with pytest.raises(VideolabelError, match="already holds a run"):
        Trainer(cache, run, tiny_cfg(epochs=1, n_solves=1, num_heads=1), device="cpu")
    # a cache with a different ingest config is refused
    other = tmp_path / "other_cache"
    import shutil

    shutil.copytree(cache, other)
    cfg_path = other / "config.json"
    data = json.loads(cfg_path.read_text())
    data["config"]["log_eps"] = 1e-3
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(VideolabelError, match="different ingest config"):
        Trainer(other, run, tiny_cfg(epochs=1, n_solves=1, num_heads=1), resume=True, device="cpu")


def test_modality_agreement_metrics_by_hand():
    from videolabel.train.solve import modality_agreement_metrics

    rng = np.random.default_rng(0)
    n, K = 400, 5
    labels = torch.as_tensor(rng.integers(0, K, (2, n)))
    video = labels.clone()  # the labels follow the video tower exactly
    audio = labels.clone()
    audio[:, : n // 2] = (audio[:, : n // 2] + 1) % K  # audio agrees on the second half only
    has_audio = torch.ones(n, dtype=torch.bool)
    has_audio[:100] = False  # rows without audio: left out of the audio figures
    m = modality_agreement_metrics(labels, torch.cat([video, audio]), has_audio)
    assert m["labels_nmi_video"] == pytest.approx(1.0)
    assert m["modality_agreement"] == pytest.approx(200 / 300)  # rows 100..199 disagree, 200..399 agree
    ok = has_audio.numpy()
    want = np.mean([nmi(labels[h].numpy()[ok], audio[h].numpy()[ok]) for h in range(2)])
    assert m["labels_nmi_audio"] == pytest.approx(want)
    assert modality_agreement_metrics(labels, torch.cat([video, audio]), torch.zeros(n, dtype=torch.bool)) == {}


def test_library_train_reports_progress_from_config(avdigits_cache, tmp_path, capfd):
    """``train()`` without a progress object follows ``cfg.progress`` (here: log lines on stderr)."""
    cache, _ = avdigits_cache
    s = train(cache, tmp_path / "run", tiny_cfg(epochs=1, n_solves=1, progress="log"), device="cpu")
    err = capfd.readouterr().err
    assert s.finished and f"train: step {s.total_steps}/{s.total_steps}" in err
    train(cache, tmp_path / "quiet", tiny_cfg(epochs=1, n_solves=1, progress="none"), device="cpu")
    assert "train:" not in capfd.readouterr().err


def test_one_writer_per_run_folder(avdigits_cache, tmp_path):
    """While a process trains into RUN/, a second `train --out RUN/` (fresh or --resume) fails with a one-line
    error naming the holder, and writes nothing; once the holder ends, the folder is free again."""
    from videolabel.fsutil import FolderLock

    cache, _ = avdigits_cache
    run = tmp_path / "run"
    first = Trainer(cache, run, tiny_cfg(epochs=1, n_solves=1, num_heads=1), device="cpu")
    with pytest.raises(VideolabelError, match=f"in use by pid {os.getpid()}"):
        Trainer(cache, run, tiny_cfg(epochs=1, n_solves=1, num_heads=1), device="cpu")
    assert first.run().finished  # the refused second Trainer changed nothing
    assert (run / "model-final.pt").is_file()
    lock = FolderLock(run, "run folder").acquire()  # another process's view: the CLI while we hold it
    try:
        r = cli("train", str(cache), "--out", str(run), "--resume", "--progress", "none", "--device", "cpu")
        assert r.returncode == 2 and "in use by pid" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        lock.release()
    Trainer(cache, run, tiny_cfg(epochs=1, n_solves=1, num_heads=1), resume=True, device="cpu").close()


def test_cli_resume_of_a_run_saved_before_a_setting_existed(avdigits_cache, tmp_path):
    """``train --resume`` with no flags on a run whose config predates ``stream_weights`` goes on as the run was
    trained (equal weights), where the recipe's new default (``auto``) would have refused it."""
    from videolabel.train.checkpoint import LAST, load_checkpoint, save_checkpoint

    cache, _ = avdigits_cache
    run = tmp_path / "run"
    train(cache, run, tiny_cfg(epochs=1, n_solves=1, num_heads=1, num_clusters=4, distill_epochs=2), device="cpu")
    state = load_checkpoint(run / LAST)
    old = {k: v for k, v in state["train_config"].items() if k != "stream_weights"}  # as saved before the setting
    save_checkpoint({**state, "train_config": old}, run / LAST)
    (run / "config.json").write_text(json.dumps({k: v for k, v in json.loads((run / "config.json").read_text()).items()
                                                 if k != "stream_weights"}))
    p = cli("train", str(cache), "--out", str(run), "--resume", "--device", "cpu", "--progress", "none")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    distill = [r for r in rows if r.get("event") == "distill"]
    assert distill and "stream_weights" not in distill[-1]  # finished with equal weights, as it was trained
    assert load_checkpoint(run / LAST)["train_config"]["stream_weights"] == "equal"
