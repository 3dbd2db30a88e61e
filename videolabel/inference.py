"""A trained run's model loaded for labelling, and its clip-averaged outputs over a cache's videos.

:func:`load_run` rebuilds the model of a run folder's final (else last) checkpoint with the settings it
was trained under (:class:`RunModel`); :func:`infer` runs it on every clip of the given videos under the
inference inputs and averages, per video, the heads' log-probabilities and the pooled features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from videolabel.assign_options import AssignOptions
from videolabel.data.augment import AudioAugment, VideoAugment
from videolabel.data.dataset import ShardDataset
from videolabel.data.levels import apply_levels, levels_for
from videolabel.data.loader import ListBatches, make_loader
from videolabel.errors import VideolabelError, first_line
from videolabel.loudness import FLOOR_DB, full_scale_power, peak_level_db
from videolabel.models import build_model
from videolabel.models.selavi import SeLaVi
from videolabel.train.checkpoint import (
    ASSIGN_KEYS,
    file_sha1,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    train_config_of,
)
from videolabel.train.config import TrainConfig

__all__ = ["LOG_PROB_KEYS", "RunModel", "infer", "load_run"]

#: per-head log-probabilities [H, n, K] in :func:`infer`'s result (the rest are per-video rows)
LOG_PROB_KEYS = ("lv", "la", "lf")


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
    if cfg.channels_last:  # the weights' layout training used (and its final features): 1.4x faster on the CPU
        model.to_channels_last()
    return RunModel(model=model, train_config=cfg, ingest_config=state["ingest_config"],
                    ingest_hash=state["ingest_hash"], checkpoint=ckpt, checkpoint_sha1=file_sha1(ckpt),
                    run_id=run_dir.resolve().name, cache=run_cache(run_dir))


def run_cache(run_dir: str | Path) -> str | None:
    """The cache a run was trained on, as its ``run.json`` names it (``None`` without one)."""
    info = Path(run_dir) / "run.json"
    if not info.is_file():
        return None
    try:
        doc = json.loads(info.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise VideolabelError(f"unreadable {info} ({type(exc).__name__}); pass --cache") from None
    cache = doc.get("cache") if isinstance(doc, dict) else None
    if cache is not None and not isinstance(cache, str):
        raise VideolabelError(f"{info}: cache must be a path, not {cache!r}; pass --cache")
    return cache


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
    fusion run), pooled features [n, D] (``fv``, ``fa``) and the level of each video's loudest
    spectrogram frame over its clips, dB re full scale [n] (``audio_db``, :mod:`videolabel.loudness`); for a
    run that levels the sound (``audio_level="video"``) also which videos had a band's floor raised [n] bool
    (``floor_raised``) and the collection's gain in dB [n] (``level_gain_db``, :mod:`videolabel.data.levels`)."""
    model = run.model
    preset = model.preset
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    tc = run.train_config
    vaug = VideoAugment(preset, train=False, degrade=opts.degrade, channels_last=cuda, norm=tc.video_norm,
                        view=tc.video_view, gray=tc.gray, polarity=tc.polarity)
    aaug = AudioAugment(preset, train=False, log_floor=tc.log_floor, specaugment=False, norm=tc.audio_norm,
                        level=tc.audio_level)
    vids = ds.videos.iloc[videos]
    clip_idx, owner = _pick_clips(vids["first_clip"].to_numpy(np.int64), vids["n_clips"].to_numpy(np.int64),
                                  opts.clips)
    n = len(videos)
    keys = ("lf", "fv", "fa") if model.fusion else ("lv", "la", "fv", "fa")
    sums: dict[str, torch.Tensor | None] = {k: None for k in keys}
    counts = torch.zeros(n, device=device)
    level = torch.full((n,), FLOOR_DB, device=device)
    reference, log_eps = full_scale_power(ds.config), float(ds.config.log_eps)
    levels = levels_for(ds, tc.audio_level, tc.log_floor, device)  # None unless audio_level=video
    loader = make_loader(ds, ListBatches(clip_idx, opts.batch_size), opts.workers, cuda)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    pos = 0
    for batch in loader:
        video = batch["video"].to(device, non_blocking=cuda)
        audio = batch["audio"].to(device, non_blocking=cuda)
        m = video.shape[0]
        who = torch.as_tensor(owner[pos : pos + m], device=device)
        pos += m
        level.scatter_reduce_(0, who, peak_level_db(audio, reference, log_eps), reduce="amax")  # as recorded
        if levels is not None:
            audio = apply_levels(audio, levels.offsets, batch["video_index"])
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
    res["audio_db"] = level
    if levels is not None:  # what audio_level="video" did to these videos' sound (the gain: the same for all)
        res["floor_raised"] = torch.from_numpy(levels.raised[videos].copy())
        res["level_gain_db"] = torch.full((n,), levels.gain_db, dtype=torch.float64)
        # the statistics measured on the sound (a cache ingested before they were stored), not read from the records
        res["level_measured"] = torch.full((n,), levels.source == "measured", dtype=torch.bool)
    res["clips"] = torch.tensor(len(clip_idx))
    return res
