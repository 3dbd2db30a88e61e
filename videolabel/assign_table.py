"""The assignment table of ``videolabel assign``: clusters, confidences and margins per head, and the head choice.

:func:`build_table` turns :func:`~videolabel.inference.infer`'s outputs (the trained heads combined by
eq. 6, :func:`combine_modalities`; or k-means on the pooled features) into the rows and metadata that
:func:`~videolabel.assignments.write_assignments` writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

import videolabel
from videolabel.assign_options import AssignOptions
from videolabel.cluster.combine import modality_log_probs
from videolabel.cluster.select import MISMATCH_FLAG, modality_mismatch
from videolabel.data.dataset import ShardDataset
from videolabel.fsutil import write_parquet_atomic, write_user_file
from videolabel.inference import RunModel
from videolabel.loudness import SILENCE_DB

__all__ = ["AUTO_K_RESTARTS", "build_table", "combine_modalities", "head_rule", "kmeans_auto_k", "kmeans_space",
           "pick_head", "sound_columns",
           "write_features"]

#: ``--k auto``: k-means seeds per candidate K (the restart whose modalities agree most is kept)
AUTO_K_RESTARTS = 3


def combine_modalities(lv: torch.Tensor, la: torch.Tensor, has_audio: torch.Tensor, modality: str, *,
                       balance: bool = False) -> torch.Tensor:
    """Eq. 6 for [H, n, K] log-probabilities: the modalities' mean, frames alone where there is no audio.

    ``balance`` (the run's ``balance_modalities``): each head's two modalities are first rescaled to the
    same spread over the videos being labelled (:func:`~videolabel.cluster.combine.balance_scales`), as
    the training's label solves did, so the sharper tower does not decide the assignment alone."""
    if modality == "visual":
        return lv
    if modality == "audio":
        return la
    return torch.stack([modality_log_probs(lv[h], la[h], has_audio, "both", balance=balance)
                        for h in range(lv.shape[0])])


def build_table(run: RunModel, ds: ShardDataset, full: dict[str, torch.Tensor], opts: AssignOptions, *,
                 pick: HeadPick | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The assignment table and its metadata; ``pick``: :func:`pick_head`'s result when already known."""
    vids = ds.videos
    has_audio = torch.as_tensor(vids["has_audio"].to_numpy(bool).copy())
    base = pd.DataFrame({"video_id": vids["video_id"].to_numpy(), "path": vids["path"].to_numpy()})
    meta: dict[str, Any] = {
        "videolabel": videolabel.__version__, "run_id": run.run_id, "checkpoint": str(run.checkpoint),
        "checkpoint_sha1": run.checkpoint_sha1, "modality": opts.modality, "degrade": opts.degrade,
        "clips": opts.clips, "layout": opts.layout, "ingest_hash": run.ingest_hash,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if opts.method == "kmeans":
        from videolabel.errors import VideolabelError
        from videolabel.kmeans import assign_confidence, kmeans

        if opts.space == "shared" and run.train_config.modalities not in ("both", "concat"):
            raise VideolabelError(f"--space shared needs both towers trained; this run trained "
                                  f"modalities={run.train_config.modalities}")

        if opts.k == "auto":
            km, k, k_scores, feats = kmeans_auto_k(full, has_audio, opts)
            meta.update(k_choice="auto", k_scores={str(kk): round(v, 6) for kk, v in k_scores.items()})
        else:
            k = int(opts.k) if opts.k is not None else run.train_config.num_clusters
            feats = kmeans_space(full, has_audio, opts, k)
            km = kmeans(feats, k, seed=opts.seed)
        prob, margin = assign_confidence(feats, km.centroids)
        clusters = np.asarray(km.labels)[None, :]
        probs = np.asarray(prob, dtype=np.float32)[None, :]
        margins = np.asarray(margin, dtype=np.float32)
        agree = None
        mismatch = None
        head = 0
        meta.update(method="kmeans-random-init" if opts.random_init else "kmeans", num_clusters=int(k),
                    num_heads=1, head=0, pca=opts.pca, space=opts.space)
    else:
        if "lf" in full:  # modalities=concat: the fusion heads
            logp = full["lf"]
        else:
            logp = combine_modalities(full["lv"], full["la"], has_audio, opts.modality,
                                      balance=run.train_config.balance_modalities)  # [H, n, K]
        p = torch.softmax(logp, dim=-1)  # renormalised combined distribution
        top2 = p.topk(min(2, p.shape[-1]), dim=-1)
        clusters = top2.indices[..., 0].numpy()
        probs = top2.values[..., 0].numpy().astype(np.float32)
        head, scores, rule, rule_scores = pick if pick is not None else pick_head(run, full, has_audio, opts.head,
                                                                                  opts.modality)
        second = top2.values[head, :, 1] if p.shape[-1] > 1 else torch.zeros_like(top2.values[head, :, 0])
        margins = (top2.values[head, :, 0] - second).numpy().astype(np.float32)
        if "lf" in full:
            agree, mismatch = None, None
        else:
            av = full["lv"][head].argmax(-1) == full["la"][head].argmax(-1)
            agree = np.where(has_audio.numpy(), av.numpy(), cast(Any, None))  # None: no audio to agree with
            mismatch = modality_mismatch(full["lv"][head], full["la"][head]).numpy().astype(np.float32)
            mismatch[~has_audio.numpy()] = np.nan  # no sound to compare with
        meta.update(method="selavi", num_clusters=run.train_config.num_clusters,
                    num_heads=run.train_config.num_heads, head=head,
                    head_choice=rule, head_av_nmi=scores)
        if rule_scores is not None:
            meta.update(rule_scores)
    meta["name"] = opts.name or (meta["method"] if opts.modality == "both" else f"{meta['method']}-{opts.modality}")
    if opts.degrade > 1 and not opts.name:
        meta["name"] += f"-degrade{opts.degrade}"
    H = clusters.shape[0]
    if opts.layout == "long":
        rows = []
        for h in range(H):
            part = base.copy()
            part["head"] = h
            part["cluster"] = clusters[h].astype(np.int64)
            part["prob"] = probs[h]
            rows.append(part)
        return pd.concat(rows, ignore_index=True), meta
    table = base.copy()
    table["cluster"] = clusters[head].astype(np.int64)
    table["confidence"] = probs[head]
    table["margin"] = margins
    for h in range(H):
        table[f"cluster_h{h}"] = clusters[h].astype(np.int64)
        table[f"prob_h{h}"] = probs[h]
    table["has_audio"] = has_audio.numpy()
    table["av_agree"] = pd.array(agree, dtype="boolean") if agree is not None else pd.array([pd.NA] * len(table),
                                                                                            dtype="boolean")
    table["av_mismatch"] = mismatch if mismatch is not None else np.full(len(table), np.nan, dtype=np.float32)
    sound_columns(table, full, has_audio.numpy())
    meta["sound"] = {"silence_db": SILENCE_DB, "no_audio": int((~has_audio).sum()),
                     "silent": int(table["silent"].sum()), "flagged": int(table["sound_flag"].sum())}
    if "floor_raised" in table.columns:  # the run levels the sound (audio_level="video")
        meta["sound"].update(level_gain_db=float(full["level_gain_db"][0]) if len(table) else 0.0,
                             floors_raised=int(table["floor_raised"].sum()),
                             level_source="measured" if len(table) and bool(full["level_measured"][0]) else "ingest")
    return table, meta


def sound_columns(table: pd.DataFrame, full: dict[str, torch.Tensor], has_audio: np.ndarray) -> None:
    """Add ``audio_db`` (the loudest spectrogram frame of the video, dB re full scale; empty without an
    audio track), ``silent`` (``audio_db`` below :data:`~videolabel.loudness.SILENCE_DB`) and
    ``sound_flag`` (review the sound: silent, or ``av_mismatch`` at or above
    :data:`~videolabel.cluster.select.MISMATCH_FLAG`; empty without an audio track) to ``table``, and for a run
    that levels the sound ``floor_raised`` (a band's floor raised to the video's loud background,
    :mod:`videolabel.data.levels`)."""
    level = np.where(has_audio, full["audio_db"].numpy(), np.nan).astype(np.float32)
    silent = level < SILENCE_DB
    mismatch = table["av_mismatch"].to_numpy(np.float32)
    flag = silent | (np.nan_to_num(mismatch, nan=0.0) >= MISMATCH_FLAG)
    table["audio_db"] = level
    table["silent"] = pd.array(np.where(has_audio, silent, cast(Any, None)), dtype="boolean")
    table["sound_flag"] = pd.array(np.where(has_audio, flag, cast(Any, None)), dtype="boolean")
    if "floor_raised" in full:  # audio_level="video": the video's background was above the fixed floor
        table["floor_raised"] = full["floor_raised"].numpy().astype(bool)


def kmeans_space(full: dict[str, torch.Tensor], has_audio: torch.Tensor, opts: AssignOptions, k: int) -> np.ndarray:
    """The features k-means clusters into ``k``: ``opts.space`` "joint" (each modality whitened to ``opts.pca``
    dims) or "shared" (each modality's :func:`~videolabel.cluster.cca.shared_dims` ``(k)`` canonical variates
    with the other, after whitening to ``opts.pca``), L2-normalised per modality and concatenated."""
    from videolabel.cluster.cca import shared_dims
    from videolabel.errors import VideolabelError
    from videolabel.kmeans import pooled_features

    pca = int(opts.pca or 0)
    if opts.space == "shared":
        if int(has_audio.sum()) < 3:
            raise VideolabelError(f"--space shared compares the frames with the sound: {int(has_audio.sum())} of "
                                  f"{len(has_audio)} videos have audio (at least 3 needed)")
        return pooled_features(full["fv"], full["fa"], has_audio, opts.modality, pca=pca, shared=shared_dims(k))
    return pooled_features(full["fv"], full["fa"], has_audio, opts.modality, pca=pca)


def kmeans_auto_k(full: dict[str, torch.Tensor], has_audio: torch.Tensor, opts: AssignOptions
                  ) -> tuple[Any, int, dict[int, float], np.ndarray]:
    """``--k auto``: k-means at every candidate K (:data:`~videolabel.cluster.choosek.AUTO_K` up to half the
    videos) in :func:`kmeans_space`, ``AUTO_K_RESTARTS`` seeds each, scored by the frames' and the sound's
    agreement about each partition (:func:`~videolabel.cluster.choosek.cross_modal_information`); K by
    :func:`~videolabel.cluster.choosek.choose_k`, and the best-scoring restart at that K. Returns
    (its k-means result, K, the best score per K, the features it clustered)."""
    from videolabel.cluster.cca import shared_dims
    from videolabel.cluster.choosek import AUTO_K, choose_k, cross_modal_information
    from videolabel.errors import VideolabelError
    from videolabel.kmeans import kmeans, pooled_features

    ok = has_audio.numpy().astype(bool)
    n = int(ok.sum())
    cands = [k for k in AUTO_K if k <= n // 2]
    if not cands:
        raise VideolabelError(f"--k auto needs videos with sound to compare with their frames: {n} of "
                              f"{len(ok)} have audio (at least {2 * AUTO_K[0]} needed)")
    pca = int(opts.pca or 0)
    xv = torch.from_numpy(pooled_features(full["fv"], full["fa"], has_audio, "visual", pca=pca)[ok])
    xa = torch.from_numpy(pooled_features(full["fv"], full["fa"], has_audio, "audio", pca=pca)[ok])
    best: dict[int, tuple[float, Any, np.ndarray]] = {}
    spaces: dict[int, np.ndarray] = {}  # the joint space does not depend on K: built once
    for k in cands:
        key = shared_dims(k) if opts.space == "shared" else 0
        if key not in spaces:
            spaces[key] = kmeans_space(full, has_audio, opts, k)
        feats = spaces[key]
        for r in range(AUTO_K_RESTARTS):
            km = kmeans(feats, k, seed=opts.seed + r)
            score = cross_modal_information(xv, xa, torch.as_tensor(np.asarray(km.labels)[ok], dtype=torch.int64),
                                            k, seed=opts.seed)
            if k not in best or score > best[k][0]:
                best[k] = (score, km, feats)
    scores = {k: v[0] for k, v in best.items()}
    k = choose_k(scores)
    return best[k][1], k, scores, best[k][2]


#: pick_head's result: head, A/V agreement per head, rule, the rule's per-head scores under their metadata key
#: (``head_objective`` or ``head_consensus_nmi``; None for the other rules)
HeadPick = tuple[int, list[float] | None, str, dict[str, list[float]] | None]


def head_rule(head: str, final_labels: str, num_heads: int) -> str:
    """The label-free rule that ``--head`` names: "agreement", "consensus" or "objective" as given; "auto"
    resolves to "objective" where the run's heads hold k-means restarts of its final features
    (``final_labels: features``, several heads) and to "agreement" where they were trained on self-labels
    (docs/method.md, "The head choice: the k-means objective")."""
    if head != "auto":
        return head
    return "objective" if final_labels == "features" and num_heads > 1 else "agreement"


def pick_head(run: RunModel, full: dict[str, torch.Tensor], has_audio: torch.Tensor, head: int | str,
              modality: str = "both") -> HeadPick:
    """The head that fills ``cluster``, every head's audio-visual agreement score (None where the run has no
    two trained towers to compare: ``modalities`` concat, video or audio), the rule that chose it
    ("agreement", "consensus", "objective" or "fixed" for an index) and the rule's per-head scores.

    "agreement" picks the head whose frames-only and audio-only clusters agree most on the videos being
    labelled (:func:`~videolabel.cluster.select.choose_head`), head 0 where there is nothing to compare;
    "consensus" the head whose clusters (of ``modality``) agree most with the other heads'
    (:func:`~videolabel.cluster.select.consensus_head`); "objective" the head whose clusters have the lowest
    k-means objective in the run's final space, rebuilt on the videos being labelled
    (:func:`~videolabel.cluster.select.objective_head`,
    :func:`~videolabel.train.distill.final_space_features`); "auto" the rule that fits the run
    (:func:`head_rule`)."""
    from videolabel.cluster.select import (
        audio_visual_nmi,
        choose_head,
        consensus_scores,
        kmeans_objective,
        objective_head,
    )

    scores = None
    if run.train_config.modalities == "both" and "lv" in full:
        scores = audio_visual_nmi(full["lv"].argmax(-1).numpy(), full["la"].argmax(-1).numpy(), has_audio.numpy())
        scores = [round(x, 6) for x in scores]
    if not isinstance(head, str):
        return int(head), scores, "fixed", None
    rule = head_rule(head, run.train_config.final_labels, run.train_config.num_heads)
    if rule in ("consensus", "objective"):
        logp = full["lf"] if "lf" in full else combine_modalities(
            full["lv"], full["la"], has_audio, modality, balance=run.train_config.balance_modalities)
        clusters = logp.argmax(-1).numpy()
        if rule == "consensus":
            raw = consensus_scores(clusters)
            return int(np.argmax(raw)), scores, rule, {"head_consensus_nmi": [round(x, 6) for x in raw]}
        from videolabel.train.distill import final_space_features, final_stream_weights

        tc = run.train_config
        weights = None
        if tc.stream_weights == "auto" and tc.modalities in ("both", "concat"):  # as the run weighed them
            weights = final_stream_weights(full["fv"], full["fa"], has_audio, tc.num_clusters, tc.seed)
        x = final_space_features(full["fv"], full["fa"], has_audio, tc.num_clusters, tc.final_space, weights)
        obj = kmeans_objective(x, clusters)
        said: dict[str, Any] = {"head_objective": [round(v, 4) for v in obj]}
        if weights is not None:
            said.update(weights.record())
        return objective_head(x, clusters), scores, rule, said
    return (choose_head(scores) if scores is not None else 0), scores, rule, None


def write_features(ds: ShardDataset, full: dict[str, torch.Tensor], opts: AssignOptions) -> str:
    path = Path(opts.features)  # type: ignore[arg-type]
    vids = ds.videos
    table = pa.table({
        "video_id": pa.array(vids["video_id"].to_numpy()),
        "path": pa.array(vids["path"].to_numpy()),
        "has_audio": pa.array(vids["has_audio"].to_numpy(bool)),
        "video_features": pa.FixedSizeListArray.from_arrays(pa.array(full["fv"].numpy().reshape(-1)),
                                                            full["fv"].shape[1]),
        "audio_features": pa.FixedSizeListArray.from_arrays(pa.array(full["fa"].numpy().reshape(-1)),
                                                            full["fa"].shape[1]),
    })
    return str(write_user_file(lambda p: write_parquet_atomic(table, p), path))
