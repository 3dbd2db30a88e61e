"""Assignments: every video of a cache labelled by a trained run (or by k-means baselines), as Parquet.

One row per video (``layout="wide"``) or per video and head (``"long"``). The clips of a video are
treated as augmentations: their log-probabilities are averaged, and the two modalities are combined as
in the paper's eq. 6 (mean of log P; a video without audio is labelled by its frames alone), after
rescaling both to the same spread when the run trained with ``balance_modalities``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

import videolabel
from videolabel.assignments import LAYOUTS, write_assignments
from videolabel.cluster.combine import modality_log_probs
from videolabel.data.augment import AudioAugment, VideoAugment
from videolabel.data.dataset import ShardDataset
from videolabel.data.loader import ListBatches, make_loader
from videolabel.errors import VideolabelError, first_line
from videolabel.fsutil import write_parquet_atomic, write_user_file
from videolabel.models import build_model
from videolabel.models.selavi import SeLaVi
from videolabel.train import dist as D
from videolabel.train.checkpoint import (
    ASSIGN_KEYS,
    file_sha1,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    train_config_of,
)
from videolabel.train.config import TrainConfig

METHODS = ("selavi", "kmeans")
#: per-head log-probabilities [H, n, K] in :func:`infer`'s result (the rest are per-video rows)
LOG_PROB_KEYS = ("lv", "la", "lf")
MODALITIES = ("both", "audio", "visual")


@dataclass
class AssignOptions:
    method: str = "selavi"  # "selavi" (the heads) or "kmeans" (k-means on pooled encoder features)
    modality: str = "both"  # "both", "audio" or "visual"
    head: int | str = "auto"  # head that fills the top-level `cluster` column, or "auto" (see choose_head)
    clips: int | None = None  # clips per video to average (None: all cached clips)
    degrade: int = 1  # nearest down- then up-sampling of the frames by this factor (paper Fig. 2)
    layout: str = "wide"
    random_init: bool = False  # k-means on a randomly initialised encoder (paper Table 5 baseline)
    k: int | None = None  # k-means k (default: the run's K)
    pca: int = 32  # k-means: PCA-whiten each modality's features to this many dims first (0 = L2 only)
    batch_size: int = 64
    workers: int = 4
    seed: int = 0
    features: str | None = None  # also write pooled 512-d features to this Parquet file
    name: str | None = None  # short name for comparison tables

    def validate(self) -> "AssignOptions":
        if self.method not in METHODS:
            raise VideolabelError(f"--method must be one of {', '.join(METHODS)}")
        if self.modality not in MODALITIES:
            raise VideolabelError(f"--modality must be one of {', '.join(MODALITIES)}")
        if self.layout not in LAYOUTS:
            raise VideolabelError(f"--layout must be one of {', '.join(LAYOUTS)}")
        if self.degrade < 1:
            raise VideolabelError("--degrade must be >= 1")
        if self.clips is not None and self.clips < 1:
            raise VideolabelError("--clips must be >= 1")
        if self.random_init and self.method != "kmeans":
            raise VideolabelError("--random-init only makes sense with --method kmeans")
        if self.batch_size < 1:
            raise VideolabelError("--batch-size must be >= 1")
        if self.workers < 0:
            raise VideolabelError("--workers must be >= 0")
        if self.k is not None and self.k < 1:
            raise VideolabelError(f"--k must be >= 1, not {self.k}")
        if self.k is not None and self.method != "kmeans":
            raise VideolabelError("--k only makes sense with --method kmeans (the run's heads have the run's K)")
        if self.pca < 0:
            raise VideolabelError("--pca must be >= 0")
        if self.head != "auto":
            try:
                self.head = int(self.head)
            except (TypeError, ValueError):
                raise VideolabelError(f"--head must be auto or a head index, got {self.head!r}") from None
        return self


@dataclass
class AssignSummary:
    out: str
    videos: int
    clips: int
    seconds: float
    clips_per_s: float
    method: str
    num_clusters: int
    num_heads: int
    clusters_used: int
    features: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunModel:
    """A trained (or freshly initialised) model with the settings it was trained under."""

    model: SeLaVi
    train_config: TrainConfig
    ingest_config: dict[str, Any]
    ingest_hash: str
    checkpoint: Path
    checkpoint_sha1: str
    run_id: str
    cache: str | None


def load_run(run_dir: str | Path, device: torch.device, *, random_init: bool = False) -> RunModel:
    """Load a run's final (else last) checkpoint safely (``weights_only``) and rebuild its model."""
    run_dir = Path(run_dir)
    ckpt = find_checkpoint(run_dir)
    state = load_checkpoint(ckpt, need=ASSIGN_KEYS)
    cfg = train_config_of(state, ckpt)
    torch.manual_seed(cfg.seed)
    try:
        model = build_model(cfg.preset, num_clusters=cfg.num_clusters, num_heads=cfg.num_heads,
                            fusion=cfg.modalities == "concat", head_layers=cfg.head_layers)
    except (KeyError, ValueError, RuntimeError, TypeError, VideolabelError) as exc:
        raise VideolabelError(f"damaged checkpoint {ckpt}: no model fits its train_config "
                              f"({first_line(exc)})") from None
    if not random_init:
        load_weights(model, state["model"], ckpt)
    model.to(device).eval()
    cache = None
    info = run_dir / "run.json"
    if info.is_file():
        try:
            doc = json.loads(info.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise VideolabelError(f"unreadable {info} ({type(exc).__name__}); pass --cache") from None
        cache = doc.get("cache") if isinstance(doc, dict) else None
        if cache is not None and not isinstance(cache, str):
            raise VideolabelError(f"{info}: cache must be a path, not {cache!r}; pass --cache")
    return RunModel(model=model, train_config=cfg, ingest_config=state["ingest_config"],
                    ingest_hash=state["ingest_hash"], checkpoint=ckpt, checkpoint_sha1=file_sha1(ckpt),
                    run_id=run_dir.resolve().name, cache=cache)


def _pick_clips(first: np.ndarray, count: np.ndarray, clips: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Clip indices to use and, for each, the position of its video; ``clips`` spread evenly
    (``round(linspace(0, n - 1, use))`` per video; the middle clip when one is used). Vectorised."""
    count = np.asarray(count, dtype=np.int64)
    use = count if clips is None else np.minimum(count, clips)
    owner = np.repeat(np.arange(len(count), dtype=np.int64), use)
    starts = np.cumsum(use) - use
    k = np.arange(int(use.sum()), dtype=np.int64) - np.repeat(starts, use)  # rank of the clip in its video
    c, u = count[owner], use[owner]
    step = (c - 1) / np.maximum(u - 1, 1)
    offs = np.where(k == u - 1, c - 1, k * step)  # as np.linspace: the last value is exactly n - 1
    offs = np.where(u > 1, np.round(offs), c // 2).astype(np.int64)
    return np.asarray(first, dtype=np.int64)[owner] + offs, owner


@torch.no_grad()
def infer(run: RunModel, ds: ShardDataset, videos: np.ndarray, opts: AssignOptions, device: torch.device
          ) -> dict[str, torch.Tensor]:
    """Clip-averaged per-head log-probabilities [H, n, K] per modality (``lv``, ``la``; ``lf`` alone for a
    fusion run) and pooled features [n, D] (``fv``, ``fa``)."""
    model = run.model
    preset = model.preset
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    tc = run.train_config
    vaug = VideoAugment(preset, train=False, degrade=opts.degrade, channels_last=cuda, norm=tc.video_norm,
                        view=tc.video_view, gray=tc.gray)
    aaug = AudioAugment(preset, train=False, log_floor=tc.log_floor, specaugment=False, norm=tc.audio_norm)
    vids = ds.videos.iloc[videos]
    clip_idx, owner = _pick_clips(vids["first_clip"].to_numpy(np.int64), vids["n_clips"].to_numpy(np.int64),
                                  opts.clips)
    n = len(videos)
    keys = ("lf", "fv", "fa") if model.fusion else ("lv", "la", "fv", "fa")
    sums: dict[str, torch.Tensor | None] = {k: None for k in keys}
    counts = torch.zeros(n, device=device)
    loader = make_loader(ds, ListBatches(clip_idx, opts.batch_size), opts.workers, cuda)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    pos = 0
    for batch in loader:
        video = batch["video"].to(device, non_blocking=cuda)
        audio = batch["audio"].to(device, non_blocking=cuda)
        m = video.shape[0]
        who = torch.as_tensor(owner[pos : pos + m], device=device)
        pos += m
        with autocast:
            fv = model.encode_video(vaug(video))
            fa = model.encode_audio(aaug(audio))
            if model.fusion:
                logits = {"lf": model.fused_forward(fv, fa)}
            else:
                logits = {"lv": model.heads_forward(fv, "video"), "la": model.heads_forward(fa, "audio")}
        found = {k: (F.log_softmax(v.float(), dim=-1), 1) for k, v in logits.items()}
        found.update(fv=(fv.float(), 0), fa=(fa.float(), 0))
        for key, (val, dim) in found.items():
            acc = sums[key]
            if acc is None:
                shape = list(val.shape)
                shape[dim] = n
                acc = sums[key] = torch.zeros(shape, device=device)
            acc.index_add_(dim, who, val)
        counts.index_add_(0, who, torch.ones(m, device=device))
    c = counts.clamp_min(1.0)
    res = {k: cast(torch.Tensor, sums[k]) / (c[None, :, None] if k in LOG_PROB_KEYS else c[:, None]) for k in keys}
    res["clips"] = torch.tensor(len(clip_idx))
    return res


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


def assign(run_dir: str | Path | Sequence[str | Path], out: str | Path, *, cache: str | Path | None = None,
           options: AssignOptions | None = None, device: str | None = None) -> AssignSummary:
    """Label every video of ``cache`` (default: the run's training cache) and write Parquet to ``out``.

    ``run_dir`` may name several runs (say, the same training with different seeds): each labels the
    videos, and the run whose chosen head's frames-only and audio-only clusters agree most
    (:mod:`videolabel.cluster.select`) is the one written, with every candidate's scores in the file's
    metadata (``run_choice``); with ``method="kmeans"``, k-means on that run's features. No ground truth
    is used.

    Under torchrun each process labels a contiguous share of the videos and writes a part file; rank 0
    joins the parts in order, so no video is dropped or duplicated whatever the number of processes."""
    opts = (options or AssignOptions()).validate()
    runs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    if not runs:
        raise VideolabelError("give at least one run folder")
    if len(runs) > 1 and opts.random_init:
        raise VideolabelError("--random-init labels with untrained encoders: give one run")
    info = D.setup(device)
    t0 = time.perf_counter()
    try:
        out = Path(out)
        best: tuple[float, str, RunModel, ShardDataset, dict[str, torch.Tensor], Any] | None = None
        candidates: list[dict[str, Any]] = []
        cache_used: Path | None = None
        for i, rd in enumerate(runs):
            run = load_run(rd, info.device, random_init=opts.random_init)
            ds, cache_dir = _open_cache(run, cache)
            _check_run(run, opts, several=len(runs) > 1)
            if cache_used is not None and cache_dir.resolve() != cache_used.resolve():
                raise VideolabelError(f"runs {runs[0]} and {rd} label different caches ({cache_used} and "
                                      f"{cache_dir}): pass --cache to label the same videos with each")
            cache_used = cache_dir
            if info.is_main and i == 0:
                try:
                    out.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise VideolabelError(f"cannot write {out}: {exc.strerror}") from None
            n = len(ds.videos)
            start, stop = D.split_range(n, info.world_size, info.rank)
            res = infer(run, ds, np.arange(start, stop), opts, info.device)
            full = _gather({k: v.cpu() for k, v in res.items()}, out, i, info)
            if full is None:  # not the main process
                continue
            if len(runs) == 1:
                best = (0.0, str(rd), run, ds, full, None)
                break
            has_audio = torch.as_tensor(ds.videos["has_audio"].to_numpy(bool).copy())
            pick = _pick_head(run, full, has_audio, opts.head if opts.method == "selavi" else "auto")
            head, scores = pick
            assert scores is not None  # _check_run: both towers trained
            candidates.append({"run": str(rd), "run_id": run.run_id, "checkpoint_sha1": run.checkpoint_sha1,
                               "head": head, "head_av_nmi": scores})
            if best is None or scores[head] > best[0]:
                best = (scores[head], str(rd), run, ds, full, pick)
        if not info.is_main:
            return AssignSummary(out=str(out), videos=len(ds.videos), clips=0, seconds=0.0, clips_per_s=0.0,
                                 method=opts.method, num_clusters=0, num_heads=0, clusters_used=0)
        assert best is not None
        _, chosen, run, ds, full, pick = best
        table, meta = _build_table(run, ds, full, opts, pick=pick if opts.method == "selavi" else None)
        if candidates:
            meta["run_choice"] = {"chosen": chosen, "candidates": candidates}
        write_assignments(table, out, meta)
        feat_path = _write_features(ds, full, opts) if opts.features else None
        secs = time.perf_counter() - t0
        clips = int(full["clips"])
        used = int(table["cluster"].nunique())
        return AssignSummary(out=str(out), videos=len(ds.videos), clips=clips, seconds=round(secs, 2),
                             clips_per_s=round(clips * len(runs) / max(secs, 1e-9), 2),
                             method=meta["method"], num_clusters=meta["num_clusters"], num_heads=meta["num_heads"],
                             clusters_used=used, features=feat_path, meta=meta)
    finally:
        D.teardown()


def _open_cache(run: RunModel, cache: str | Path | None) -> tuple[ShardDataset, Path]:
    """The cache to label (default: the run's training cache), checked against the run's ingest settings."""
    cache_dir = Path(cache) if cache else (Path(run.cache) if run.cache else None)
    if cache_dir is None:
        raise VideolabelError("the run does not record its cache: pass --cache")
    ds = ShardDataset(cache_dir)
    if ds.config.hash() != run.ingest_hash:
        raise VideolabelError(f"cache {cache_dir} was ingested with a different config than the run's "
                              f"training cache ({ds.config.hash()} vs {run.ingest_hash}): re-ingest it with "
                              "the run's settings (see the run's checkpoint ingest_config)")
    return ds, cache_dir


def _check_run(run: RunModel, opts: AssignOptions, *, several: bool) -> None:
    """Refuse labelling from heads the run did not train, and an out-of-range ``--head``."""
    trained = run.train_config.modalities
    if opts.method == "selavi" and trained == "concat":
        if opts.modality != "both":
            raise VideolabelError("the run trained its heads on concatenated features (modalities=concat): "
                                  "use --modality both")
    elif opts.method == "selavi" and trained != "both":
        only = "visual" if trained == "video" else "audio"
        if opts.modality != only:
            raise VideolabelError(f"the run trained only its {only} heads (modalities={trained}): "
                                  f"use --modality {only}")
    if several and trained != "both":
        raise VideolabelError(f"choosing among several runs needs runs that trained both towers; {run.run_id} "
                              f"has modalities={trained}")
    if isinstance(opts.head, int) and not 0 <= opts.head < run.train_config.num_heads:  # validate(): int or auto
        raise VideolabelError(f"--head must be auto or in 0..{run.train_config.num_heads - 1}")


def _gather(local: dict[str, torch.Tensor], out: Path, index: int, info: Any) -> dict[str, torch.Tensor] | None:
    """Every process's share of :func:`infer`'s result joined in rank order on the main process (None
    elsewhere), through part files beside ``out`` that are removed once read."""
    if not info.distributed:
        return local
    def part(r: int) -> Path:
        return out.with_name(f".{out.name}.part{index}-{r}-of-{info.world_size}.pt")
    torch.save(local, part(info.rank))
    D.barrier()
    full = None
    if info.is_main:
        parts = [torch.load(part(r), weights_only=True) for r in range(info.world_size)]
        full = {k: torch.cat([p[k] for p in parts], dim=1 if k in LOG_PROB_KEYS else 0)
                for k in parts[0] if k != "clips"}
        full["clips"] = torch.tensor(sum(int(p["clips"]) for p in parts))
        for r in range(info.world_size):
            part(r).unlink(missing_ok=True)
    D.barrier()
    return full


def _build_table(run: RunModel, ds: ShardDataset, full: dict[str, torch.Tensor], opts: AssignOptions, *,
                 pick: tuple[int, list[float] | None] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The assignment table and its metadata; ``pick``: :func:`_pick_head`'s result when already known."""
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
        from videolabel.kmeans import assign_confidence, kmeans, pooled_features

        feats = pooled_features(full["fv"], full["fa"], has_audio, opts.modality, pca=opts.pca)
        k = opts.k if opts.k is not None else run.train_config.num_clusters
        km = kmeans(feats, k, seed=opts.seed)
        prob, margin = assign_confidence(feats, km.centroids)
        clusters = np.asarray(km.labels)[None, :]
        probs = np.asarray(prob, dtype=np.float32)[None, :]
        margins = np.asarray(margin, dtype=np.float32)
        agree = None
        head = 0
        meta.update(method="kmeans-random-init" if opts.random_init else "kmeans", num_clusters=int(k),
                    num_heads=1, head=0, pca=opts.pca)
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
        head, scores = pick if pick is not None else _pick_head(run, full, has_audio, opts.head)
        second = top2.values[head, :, 1] if p.shape[-1] > 1 else torch.zeros_like(top2.values[head, :, 0])
        margins = (top2.values[head, :, 0] - second).numpy().astype(np.float32)
        if "lf" in full:
            agree = None
        else:
            av = full["lv"][head].argmax(-1) == full["la"][head].argmax(-1)
            agree = np.where(has_audio.numpy(), av.numpy(), cast(Any, None))  # None: no audio to agree with
        meta.update(method="selavi", num_clusters=run.train_config.num_clusters,
                    num_heads=run.train_config.num_heads, head=head,
                    head_choice="auto" if opts.head == "auto" else "fixed", head_av_nmi=scores)
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
    return table, meta


def _pick_head(run: RunModel, full: dict[str, torch.Tensor], has_audio: torch.Tensor, head: int | str
               ) -> tuple[int, list[float] | None]:
    """The head that fills ``cluster``, and every head's audio-visual agreement score (None where the run
    has no two trained towers to compare: ``modalities`` concat, video or audio). ``"auto"`` picks the
    head whose frames-only and audio-only clusters agree most on the videos being labelled
    (:func:`~videolabel.cluster.select.choose_head`), head 0 where there is nothing to compare."""
    from videolabel.cluster.select import audio_visual_nmi, choose_head

    scores = None
    if run.train_config.modalities == "both" and "lv" in full:
        scores = audio_visual_nmi(full["lv"].argmax(-1).numpy(), full["la"].argmax(-1).numpy(), has_audio.numpy())
        scores = [round(x, 6) for x in scores]
    if head != "auto":
        return int(head), scores
    return (choose_head(scores) if scores is not None else 0), scores


def _write_features(ds: ShardDataset, full: dict[str, torch.Tensor], opts: AssignOptions) -> str:
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
