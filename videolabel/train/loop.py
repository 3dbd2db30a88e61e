"""The SeLaVi training loop (paper section 3, method.md "Training loop").

Reads top to bottom: set-up (data, model, optimiser, run folder), modality alignment once, then steps
of cross-entropy against the current labels, with Sinkhorn-Knopp label solves on a power-law schedule.
Every random choice is drawn from a generator seeded by (seed, what, when), so a resumed run repeats
exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import videolabel
from videolabel.cluster.align import align_heads, permute_linear_
from videolabel.cluster.priors import gaussian_prior_masses, load_prior, uniform_prior
from videolabel.cluster.schedule import clustering_schedule
from videolabel.data.augment import AudioAugment, VideoAugment
from videolabel.data.dataset import ShardDataset
from videolabel.data.loader import ListBatches, StepBatches, default_loader_workers, make_loader, pick_clip
from videolabel.errors import VideolabelError, first_line
from videolabel.metrics import nmi
from videolabel.models import build_model
from videolabel.models.batchnorm import recalibrate_batchnorm
from videolabel.models.presets import PRESETS
from videolabel.seeds import ALIGN, BN, LABEL, PRIOR, SPLIT, STEP, generator, seed_for
from videolabel.train import dist as D
from videolabel.train.checkpoint import (
    CHECKPOINT_FORMAT,
    FINAL,
    LAST,
    RESUME_KEYS,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from videolabel.train.config import TrainConfig
from videolabel.train.distill import distill_heads, kmeans_labels
from videolabel.train.objective import cluster_size_entropy, cluster_sizes, clusters_used, selavi_loss
from videolabel.train.rundir import RunFolder, check_resumable, hash_ids, run_info
from videolabel.train.schedule import learning_rate, scaled_lr
from videolabel.train.signals import EXIT_PREEMPTED, StopFlag
from videolabel.train.solve import label_log_probs, modality_agreement_metrics, solve_head

__all__ = ["ALIGN_MAX_VIDEOS", "EXIT_PREEMPTED", "TrainSummary", "Trainer", "check_clusters",
           "default_loader_workers", "train"]

#: Videos used for the modality alignment before training (a random sample; eq. 7 is a sum over them).
ALIGN_MAX_VIDEOS = 8192


@dataclass
class TrainSummary:
    run_dir: str
    steps: int
    total_steps: int
    epochs: float
    seconds: float
    clips_per_s: float
    data_wait: float
    solves: int
    finished: bool
    preempted: bool
    checkpoint: str
    labels: str | None
    nmi_gt: float | None = None
    last_metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_clusters(cfg: TrainConfig, n: int) -> None:
    """Refuse, before allocating anything, a K whose heads (weights, gradients and momentum: three
    copies of 2 x H linear layers onto K) and label solve (an H x N x K float32 matrix per modality,
    about twice that at work) exceed this machine's memory. K above N is allowed (over-clustering)."""
    K, H = cfg.num_clusters, cfg.num_heads
    p = PRESETS[cfg.preset]
    heads = 3 * 4 * H * K * ((p.feat_dim_v + p.feat_dim_a + 1) if cfg.modalities == "concat"
                             else (p.feat_dim_v + 1) + (p.feat_dim_a + 1))
    solve = 4 * H * n * K * (2 if cfg.modalities == "both" else 1) * 2
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return
    if heads + solve > total:
        raise VideolabelError(f"--clusters {K} with {H} heads on {n} videos needs about "
                              f"{(heads + solve) / 2**30:.0f} GiB for the heads and a label solve; this machine "
                              f"has {total / 2**30:.0f} GiB: lower K or --heads")


