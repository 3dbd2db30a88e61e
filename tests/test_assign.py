"""`videolabel assign` on a real (tiny) run: coverage, options, k-means, multi-process, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from videolabel.assign import AssignOptions, assign
from videolabel.assign_table import combine_modalities
from videolabel.config import IngestConfig
from videolabel.data.dataset import ShardDataset
from videolabel.errors import VideolabelError
from videolabel.ingest import run_ingest
from videolabel.train.config import make_config
from videolabel.train.loop import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _tiny_cfg(seed: int = 0):
    return make_config(None, dict(preset="tiny", num_clusters=6, num_heads=3, epochs=1, batch_size=16, workers=0,
                                  n_solves=1, align_proposals=200, progress="none", seed=seed,
                                  stream_weights="auto"))


@pytest.fixture(scope="module")
def tiny_run(avdigits_cache, tmp_path_factory):
    cache, labels = avdigits_cache
    run = tmp_path_factory.mktemp("assign") / "run"
    train(cache, run, _tiny_cfg(), device="cpu")
    return run, cache, labels


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videolabel", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)


def test_every_video_once_with_metadata(tiny_run, tmp_path):
    run, cache, _ = tiny_run
    out = tmp_path / "a.parquet"
    s = assign(run, out, options=AssignOptions(workers=0, head=1), device="cpu")
    df = pd.read_parquet(out)
    ds = ShardDataset(cache)
    assert len(df) == len(ds.videos) == s.videos
    assert df["video_id"].is_unique and set(df["video_id"]) == set(ds.videos["video_id"])
    assert (df["cluster"] == df["cluster_h1"]).all()
    for h in range(3):
        assert df[f"cluster_h{h}"].between(0, 5).all()
        assert df[f"prob_h{h}"].between(0, 1).all()
    assert (df["margin"] >= 0).all() and (df["confidence"] >= 1 / 6 - 1e-6).all()
    meta = json.loads(pq.read_schema(out).metadata[b"videolabel"])
    assert meta["num_clusters"] == 6 and meta["num_heads"] == 3 and meta["head"] == 1
    assert meta["method"] == "selavi" and len(meta["checkpoint_sha1"]) == 40
    assert s.clips == int(ds.videos["n_clips"].sum())


def test_long_layout_matches_wide(tiny_run, tmp_path):
    run, _, _ = tiny_run
    assign(run, tmp_path / "w.parquet", options=AssignOptions(workers=0), device="cpu")
    assign(run, tmp_path / "l.parquet", options=AssignOptions(workers=0, layout="long"), device="cpu")
    w = pd.read_parquet(tmp_path / "w.parquet").set_index("video_id")
    lg = pd.read_parquet(tmp_path / "l.parquet")
    assert len(lg) == 3 * len(w)
    for h in range(3):
        part = lg[lg["head"] == h].set_index("video_id")["cluster"]
        assert (part.loc[w.index] == w[f"cluster_h{h}"]).all()


def test_modality_combination_is_eq6():
    lv = torch.log_softmax(torch.randn(2, 5, 4), -1)
    la = torch.log_softmax(torch.randn(2, 5, 4), -1)
    has = torch.tensor([True, True, False, True, False])
    both = combine_modalities(lv, la, has, "both")
    assert torch.allclose(both[:, has], (lv[:, has] + la[:, has]) / 2)
    assert torch.allclose(both[:, ~has], lv[:, ~has])  # no audio: frames alone
    assert torch.equal(combine_modalities(lv, la, has, "visual"), lv)
    assert torch.equal(combine_modalities(lv, la, has, "audio"), la)


def _rms_centred(x: torch.Tensor) -> float:
    c = x.double() - x.double().mean(dim=1, keepdim=True)
    return float(c.square().mean().sqrt())


def test_balanced_combination_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    lv = torch.log_softmax(4.0 * torch.randn(2, 6, 5, generator=g), -1)  # a sharp video tower
    la = torch.log_softmax(0.5 * torch.randn(2, 6, 5, generator=g), -1)
    has = torch.tensor([True, True, False, True, True, True])
    before = (lv.clone(), la.clone(), has.clone())
    got = combine_modalities(lv, la, has, "both", balance=True)
    for h in range(2):
        sv, sa = _rms_centred(lv[h]), _rms_centred(la[h][has])  # audio spread over videos with audio only
        fv, fa = (sv + sa) / 2 / sv, (sv + sa) / 2 / sa
        want = (fv * lv[h] + fa * la[h]) / 2
        want[~has] = fv * lv[h][~has]
        assert torch.allclose(got[h], want.float(), atol=1e-5)
    # inputs untouched (balancing rescales copies), and balancing is what a sharp tower's plain mean ignores
    for was, now in zip(before, (lv, la, has)):
        assert torch.equal(was, now)
    assert not torch.allclose(combine_modalities(lv, la, has, "both"), got)


def test_balancing_stops_a_sharp_tower_deciding_alone():
    # video is very sharp on videos 1-2 and mildly prefers cluster 1 on video 0; audio mildly prefers 2
    lv = torch.log_softmax(torch.tensor([[[0.0, 3.0, 0.0], [8.0, 0.0, 0.0], [8.0, 0.0, 0.0]]]), -1)
    la = torch.log_softmax(torch.tensor([[[0.0, 0.0, 2.5], [0.0, 0.0, 2.5], [0.0, 0.0, 2.5]]]), -1)
    has = torch.ones(3, dtype=torch.bool)
    assert combine_modalities(lv, la, has, "both")[0, 0].argmax() == 1
    assert combine_modalities(lv, la, has, "both", balance=True)[0, 0].argmax() == 2


def test_modality_and_degrade_change_inputs(tiny_run, tmp_path, monkeypatch):
    run, _, _ = tiny_run
    import videolabel.inference as A  # infer() builds the inference inputs

    seen: dict[str, object] = {}
    real = A.VideoAugment

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    real_audio = A.AudioAugment

    def spy_audio(*args, **kw):
        seen["audio_level"] = kw.get("level")
        return real_audio(*args, **kw)

    monkeypatch.setattr(A, "VideoAugment", spy)
    monkeypatch.setattr(A, "AudioAugment", spy_audio)
    assign(run, tmp_path / "d.parquet", options=AssignOptions(workers=0, degrade=8), device="cpu")
    assert seen["degrade"] == 8
    # the picture settings of training reach inference: what the tower was trained to see
    trained = json.loads((run / "config.json").read_text())
    assert {k: seen[k] for k in ("norm", "view", "gray", "polarity")} == {
        "norm": trained["video_norm"], "view": trained["video_view"], "gray": trained["gray"],
        "polarity": trained["polarity"]}
    assert seen["audio_level"] == trained["audio_level"]
    monkeypatch.undo()
    base = pd.read_parquet(assign(run, tmp_path / "b.parquet", options=AssignOptions(workers=0), device="cpu").out)
    deg = pd.read_parquet(tmp_path / "d.parquet")
    assert not np.allclose(base["prob_h0"], deg["prob_h0"])  # degraded frames change the predictions
    vis = pd.read_parquet(assign(run, tmp_path / "v.parquet", options=AssignOptions(workers=0, modality="visual"),
                                 device="cpu").out)
    aud = pd.read_parquet(assign(run, tmp_path / "au.parquet", options=AssignOptions(workers=0, modality="audio"),
                                 device="cpu").out)
    # av_agree of the combined file says whether the single-modality predictions of its chosen head agree
    h = _meta(tmp_path / "b.parquet")["head"]
    agree = (vis[f"cluster_h{h}"] == aud[f"cluster_h{h}"]).to_numpy()
    assert (base["av_agree"].to_numpy(dtype=bool) == agree).all()
    # av_mismatch: the towers' disagreement in [0, 1] (1 - Bhattacharyya coefficient), NaN without audio
    mis = base["av_mismatch"].to_numpy()
    has = base["has_audio"].to_numpy(bool)
    assert np.isfinite(mis[has]).all() and ((mis[has] >= 0) & (mis[has] <= 1)).all()
    assert np.isnan(mis[~has]).all()
    meta = json.loads(pq.read_schema(tmp_path / "v.parquet").metadata[b"videolabel"])
    assert meta["modality"] == "visual"


def test_labelling_uses_the_weights_layout_of_training(tiny_run):
    """A run trained with ``channels_last`` (the default) is labelled with channels-last conv weights, as its
    training's label passes and final features were computed; the layout changes no cluster."""
    from videolabel.inference import infer, load_run

    run, cache, _ = tiny_run
    rm = load_run(run, torch.device("cpu"))
    assert rm.train_config.channels_last
    convs = [p for p in rm.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous() for p in convs)
    ds = ShardDataset(cache)
    videos = np.arange(len(ds.videos))
    got = infer(rm, ds, videos, AssignOptions(workers=0), torch.device("cpu"))
    for p in convs:
        p.data = p.data.contiguous()
    plain = infer(rm, ds, videos, AssignOptions(workers=0), torch.device("cpu"))
    for key in ("lv", "la", "fv", "fa"):
        assert torch.allclose(got[key], plain[key], atol=1e-4, rtol=1e-4), key
    top2 = plain["lv"].topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-3  # a near-tie may go either way under any rounding
    assert clear.any() and torch.equal(got["lv"].argmax(-1)[clear], plain["lv"].argmax(-1)[clear])


def test_kmeans_baselines_and_features(tiny_run, tmp_path):
    run, cache, _ = tiny_run
    s = assign(run, tmp_path / "k.parquet", options=AssignOptions(workers=0, method="kmeans", k=4,
                                                                 features=str(tmp_path / "f.parquet")), device="cpu")
    df = pd.read_parquet(tmp_path / "k.parquet")
    assert df["cluster"].between(0, 3).all() and df["video_id"].is_unique
    assert json.loads(pq.read_schema(tmp_path / "k.parquet").metadata[b"videolabel"])["method"] == "kmeans"
    feats = pd.read_parquet(tmp_path / "f.parquet")
    assert len(feats) == len(df) and len(feats["video_features"].iloc[0]) == 128
    s0 = assign(run, tmp_path / "k0.parquet", options=AssignOptions(workers=0, method="kmeans", random_init=True),
                device="cpu")
    assert s0.meta["method"] == "kmeans-random-init" and s.num_clusters == 4


def _assign_cli(run: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, pd.DataFrame]:
    """``videolabel assign RUN --out OUT ARGS`` on the CPU, in-process loader; (result, metadata, table)."""
    r = cli("assign", str(run), "--out", str(out), *args, "--workers", "0", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    return r, json.loads(pq.read_schema(out).metadata[b"videolabel"]), pd.read_parquet(out)


def test_kmeans_auto_k_scores_every_candidate_and_keeps_the_choice(tiny_run, tmp_path):
    run, _, _ = tiny_run
    r, meta, df = _assign_cli(run, tmp_path / "auto.parquet", "--method", "kmeans", "--k", "auto")
    scores = {int(k): v for k, v in meta["k_scores"].items()}
    from videolabel.cluster.choosek import AUTO_K, choose_k

    assert meta["k_choice"] == "auto" and set(scores) == {k for k in AUTO_K if k <= len(df) // 2}
    assert meta["num_clusters"] == choose_k(scores)  # the rule, applied to the stored scores
    assert df["cluster"].between(0, meta["num_clusters"] - 1).all()
    assert "k auto: frames-vs-sound information" in r.stdout and f"chose K = {meta['num_clusters']}" in r.stdout
    for bad, what in ((["--k", "auto", "--modality", "visual"], "--modality both"), (["--k", "many"], "--k")):
        r = cli("assign", str(run), "--out", str(tmp_path / "x.parquet"), "--method", "kmeans", *bad)
        assert r.returncode == 2 and what in r.stderr and "Traceback" not in r.stderr


def test_head_consensus_writes_the_medoid_head(tiny_run, tmp_path):
    from videolabel.cluster.select import consensus_head

    run, _, _ = tiny_run
    _, meta, df = _assign_cli(run, tmp_path / "c.parquet", "--head", "consensus")
    heads = np.stack([df[f"cluster_h{h}"].to_numpy() for h in range(meta["num_heads"])])
    assert meta["head_choice"] == "consensus" and meta["head"] == consensus_head(heads)
    assert (df["cluster"] == df[f"cluster_h{meta['head']}"]).all()
    r = cli("assign", str(run), "--out", str(tmp_path / "x.parquet"), "--head", "medoid")
    assert r.returncode == 2 and "--head must be auto, agreement, consensus" in r.stderr and "Traceback" not in r.stderr


def test_kmeans_in_the_shared_space(tiny_run, tmp_path):
    """--space shared: k-means on the canonical variates of the two towers' features (whitened to 64)."""
    run, _, _ = tiny_run
    _, meta, df = _assign_cli(run, tmp_path / "s.parquet", "--method", "kmeans", "--space", "shared")
    joint = json.loads(pq.read_schema(assign(run, tmp_path / "j.parquet", options=AssignOptions(
        workers=0, method="kmeans"), device="cpu").out).metadata[b"videolabel"])
    assert joint["space"] == "joint" and joint["pca"] == 32
    k = joint["num_clusters"]  # the run's K
    assert meta["space"] == "shared" and meta["pca"] == 64 and meta["num_clusters"] == k
    assert df["cluster"].between(0, k - 1).all() and df["cluster"].nunique() > 1
    for bad, what in ((["--space", "shared", "--modality", "audio"], "--modality both"),
                      (["--space", "common"], "--space must be"), (["--space", "shared", "--pca", "0"], "--pca")):
        r = cli("assign", str(run), "--out", str(tmp_path / "x.parquet"), "--method", "kmeans", *bad)
        assert r.returncode == 2 and what in r.stderr and "Traceback" not in r.stderr
    r = cli("assign", str(run), "--out", str(tmp_path / "x.parquet"), "--space", "shared")
    assert r.returncode == 2 and "--method kmeans" in r.stderr


def test_two_processes_cover_odd_count_once(tiny_run, tmp_path):
    run, cache, _ = tiny_run
    # a second cache, same ingest settings, with an odd number of videos: incremental labelling
    ds = ShardDataset(cache)
    src = Path(json.loads((run / "run.json").read_text())["cache"])
    videos_root = src.parent / "av" / "videos"
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(ds.videos["path"].tolist()[:7]) + "\n")
    cfg = ds.config
    run_ingest(videos_root, tmp_path / "odd", cfg, list_file=listing, workers=2, progress="none")
    # through the launcher (`--nproc 2`: videolabel.train.launcher runs torchrun; the ranks use gloo)
    r = subprocess.run([sys.executable, "-m", "videolabel", "assign", str(run), "--cache", str(tmp_path / "odd"),
                        "--out", str(tmp_path / "two.parquet"), "--workers", "0", "--device", "cpu", "--nproc", "2"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    two = pd.read_parquet(tmp_path / "two.parquet")
    one = pd.read_parquet(assign(run, tmp_path / "one.parquet", cache=tmp_path / "odd",
                                 options=AssignOptions(workers=0), device="cpu").out)
    assert len(two) == 7 and two["video_id"].is_unique
    pd.testing.assert_frame_equal(one[["video_id", "cluster"]], two[["video_id", "cluster"]])
    assert not list(tmp_path.glob(".two.parquet.part*"))


@pytest.fixture(scope="module")
def second_run(tiny_run, tmp_path_factory):
    """The tiny run's training again with another seed: a second candidate for run choice."""
    _, cache, _ = tiny_run
    run = tmp_path_factory.mktemp("assign-seed1") / "run"
    train(cache, run, _tiny_cfg(seed=1), device="cpu")
    return run


def _meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[b"videolabel"])


def test_agreement_head_is_the_one_whose_towers_agree_most(tiny_run, tmp_path):
    """``--head agreement``: the head scores are the NMI between the frames-only and the audio-only
    assignments of the same run (recomputed here from those files), and ``cluster`` is the best head."""
    from videolabel.metrics import nmi

    run, _, _ = tiny_run
    s = assign(run, tmp_path / "agree.parquet", options=AssignOptions(workers=0, head="agreement"), device="cpu")
    df, meta = pd.read_parquet(tmp_path / "agree.parquet"), _meta(tmp_path / "agree.parquet")
    v = pd.read_parquet(assign(run, tmp_path / "v.parquet", options=AssignOptions(workers=0, modality="visual")).out)
    a = pd.read_parquet(assign(run, tmp_path / "a.parquet", options=AssignOptions(workers=0, modality="audio")).out)
    has = df["has_audio"].to_numpy(bool)
    want = [nmi(v[f"cluster_h{h}"][has], a[f"cluster_h{h}"][has]) for h in range(3)]
    assert meta["head_av_nmi"] == pytest.approx(want, abs=1e-5)
    assert meta["head_choice"] == "agreement" and meta["head"] == int(np.argmax(want)) == s.meta["head"]
    assert "head_consensus_nmi" not in meta
    assert (df["cluster"] == df[f"cluster_h{meta['head']}"]).all()
    fixed = _meta(assign(run, tmp_path / "f.parquet", options=AssignOptions(workers=0, head="2")).out)
    assert fixed["head"] == 2 and fixed["head_choice"] == "fixed" and fixed["head_av_nmi"] == meta["head_av_nmi"]


def test_auto_head_follows_how_the_heads_were_labelled(tiny_run, tmp_path):
    """Default ``--head auto``: for a tiny run, whose heads hold k-means restarts of the final features, the
    head whose clusters have the lowest k-means objective in the run's final space (recomputed here by brute
    force from the features file); the A/V agreement rule for heads trained on self-labels (``final_labels:
    heads``)."""
    from videolabel.assign_table import head_rule
    from videolabel.inference import load_run
    from videolabel.train.distill import final_space_features, final_stream_weights

    run, _, _ = tiny_run
    r = cli("assign", str(run), "--out", str(tmp_path / "auto.parquet"), "--workers", "0",
            "--features", str(tmp_path / "f.parquet"))
    assert r.returncode == 0, r.stderr
    df, meta = pd.read_parquet(tmp_path / "auto.parquet"), _meta(tmp_path / "auto.parquet")
    f = pd.read_parquet(tmp_path / "f.parquet")
    assert (f["path"].to_numpy() == df["path"].to_numpy()).all()
    tc = load_run(run, torch.device("cpu")).train_config
    assert tc.final_labels == "features" and tc.final_space == "shared" and tc.stream_weights == "auto"
    fv = torch.from_numpy(np.stack(f["video_features"].to_numpy()).astype(np.float32))
    fa = torch.from_numpy(np.stack(f["audio_features"].to_numpy()).astype(np.float32))
    has = torch.from_numpy(f["has_audio"].to_numpy(bool).copy())
    weights = final_stream_weights(fv, fa, has, tc.num_clusters, tc.seed)  # as the run weighed its streams
    assert meta["stream_weights"] == [round(weights.video, 4), round(weights.audio, 4)]
    assert max(meta["stream_weights"]) == 1.0 and meta["stream_videos"] == int(has.sum())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    distill = [r for r in rows if r.get("event") == "distill"]
    assert len(distill) == 1 and max(distill[0]["stream_weights"]) == 1.0 and len(distill[0]["stream_seen"]) == 2
    x = final_space_features(fv, fa, has, tc.num_clusters, tc.final_space, weights).astype(np.float64)
    want = []
    for h in range(3):
        c = df[f"cluster_h{h}"].to_numpy()
        want.append(sum(float(((x[c == k] - x[c == k].mean(axis=0)) ** 2).sum()) for k in np.unique(c)))
    assert meta["head_choice"] == "objective" and meta["head_objective"] == pytest.approx(want, rel=1e-3, abs=1e-3)
    # heads with the same partition tie exactly; any rounding between the two computations must not decide
    assert want[meta["head"]] <= min(want) * (1 + 1e-6) and (df["cluster"] == df[f"cluster_h{meta['head']}"]).all()
    assert "head_consensus_nmi" not in meta
    assert f"cluster = head {meta['head']} (chosen by the lowest k-means objective" in r.stdout
    assert f"streams weighted: frames {weights.video:.2f}, sound {weights.audio:.2f}" in r.stdout
    assert (head_rule("auto", "features", 3), head_rule("auto", "heads", 3)) == ("objective", "agreement")
    assert head_rule("auto", "features", 1) == "agreement" and head_rule("consensus", "heads", 3) == "consensus"


def test_several_runs_write_the_most_agreeing_one(tiny_run, second_run, tmp_path):
    run, _, _ = tiny_run
    s = assign([run, second_run], tmp_path / "both.parquet", options=AssignOptions(workers=0), device="cpu")
    choice = s.meta["run_choice"]
    cands = choice["candidates"]
    assert [c["run"] for c in cands] == [str(run), str(second_run)]
    best = max(cands, key=lambda c: c["head_av_nmi"][c["head"]])
    assert choice["chosen"] == best["run"] and s.meta["head"] == best["head"]
    for c in cands:
        alone = _meta(assign(Path(c["run"]), tmp_path / "alone.parquet", options=AssignOptions(workers=0)).out)
        assert alone["head_av_nmi"] == c["head_av_nmi"] and alone["head"] == c["head"]
    alone = pd.read_parquet(assign(Path(best["run"]), tmp_path / "best.parquet", options=AssignOptions(workers=0)).out)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "both.parquet"), alone)
    # k-means: on the features of the run whose heads agree most
    km = assign([run, second_run], tmp_path / "km.parquet", options=AssignOptions(workers=0, method="kmeans"))
    assert km.meta["run_choice"]["chosen"] == best["run"] and km.meta["method"] == "kmeans"
    alone_km = assign(Path(best["run"]), tmp_path / "km1.parquet", options=AssignOptions(workers=0, method="kmeans"))
    pd.testing.assert_frame_equal(pd.read_parquet(km.out), pd.read_parquet(alone_km.out))
    # under torchrun: the same choice and rows
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "-m", "videolabel", "assign", str(run), str(second_run), "--out", str(tmp_path / "two.parquet"),
                        "--workers", "0", "--device", "cpu"], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"chose run {best['run']}" in r.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "two.parquet"), alone)
    assert _meta(tmp_path / "two.parquet")["run_choice"]["candidates"] == cands
    assert not list(tmp_path.glob(".two.parquet.part*"))