class Trainer:
    """One SeLaVi run. ``Trainer(...).run()`` trains; the pieces are public for benchmarks and tests."""

    def __init__(self, cache_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, *, resume: bool = False,
                 gt: str | Path | None = None, device: str | None = None) -> None:
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.info = D.setup(device)
        self.dev = self.info.device
        self.cuda = self.dev.type == "cuda"
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        self.ds = ShardDataset(cache_dir)
        self.cache_dir = Path(cache_dir)
        vids = self.ds.videos
        self.n = len(vids)
        if self.n < 2:
            raise VideolabelError(f"cache {cache_dir} holds {self.n} usable video(s); training needs at least 2")
        check_clusters(cfg, self.n)
        self.first_clip = vids["first_clip"].to_numpy(np.int64)
        self.n_clips = vids["n_clips"].to_numpy(np.int64)
        self.has_audio = torch.as_tensor(vids["has_audio"].to_numpy(bool).copy())
        self.ingest_hash = self.ds.config.hash()
        self.videos_hash = hash_ids(vids["video_id"].tolist())

        H, K = cfg.num_heads, cfg.num_clusters
        world = self.info.world_size
        self.steps_per_epoch = max(1, math.ceil(self.n / (cfg.batch_size * world)))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.schedule = clustering_schedule(self.total_steps, cfg.n_solves, cfg.schedule_power)
        self.base_lr = scaled_lr(cfg.lr, cfg.batch_size, world)
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.preset, num_clusters=K, num_heads=H,
                                 fusion=cfg.modalities == "concat", head_layers=cfg.head_layers).to(self.dev)
        self.preset = self.model.preset
        if cfg.channels_last:  # also on the CPU: the tiny towers' label passes ran 1.7-2.4x faster (oneDNN)
            self.model.to_channels_last()
        self.vaug_train = VideoAugment(self.preset, train=True, channels_last=self.cuda and cfg.channels_last,
                                       color_jitter=cfg.color_jitter, norm=cfg.video_norm,
                                       flip_p=0.5 if cfg.flip else 0.0, view=cfg.video_view, gray=cfg.gray,
                                       invert_p=cfg.invert)
        self.aaug_train = AudioAugment(self.preset, train=True, log_floor=cfg.log_floor,
                                       specaugment=cfg.specaugment, norm=cfg.audio_norm,
                                       time_shift=cfg.audio_shift, warp=cfg.audio_warp)
        # inference-time inputs, exactly as `videolabel assign` builds them (final BatchNorm statistics)
        self.vaug_eval = VideoAugment(self.preset, train=False, channels_last=self.cuda and cfg.channels_last,
                                      norm=cfg.video_norm, view=cfg.video_view, gray=cfg.gray)
        self.aaug_eval = AudioAugment(self.preset, train=False, log_floor=cfg.log_floor, specaugment=False,
                                      norm=cfg.audio_norm)
        if cfg.optimizer == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                self.model.parameters(), lr=self.base_lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.base_lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)
        self.labels = torch.zeros(H, self.n, dtype=torch.int64)
        self.prior_masses = self._draw_prior()
        self.step = 0
        self.solve_index = 0
        self.aligned = False
        self.align_costs: list[tuple[float, float]] = []
        self.gt_codes = self._load_gt(gt) if gt else None
        self._bn_step = -1  # step at which label-pass BatchNorm statistics were last recomputed

        self.run_dir = RunFolder(self.out, is_main=self.info.is_main)
        try:
            self._prepare_run_dir(resume)
            self.ddp_model = self._wrap()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder (:meth:`run` does it when it ends); a later Trainer may then use it."""
        self.run_dir.close()

    # ------------------------------------------------------------------ set-up
    def _draw_prior(self) -> torch.Tensor:
        H, K = self.cfg.num_heads, self.cfg.num_clusters
        if self.cfg.prior == "uniform":
            return uniform_prior(K).double().expand(H, K).clone()
        if self.cfg.prior == "gaussian":
            return torch.stack([
                gaussian_prior_masses(K, sigma=self.cfg.prior_sigma, seed=seed_for(self.cfg.seed, PRIOR, h))
                for h in range(H)
            ]).double()
        return load_prior(self.cfg.prior, K).double().expand(H, K).clone()

    def _load_gt(self, gt: str | Path) -> np.ndarray | None:
        from videolabel.groundtruth import join_ground_truth, read_ground_truth

        table = read_ground_truth(gt)
        aligned, _ = join_ground_truth(self.ds.videos["path"], table)
        if aligned.notna().sum() == 0:
            raise VideolabelError(f"no video of the cache matches a path in {gt}")
        codes, _ = pd.factorize(aligned)  # -1 where unmatched
        return codes

    def _prepare_run_dir(self, resume: bool) -> None:
        self.run_dir.open(resume)
        if resume:
            ckpt = self.run_dir.checkpoint_to_resume()
            state = load_checkpoint(ckpt, need=RESUME_KEYS)
            check_resumable(state, self.cfg, ingest_hash=self.ingest_hash, videos_hash=self.videos_hash,
                            videos=self.n, world_size=self.info.world_size)
            try:
                self._restore(state)
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
                raise VideolabelError(f"damaged checkpoint {ckpt}: {type(exc).__name__}: {first_line(exc)}") from None
            return
        self.run_dir.start(self.cfg, run_info(
            self.cfg, device=self.dev, world_size=self.info.world_size, cache_dir=self.cache_dir,
            ingest_config=self.ds.config.to_dict(), ingest_hash=self.ingest_hash, videos=self.n,
            videos_hash=self.videos_hash, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
            schedule=self.schedule))
        D.barrier()

    def _restore(self, state: dict[str, Any]) -> None:
        load_weights(self.model, state["model"], self.out / LAST)
        self.optimizer.load_state_dict(state["optimizer"])
        for key, like in (("labels", self.labels), ("prior_masses", self.prior_masses)):
            if tuple(state[key].shape) != tuple(like.shape) or state[key].dtype != like.dtype:
                raise ValueError(f"{key} is {state[key].dtype} {list(state[key].shape)}, the run needs "
                                 f"{like.dtype} {list(like.shape)}")
        self.labels = state["labels"].clone()
        self.prior_masses = state["prior_masses"].clone()
        self.step = int(state["step"])
        self.solve_index = int(state["solve_index"])
        self.aligned = bool(state["aligned"])
        self.align_costs = [tuple(c) for c in state.get("align_costs", [])]
        torch.set_rng_state(state["rng_cpu"])
        self.run_dir.drop_metrics_after(self.step)

    def _wrap(self) -> torch.nn.Module:
        model: torch.nn.Module = self.model
        if self.cfg.compile:
            self.model.video_encoder = cast(torch.nn.Module, torch.compile(self.model.video_encoder))
            self.model.audio_encoder = cast(torch.nn.Module, torch.compile(self.model.audio_encoder))
        if self.info.distributed:
            if self.cuda and self.cfg.sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.dev.index] if self.cuda else None,
                find_unused_parameters=self.cfg.modalities != "both",
            )
        return model

    def state_dict(self) -> dict[str, Any]:
        model = self.model
        sd = {k.replace("_orig_mod.", ""): v.detach().cpu() for k, v in model.state_dict().items()}
        return {
            "format": CHECKPOINT_FORMAT,
            "videolabel": videolabel.__version__,
            "model": sd,
            "optimizer": self.optimizer.state_dict(),
            "labels": self.labels.cpu(),
            "prior_masses": self.prior_masses.cpu(),
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "total_steps": self.total_steps,
            "solve_index": self.solve_index,
            "schedule": list(self.schedule),
            "aligned": self.aligned,
            "align_costs": [list(c) for c in self.align_costs],
            "rng_cpu": torch.get_rng_state(),
            "train_config": self.cfg.to_dict(),
            "ingest_config": self.ds.config.to_dict(),
            "ingest_hash": self.ingest_hash,
            "videos_hash": self.videos_hash,
            "video_ids": self.ds.videos["video_id"].tolist(),
            "n_videos": self.n,
            "world_size": self.info.world_size,
        }

    def save(self, name: str = LAST) -> Path | None:
        path = self.out / name
        if self.info.is_main:
            save_checkpoint(self.state_dict(), path)
        D.barrier()
        return path

    # ------------------------------------------------------------------ forward passes
    def _to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nb = self.cuda
        return (batch["video"].to(self.dev, non_blocking=nb), batch["audio"].to(self.dev, non_blocking=nb),
                batch["video_index"].to(torch.int64))

    def _autocast(self) -> Any:
        if self.cuda and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    @torch.no_grad()
    def head_log_probs(self, clip_indices: np.ndarray, aug_seed: int, *, softmax: bool = False,
                       heads: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Per-head log-probabilities [len(heads), n, K] (all heads by default) for the given clips (in
        order), under train-time augmentations drawn per clip from (``aug_seed``, clip index), model in
        label mode (:meth:`_set_label_mode`): ``{"video": ..., "audio": ...}``, or ``{"fused": ...}`` for a
        ``modalities="concat"`` run. With ``label_bn="eval"`` each row depends only on its clip, never on
        batching or processes."""
        bns = self._set_label_mode()
        K = self.cfg.num_clusters
        keep = list(range(self.cfg.num_heads)) if heads is None else list(heads)
        sel = torch.as_tensor(keep, dtype=torch.int64, device=self.dev)
        n = len(clip_indices)
        names = ("fused",) if self.model.fusion else ("video", "audio")
        out = {k: torch.empty(len(keep), n, K, dtype=torch.float32, device=self.dev) for k in names}
        loader = make_loader(self.ds, ListBatches(clip_indices, self.cfg.eval_batch_size),
                             self.cfg.workers, self.cuda, self.cfg.prefetch)
        fn = F.softmax if softmax else F.log_softmax
        pos = 0
        for batch in loader:
            video, audio, _ = self._to_device(batch)
            # one generator per clip: a clip's augmentation does not depend on its batch or process
            if self.cfg.label_inputs == "eval":  # the inference inputs: no augmentation
                v, a = self.vaug_eval(video), self.aaug_eval(audio)
            else:  # one generator per clip: a clip's augmentation does not depend on its batch or process
                g = [generator(seed_for(aug_seed, int(c))) for c in batch["index"].tolist()]
                v, a = self.vaug_train(video, g), self.aaug_train(audio, g)
            with self._autocast():
                res = self.model(video=v, audio=a)
            m = video.shape[0]
            for k in names:
                out[k][:, pos : pos + m] = fn(res[f"{k}_logits"].index_select(0, sel).float(), dim=-1)
            pos += m
        self.model.train()
        for bn, momentum in bns:
            bn.momentum = momentum
        return out

    def recalibrate_bn(self, seed: int, *, train_aug: bool) -> int:
        """Precise BatchNorm statistics (:func:`recalibrate_batchnorm`) over ``precise_bn_clips`` clips.

        The clips (one per video, videos drawn from ``seed``) are cut into fixed batches of
        ``eval_batch_size``; batch b runs on process b % world and the sums are all-reduced, so the
        statistics do not depend on the number of processes. ``train_aug``: the label passes'
        augmentations (drawn per clip), else the inference inputs of ``videolabel assign``."""
        cfg = self.cfg
        m = min(self.n, cfg.precise_bn_clips)
        if m < 2:
            return 0
        videos = np.sort(torch.randperm(self.n, generator=generator(seed)).numpy()[:m])
        clips = self._clips_for(videos, seed_for(seed, 1))
        bs = cfg.eval_batch_size
        starts = list(range(0, m, bs))[self.info.rank :: self.info.world_size]
        mine = np.concatenate([clips[s : s + bs] for s in starts]) if starts else np.zeros(0, np.int64)
        loader = make_loader(self.ds, ListBatches(mine, bs), cfg.workers, self.cuda, cfg.prefetch)
        aug_seed = seed_for(seed, 2)

        def forward(batch: dict[str, torch.Tensor]) -> None:
            video, audio, _ = self._to_device(batch)
            if train_aug and cfg.label_inputs != "eval":
                g = [generator(seed_for(aug_seed, int(c))) for c in batch["index"].tolist()]
                v, a = self.vaug_train(video, g), self.aaug_train(audio, g)
            else:
                v, a = self.vaug_eval(video), self.aaug_eval(audio)
            with self._autocast():
                self.model(video=v, audio=a)

        return recalibrate_batchnorm(self.model, loader, forward)

    def _set_label_mode(self) -> list[tuple[torch.nn.modules.batchnorm._BatchNorm, float | None]]:
        """Eval mode; with ``label_bn="batch"`` BatchNorm layers use the batch's statistics instead of
        the running ones (which lag behind a fast-changing small model) without updating them.
        ``label_bn="precise"`` recalibrates the running statistics before each pass instead
        (:meth:`recalibrate_bn`, called by :meth:`align` and :meth:`solve_labels`)."""
        self.model.eval()
        saved: list[tuple[torch.nn.modules.batchnorm._BatchNorm, float | None]] = []
        if self.cfg.label_bn == "batch":
            for mod in self.model.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    saved.append((mod, mod.momentum))
                    mod.momentum = 0.0
                    mod.train()
        return saved

    def _clips_for(self, videos: np.ndarray, seed: int) -> np.ndarray:
        g = generator(seed)
        u = torch.rand(self.n, generator=g, dtype=torch.float64).numpy()[videos]
        return pick_clip(self.first_clip[videos], self.n_clips[videos], u)

    # ------------------------------------------------------------------ alignment (eq. 7)
    def align(self) -> None:
        """Permute each audio head's output rows to best match its visual head (once, before training).

        Computed on rank 0 on a random sample of videos; DDP then broadcasts rank 0's weights."""
        cfg = self.cfg
        if cfg.modalities == "both" and cfg.label_bn == "precise":  # collective: every process
            self.recalibrate_bn(seed_for(cfg.seed, BN, 0), train_aug=True)
            self._bn_step = self.step  # the first solve, at the same weights, reuses these statistics
        if self.info.is_main and cfg.modalities == "both":
            g = generator(seed_for(cfg.seed, ALIGN))
            videos = torch.randperm(self.n, generator=g)[:ALIGN_MAX_VIDEOS].sort().values.numpy()
            p = self.head_log_probs(self._clips_for(videos, seed_for(cfg.seed, ALIGN, 1)),
                                    seed_for(cfg.seed, ALIGN, 2), softmax=True)
            p_v, p_a = p["video"], p["audio"]
            for h in range(cfg.num_heads):
                res = align_heads(p_a[h].cpu(), p_v[h].cpu(), proposals=cfg.align_proposals,
                                  restarts=cfg.align_restarts, seed=seed_for(cfg.seed, ALIGN, 3, h))
                permute_linear_(self.model.last_linear("audio", h), res.perm.to(self.dev))
                self.align_costs.append((float(res.cost_before), float(res.cost_after)))
        self.aligned = True
        if self.info.distributed:  # rank 0's permuted heads to everyone
            for param in self.model.audio_heads.parameters():
                torch.distributed.broadcast(param.data, src=0)

    # ------------------------------------------------------------------ the label solve (eq. 1-6)
    def solve_labels(self) -> dict[str, Any]:
        """One clustering step: label-pass outputs under two augmentations, half the heads on each
        (decorrelated heads), modalities combined (eq. 6), prior matched (eq. 4-5), Sinkhorn (eq. 3)."""
        cfg, H = self.cfg, self.cfg.num_heads
        i = self.solve_index
        start, stop = D.split_range(self.n, self.info.world_size, self.info.rank)
        videos = np.arange(start, stop)
        n_aug = 2 if cfg.decorrelate else 1
        which = torch.zeros(H, dtype=torch.int64)
        if n_aug == 2:
            half = torch.randperm(H, generator=generator(seed_for(cfg.seed, SPLIT, i)))[: H // 2]
            which[half] = 1
        t0 = time.perf_counter()
        if cfg.label_bn == "precise" and self._bn_step != self.step:  # not again at unchanged weights
            self.recalibrate_bn(seed_for(cfg.seed, BN, 1, i), train_aug=True)
        present_a = self.has_audio[start:stop].to(self.dev)
        reduce = torch.distributed.all_reduce if D.is_dist() else None
        # each augmentation pass keeps only its own heads' outputs and folds them into log P at once
        # (eq. 6), so memory holds H x n x K log-probabilities plus one pass's half
        log_ps: list[torch.Tensor | None] = [None] * H
        # per-modality argmaxes [n_local, 2H] (video of head h in column h, audio in H + h): whether the
        # two towers predict the same clusters, the premise of the method (modality_agreement_metrics)
        both = cfg.modalities == "both"
        argmaxes = torch.zeros(stop - start, 2 * H if both else 0, dtype=torch.int64, device=self.dev)
        for a in range(n_aug):
            mine = [h for h in range(H) if int(which[h]) == a]
            if not mine:
                continue
            out = self.head_log_probs(self._clips_for(videos, seed_for(cfg.seed, LABEL, i, a)),
                                      seed_for(cfg.seed, LABEL, i, a, 7), heads=mine)
            for j, h in enumerate(mine):
                if both:
                    argmaxes[:, h] = out["video"][j].argmax(-1)
                    argmaxes[:, H + h] = out["audio"][j].argmax(-1)
                log_ps[h] = label_log_probs(out, j, cfg.modalities, present_a, balance=cfg.balance_modalities,
                                            all_reduce=reduce)
            del out
        t_pass = time.perf_counter() - t0
        old = self.labels.clone()
        new_local = []
        sk_err, sk_iters = 0.0, 0
        for h in range(H):
            log_p = log_ps[h]
            log_ps[h] = None
            assert log_p is not None  # every head belongs to one augmentation pass
            res = solve_head(log_p, self.prior_masses[h], old[h], match=cfg.prior != "uniform", lam=cfg.lam,
                             tol=cfg.sinkhorn_tol, max_iters=cfg.sinkhorn_iters)  # not reaching tol: recorded below
            new_local.append(res.labels.to(self.dev))
            sk_err = max(sk_err, float(res.error))
            sk_iters = max(sk_iters, int(res.iterations))
        local = torch.stack(new_local, dim=1)  # [n_local, H]
        self.labels = D.all_gather_rows(local, self.n).T.contiguous().cpu()
        self.solve_index += 1
        t_total = time.perf_counter() - t0
        m = self._solve_metrics(old, t_pass, t_total)
        m.update(sinkhorn_error=sk_err, sinkhorn_iterations=sk_iters)
        if both:
            m.update(modality_agreement_metrics(self.labels, D.all_gather_rows(argmaxes, self.n).T.cpu(),
                                                self.has_audio.cpu()))
        return m

    # ------------------------------------------------------------------ final labels from the features
    @torch.no_grad()
    def final_features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every clip of this process's videos under the inference inputs of ``videolabel assign``: the
        encoders' pooled features ``fv``, ``fa`` ``[clips, D]`` and the clip's video index (global), plus
        the clip-averaged features of every video ``[n_local, Dv + Da]`` (for k-means)."""
        start, stop = D.split_range(self.n, self.info.world_size, self.info.rank)
        clips = np.concatenate([np.arange(f, f + c) for f, c in zip(self.first_clip[start:stop],
                                                                   self.n_clips[start:stop])]
                               or [np.zeros(0, np.int64)])
        loader = make_loader(self.ds, ListBatches(clips.astype(np.int64), self.cfg.eval_batch_size),
                             self.cfg.workers, self.cuda, self.cfg.prefetch)
        self.model.eval()
        fvs, fas, owners = [], [], []
        for batch in loader:
            video, audio, vidx = self._to_device(batch)
            with self._autocast():
                fvs.append(self.model.encode_video(self.vaug_eval(video)).float())
                fas.append(self.model.encode_audio(self.aaug_eval(audio)).float())
            owners.append(vidx.to(self.dev))
        self.model.train()
        fv, fa, owner = torch.cat(fvs), torch.cat(fas), torch.cat(owners)
        local = owner - start
        n_local = stop - start
        count = torch.zeros(n_local, device=self.dev).index_add_(0, local, torch.ones_like(local, dtype=torch.float32))
        mean = torch.zeros(n_local, fv.shape[1] + fa.shape[1], device=self.dev).index_add_(
            0, local, torch.cat([fv, fa], dim=1)) / count.clamp_min(1.0)[:, None]
        return fv, fa, owner, mean

    def distill_labels(self) -> dict[str, Any]:
        """``final_labels="features"``: the run's labels become k-means on the final features, learnt by the heads.

        See :mod:`videolabel.train.distill`. Every process runs the same k-means on the gathered
        features and the heads' gradients are averaged over processes."""
        cfg, H, K = self.cfg, self.cfg.num_heads, self.cfg.num_clusters
        t0 = time.perf_counter()
        fv, fa, owner, mean = self.final_features()
        full = D.all_gather_rows(mean, self.n).cpu()
        dv = fv.shape[1]
        labels = kmeans_labels(full[:, :dv], full[:, dv:], self.has_audio.cpu(), K, H, cfg.seed)
        old = self.labels.clone()
        self.labels = labels
        steps, fit = distill_heads(self.model, fv, fa, owner, labels, self.has_audio, epochs=cfg.distill_epochs,
                                   weight_decay=cfg.weight_decay, seed=cfg.seed, rank=self.info.rank,
                                   world_size=self.info.world_size)
        m: dict[str, Any] = {"event": "distill", "step": self.step, "distill_s": round(time.perf_counter() - t0, 3),
                             "distill_steps": steps, "heads_fit": fit,
                             "labels_nmi_last_solve": float(np.mean([nmi(old[h].numpy(), labels[h].numpy())
                                                                      for h in range(H)]))}
        if self.gt_codes is not None:
            ok = self.gt_codes >= 0
            m["nmi_gt_head0"] = float(nmi(self.gt_codes[ok], labels[0].numpy()[ok]))
        return m

    def _solve_metrics(self, old: torch.Tensor, t_pass: float, t_total: float) -> dict[str, Any]:
        K = self.cfg.num_clusters
        new = self.labels.numpy()
        m: dict[str, Any] = {"event": "solve", "solve": self.solve_index - 1, "step": self.step,
                             "solve_s": round(t_total, 3), "label_pass_s": round(t_pass, 3)}
        if self.solve_index > 1:
            m["label_stability"] = float(np.mean([nmi(old[h].numpy(), new[h]) for h in range(len(new))]))
        sizes = cluster_sizes(new, K)
        m["cluster_size_entropy"] = float(cluster_size_entropy(sizes).mean())
        m["clusters_used"] = float(clusters_used(sizes).mean())
        if self.gt_codes is not None:
            ok = self.gt_codes >= 0
            scores = [nmi(self.gt_codes[ok], new[h][ok]) for h in range(len(new))]
            m["nmi_gt_head0"] = float(scores[0])
            m["nmi_gt_mean"] = float(np.mean(scores))
        return m

    # ------------------------------------------------------------------ the training step
    def lr_at(self, step: int) -> float:
        return learning_rate(step, self.base_lr, self.warmup_steps, self.total_steps, self.cfg.lr_schedule)

    def train_step(self, video: torch.Tensor, audio: torch.Tensor, y: torch.Tensor, has_audio: torch.Tensor,
                   step: int) -> torch.Tensor:
        """One SGD step of cross-entropy of every head of both encoders against its labels.

        y: [H, B] labels; loss = 0.5 mean_h CE_video + 0.5 mean_h CE_audio (audio only where present);
        ``modalities="concat"``: mean_h CE of the fusion heads (a video without audio is fed its cached
        filler spectrogram). Returns the loss (a device tensor: reading it is left to the caller, to avoid a sync)."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        g = generator(seed_for(cfg.seed, STEP, step, self.info.rank), self.dev)
        v = self.vaug_train(video, g) if cfg.modalities != "audio" else None
        a = self.aaug_train(audio, g) if cfg.modalities != "video" else None
        with self._autocast():
            out = self.ddp_model(video=v, audio=a)
        loss = selavi_loss(out, y, has_audio)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    # ------------------------------------------------------------------ run
    def log(self, record: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl`` (main process)."""
        self.run_dir.log(record)

    def run(self, progress: Any = None) -> TrainSummary:
        cfg = self.cfg
        stop = StopFlag()
        stop.install()
        t_start = time.perf_counter()
        preempted = False
        last: dict[str, Any] = {}
        try:
            if not self.aligned and cfg.align:
                self.align()
                if self.align_costs:
                    self.log({"event": "align", "step": self.step,
                              "cost_before": float(np.mean([c[0] for c in self.align_costs])),
                              "cost_after": float(np.mean([c[1] for c in self.align_costs]))})
            elif not self.aligned:
                self.aligned = True
            sampler = StepBatches(self.first_clip, self.n_clips, cfg.batch_size, self.info.world_size,
                                  self.info.rank, cfg.seed, self.step, self.total_steps)
            loader = make_loader(self.ds, sampler, cfg.workers, self.cuda, cfg.prefetch)
            labels_dev = self.labels.to(self.dev)
            has_audio_dev = self.has_audio.to(self.dev)
            window: dict[str, Any] = {"t": time.perf_counter(), "wait": 0.0, "steps": 0, "loss": []}
            if progress is not None:
                progress.start(self.total_steps, self.step)
            it = iter(loader)
            while self.step < self.total_steps:
                if self.solve_index < len(self.schedule) and self.schedule[self.solve_index] <= self.step:
                    if window["steps"]:  # close the throughput window: the solve is not training time
                        m = self._window_metrics(window)
                        self.log(m)
                        last.update(m)
                    m = self.solve_labels()
                    labels_dev = self.labels.to(self.dev)
                    self.log(m)
                    last.update(m)
                    window.update(t=time.perf_counter(), wait=0.0, steps=0, loss=[])
                    continue
                t0 = time.perf_counter()
                batch = next(it)
                video, audio, vidx = self._to_device(batch)
                window["wait"] += time.perf_counter() - t0
                vidx = vidx.to(self.dev)
                loss = self.train_step(video, audio, labels_dev[:, vidx], has_audio_dev[vidx], self.step)
                window["loss"].append(loss)
                window["steps"] += 1
                self.step += 1
                epoch_end = self.step % self.steps_per_epoch == 0
                if self.step % cfg.log_every == 0 or self.step == self.total_steps or epoch_end:
                    m = self._window_metrics(window)
                    self.log(m)
                    last.update(m)
                    if progress is not None:
                        progress.update(self.step, m)
                if D.all_reduce_max(stop.raised, self.dev):
                    preempted = True
                    if window["steps"]:  # the row of the steps since the last one, before the checkpoint
                        m = self._window_metrics(window)
                        self.log(m)
                        last.update(m)
                    break
                if epoch_end and (self.step // self.steps_per_epoch) % cfg.checkpoint_every == 0 \
                        and self.step < self.total_steps:
                    self.save(LAST)
            ckpt = self.save(LAST)
            labels_path = None
            if not preempted:
                if cfg.precise_bn_clips > 0:  # the final model's statistics for inference inputs
                    self.recalibrate_bn(seed_for(cfg.seed, BN, 2), train_aug=False)
                if cfg.final_labels == "features" and self.n >= cfg.num_clusters:
                    m = self.distill_labels()
                    self.log(m)
                    last.update(m)
                elif cfg.final_labels == "features":  # k-means needs K <= N: keep the last solve's labels
                    self.log({"event": "distill", "step": self.step, "skipped": f"K={cfg.num_clusters} > "
                              f"{self.n} videos: the last solve's labels are kept"})
                ckpt = self.save(FINAL)
                labels_path = self.write_labels()
        finally:
            stop.restore()
            self.close()
            if progress is not None:
                progress.stop()
        seconds = time.perf_counter() - t_start
        return TrainSummary(
            run_dir=str(self.out), steps=self.step, total_steps=self.total_steps,
            epochs=self.step / self.steps_per_epoch, seconds=round(seconds, 2),
            clips_per_s=float(last.get("clips_per_s", 0.0)), data_wait=float(last.get("data_wait", 0.0)),
            solves=self.solve_index, finished=not preempted, preempted=preempted, checkpoint=str(ckpt),
            labels=str(labels_path) if labels_path else None, nmi_gt=last.get("nmi_gt_head0"), last_metrics=last,
        )

    def _window_metrics(self, w: dict[str, Any]) -> dict[str, Any]:
        now = time.perf_counter()
        dt = max(now - w["t"], 1e-9)
        loss = float(torch.stack(w["loss"]).mean()) if w["loss"] else float("nan")
        clips = w["steps"] * self.cfg.batch_size * self.info.world_size
        m = {"event": "train", "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
             "loss": loss, "lr": self.lr_at(max(self.step - 1, 0)), "clips_per_s": round(clips / dt, 2),
             "data_wait": round(w["wait"] / dt, 4)}
        w.update(t=now, wait=0.0, steps=0, loss=[])
        return m

    def write_labels(self) -> Path | None:
        """The final training labels (one row per video, a column per head) as ``labels.parquet``."""
        return self.run_dir.write_labels(self.ds.videos, self.labels.numpy())


def train(cache_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, *, resume: bool = False,
          gt: str | Path | None = None, device: str | None = None, progress: Any = None) -> TrainSummary:
    """Train SeLaVi on a cache; the library entry point behind ``videolabel train``.

    ``progress``: an object with ``start(total, done)``, ``update(step, metrics)`` and ``stop()`` (see
    :class:`~videolabel.train.progress.TrainProgress`); default: ``TrainProgress(cfg.progress)``."""
    try:
        trainer = Trainer(cache_dir, out_dir, cfg, resume=resume, gt=gt, device=device)
        if progress is None:
            from videolabel.train.progress import TrainProgress

            progress = TrainProgress(cfg.progress)
        return trainer.run(progress=progress if trainer.info.is_main else None)
    finally:
        D.teardown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: videolabel train ...")