def test_several_runs_refused_cleanly(tiny_run, second_run, tmp_path):
    import shutil

    run, _, _ = tiny_run
    r = cli("assign", str(run), str(second_run), "--out", str(tmp_path / "x.parquet"), "--method", "kmeans",
            "--random-init")
    assert r.returncode == 2 and "give one run" in r.stderr and "Traceback" not in r.stderr
    moved = tmp_path / "moved"  # a copy of the second run that records another cache of the same settings
    shutil.copytree(second_run, moved)
    other = tmp_path / "cache-copy"
    shutil.copytree(json.loads((second_run / "run.json").read_text())["cache"], other)
    info = json.loads((moved / "run.json").read_text())
    (moved / "run.json").write_text(json.dumps({**info, "cache": str(other)}))
    r = cli("assign", str(run), str(moved), "--out", str(tmp_path / "x.parquet"), "--workers", "0")
    assert r.returncode == 2 and "different caches" in r.stderr and "Traceback" not in r.stderr
    r = cli("assign", str(run), "--out", str(tmp_path / "x.parquet"), "--head", "best")
    assert r.returncode == 2 and "--head must be auto, agreement, consensus, objective or a head index" in r.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_clean_errors(tiny_run, tmp_path):
    run, cache, _ = tiny_run
    r = cli("assign", str(tmp_path / "none"), "--out", str(tmp_path / "x.parquet"))
    assert r.returncode == 2 and "run folder not found" in r.stderr and "Traceback" not in r.stderr
    r = cli("assign", str(run), "--out", str(tmp_path / "x.parquet"), "--method", "magic")
    assert r.returncode == 2 and "--method" in r.stderr and "Traceback" not in r.stderr
    r = cli("assign", str(run), "--out", str(tmp_path / "x.parquet"), "--head", "9")
    assert r.returncode == 2 and "--head" in r.stderr
    other = tmp_path / "other"
    run_ingest(Path(json.loads((run / "run.json").read_text())["cache"]).parent / "av" / "videos", other,
               IngestConfig(frames=4, fps=8.0, height=32, width=32, clips_per_video=1), workers=2, progress="none",
               glob="0/*")
    r = cli("assign", str(run), "--cache", str(other), "--out", str(tmp_path / "x.parquet"))
    assert r.returncode == 2 and "different config" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(VideolabelError, match="random-init"):
        AssignOptions(random_init=True).validate()


def test_untrained_heads_are_refused(tiny_run, tmp_path):
    """A run trained on frames only (SeLa) has untrained audio heads: labelling from them is refused."""
    from videolabel.train.checkpoint import load_checkpoint, save_checkpoint

    run, cache, _ = tiny_run
    state = load_checkpoint(run / "model-final.pt")
    state["train_config"]["modalities"] = "video"
    video_run = tmp_path / "video-run"
    video_run.mkdir()
    save_checkpoint(state, video_run / "model-final.pt")
    for modality in ("both", "audio"):
        with pytest.raises(VideolabelError, match="only its visual heads"):
            assign(video_run, tmp_path / "x.parquet", cache=cache,
                   options=AssignOptions(modality=modality, workers=0))
    s = assign(video_run, tmp_path / "v.parquet", cache=cache, options=AssignOptions(modality="visual", workers=0))
    assert s.videos == len(ShardDataset(cache).videos)
    # k-means on pooled features stays allowed (random-init towers are a baseline in their own right)
    assign(video_run, tmp_path / "k.parquet", cache=cache, options=AssignOptions(method="kmeans", workers=0))


def test_silent_soundtracks_are_flagged_and_speech_is_not(tiny_run, tmp_path, ffmpeg_bin):
    """``audio_db`` / ``silent`` / ``sound_flag`` on real files: the same AV-Digits picture with its spoken
    digit, with a silent soundtrack (digital zeros), with pink noise, and with no audio track at all."""
    run, cache, labels = tiny_run
    src = sorted((labels.parent / "videos").rglob("*.mp4"))[:2]
    folder = tmp_path / "videos"
    folder.mkdir()
    rows = []
    for i, s in enumerate(src):
        for kind, extra in (("speech", []), ("silent", ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono"]),
                            ("noise", ["-f", "lavfi", "-i", "anoisesrc=d=2:c=pink:a=0.05:r=16000"]),
                            ("none", None)):
            out = folder / f"{kind}{i}.mp4"
            cmd = [ffmpeg_bin, "-v", "error", "-y", "-i", str(s)]
            if extra is None:
                cmd += ["-map", "0:v:0", "-c:v", "copy", "-an"]
            elif extra:
                cmd += [*extra, "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-t", "2", "-shortest"]
            else:
                cmd += ["-c", "copy"]
            subprocess.run([*cmd, str(out)], check=True, capture_output=True, timeout=60)
            rows.append((out.name, kind))
    ours = tmp_path / "cache"
    run_ingest(folder, ours, ShardDataset(cache).config, workers=1, progress="none")
    r = cli("assign", str(run), "--cache", str(ours), "--out", str(tmp_path / "s.parquet"), "--workers", "0")
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr
    df = pd.read_parquet(tmp_path / "s.parquet").set_index("path")
    kind = dict(rows)
    for path, row in df.iterrows():
        k = kind[Path(path).name]
        if k == "none":
            assert not row["has_audio"] and np.isnan(row["audio_db"])
            assert pd.isna(row["silent"]) and pd.isna(row["sound_flag"])
        elif k == "silent":
            assert row["audio_db"] < -90 and row["silent"] and row["sound_flag"]
        else:  # speech (AV-Digits: -30 dBFS or louder) and the pink noise (-26 dBFS): heard, not silent
            assert row["audio_db"] > -45 and not row["silent"]
            assert row["sound_flag"] == (row["av_mismatch"] >= 0.5)
    meta = _meta(tmp_path / "s.parquet")
    assert {k: meta["sound"][k] for k in ("silence_db", "no_audio", "silent", "flagged")} == {
        "silence_db": -60.0, "no_audio": 2, "silent": 2, "flagged": int(df["sound_flag"].sum())}
    assert "2 of them silent" in r.stdout and "2 without an audio track" in r.stdout
    # the tiny recipe levels the sound (audio_level=video): the loud pink noise's floor was raised, and said so
    assert meta["sound"]["floors_raised"] == 2 and df["floor_raised"].sum() == 2
    assert "sound levelled (audio_level=video): gain +" in r.stdout
    assert "2 video(s) over a loud background had their floor raised" in r.stdout
    assert meta["sound"]["level_source"] == "ingest" and "measured now" not in r.stdout
    # a cache ingested before ingest stored the level statistics: measured, the same labels, and the user is told
    import shutil

    import pyarrow.parquet as pq

    old = tmp_path / "old-cache"
    shutil.copytree(ours, old)
    for m in (old / "shards").glob("*.videos.parquet"):
        pq.write_table(pq.read_table(m).drop_columns(["level_peak", "level_background"]), m)
    r2 = cli("assign", str(run), "--cache", str(old), "--out", str(tmp_path / "o.parquet"), "--workers", "0")
    assert r2.returncode == 0, r2.stderr
    assert "measured now" in r2.stdout and "--overwrite" in r2.stdout
    assert _meta(tmp_path / "o.parquet")["sound"]["level_source"] == "measured"
    again = pd.read_parquet(tmp_path / "o.parquet").set_index("path")
    assert again["floor_raised"].equals(df["floor_raised"]) and again["cluster"].equals(df["cluster"])
    # k-means labels have no towers to compare: the flag is silence alone
    r = cli("assign", str(run), "--cache", str(ours), "--out", str(tmp_path / "k.parquet"), "--workers", "0",
            "--method", "kmeans", "--k", "3")
    assert r.returncode == 0, r.stderr
    km = pd.read_parquet(tmp_path / "k.parquet").set_index("path")
    assert (km["sound_flag"].fillna(False) == km["silent"].fillna(False)).all() and int(km["silent"].sum()) == 2
    assert "sound: 2 video(s) silent" in r.stdout

    # a run that levels the sound (audio_level=video) says which videos' backgrounds it lowered: the pink
    # noise's (-26 dBFS, every band above the fixed floor), not the speech's, nor a silent or missing track's
    from dataclasses import replace

    from videolabel.assign_table import build_table
    from videolabel.data.levels import levels_for
    from videolabel.inference import infer, load_run

    rm = load_run(run, torch.device("cpu"))
    rm = replace(rm, train_config=replace(rm.train_config, audio_level="video"))
    ds = ShardDataset(ours)
    full = infer(rm, ds, np.arange(len(ds.videos)), AssignOptions(workers=0), torch.device("cpu"))
    table, meta = build_table(rm, ds, full, AssignOptions(workers=0))
    raised = dict(zip(table["path"].map(lambda p: Path(p).name), table["floor_raised"]))
    assert raised == {name: k == "noise" for name, k in rows}, raised
    # the gain is the collection's: here the median soundtrack is a quiet noise, so the collection is raised
    assert meta["sound"]["floors_raised"] == 2
    assert meta["sound"]["level_gain_db"] == levels_for(ds, "video", rm.train_config.log_floor).gain_db > 10.0
