"""Forward passes over clips outside the SGD step: label passes, precise BatchNorm, final features.

A label pass (:meth:`Passes.head_log_probs`) runs the heads on given clips with the model in label mode
(``label_bn``); :meth:`Passes.recalibrate_bn` recomputes BatchNorm statistics over a fixed sample of
clips; :meth:`Passes.final_features` pools the encoders' features under the inference inputs of
``videolabel assign``. Augmentations are drawn per clip, so no row depends on batching or processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from videolabel.data.dataset import ShardDataset
from videolabel.data.levels import apply_levels
from videolabel.data.loader import ListBatches, make_loader, pick_clip
from videolabel.models.batchnorm import recalibrate_batchnorm
from videolabel.models.selavi import SeLaVi
from videolabel.seeds import generator, seed_for
from videolabel.train.build import Inputs, autocast
from videolabel.train.config import TrainConfig
from videolabel.train.dist import DistInfo, split_range

__all__ = ["Passes"]

_BatchNorm = torch.nn.modules.batchnorm._BatchNorm


@dataclass
class Passes:
    """The model, its inputs and the cache's clip table of one training process."""

    cfg: TrainConfig
    model: SeLaVi
    ds: ShardDataset
    inputs: Inputs
    info: DistInfo
    first_clip: np.ndarray  # [N] first clip of each video
    n_clips: np.ndarray  # [N] clips of each video
    levels: torch.Tensor | None = None  # [N, n_mels] per-video sound offsets (audio_level="video"), else None

    @property
    def n(self) -> int:
        return len(self.first_clip)

    @property
    def cuda(self) -> bool:
        return self.info.device.type == "cuda"

    def autocast(self) -> Any:
        return autocast(self.cuda, self.cfg.amp)

    def loader(self, clips: np.ndarray, batch_size: int) -> torch.utils.data.DataLoader:
        return make_loader(self.ds, ListBatches(clips, batch_size), self.cfg.workers, self.cuda, self.cfg.prefetch)

    def to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(video, audio) on the device (non-blocking on CUDA) and the clips' video indices (int64, CPU); the
        audio levelled by its video's offsets when the run has them (:mod:`videolabel.data.levels`)."""
        dev, nb = self.info.device, self.cuda
        audio = batch["audio"].to(dev, non_blocking=nb)
        vidx = batch["video_index"].to(torch.int64)
        if self.levels is not None:
            audio = apply_levels(audio, self.levels, vidx)
        return batch["video"].to(dev, non_blocking=nb), audio, vidx

    def clips_for(self, videos: np.ndarray, seed: int) -> np.ndarray:
        """One clip of each of ``videos``, drawn from ``seed`` (a draw per video of the whole cache)."""
        u = torch.rand(self.n, generator=generator(seed), dtype=torch.float64).numpy()[videos]
        return pick_clip(self.first_clip[videos], self.n_clips[videos], u)

    def _augment(self, batch: dict[str, torch.Tensor], video: torch.Tensor, audio: torch.Tensor, aug_seed: int,
                 train_aug: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not train_aug:  # the inference inputs: no augmentation
            return self.inputs.video_eval(video), self.inputs.audio_eval(audio)
        # one generator per clip: a clip's augmentation does not depend on its batch or process
        g = [generator(seed_for(aug_seed, int(c))) for c in batch["index"].tolist()]
        return self.inputs.video_train(video, g), self.inputs.audio_train(audio, g)

    @torch.no_grad()
    def head_log_probs(self, clip_indices: np.ndarray, aug_seed: int, *, softmax: bool = False,
                       heads: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Per-head log-probabilities [len(heads), n, K] (all heads by default) for the given clips (in
        order), under train-time augmentations drawn per clip from (``aug_seed``, clip index) (the
        inference inputs with ``label_inputs="eval"``), model in label mode (:meth:`_label_mode`):
        ``{"video": ..., "audio": ...}``, or ``{"fused": ...}`` for a ``modalities="concat"`` run. With
        ``label_bn="eval"`` each row depends only on its clip, never on batching or processes."""
        bns = self._label_mode()
        K = self.cfg.num_clusters
        dev = self.info.device
        keep = list(range(self.cfg.num_heads)) if heads is None else list(heads)
        sel = torch.as_tensor(keep, dtype=torch.int64, device=dev)
        n = len(clip_indices)
        names = ("fused",) if self.model.fusion else ("video", "audio")
        out = {k: torch.empty(len(keep), n, K, dtype=torch.float32, device=dev) for k in names}
        fn = F.softmax if softmax else F.log_softmax
        pos = 0
        for batch in self.loader(clip_indices, self.cfg.eval_batch_size):
            video, audio, _ = self.to_device(batch)
            v, a = self._augment(batch, video, audio, aug_seed, self.cfg.label_inputs != "eval")
            with self.autocast():
                res = self.model(video=v, audio=a)
            m = video.shape[0]
            for k in names:
                out[k][:, pos : pos + m] = fn(res[f"{k}_logits"].index_select(0, sel).float(), dim=-1)
            pos += m
        self.model.train()
        for bn, momentum in bns:
            bn.momentum = momentum
        return out

    def _label_mode(self) -> list[tuple[_BatchNorm, float | None]]:
        """Eval mode; with ``label_bn="batch"`` BatchNorm layers use the batch's statistics instead of
        the running ones (which lag behind a fast-changing small model) without updating them.
        ``label_bn="precise"`` recalibrates the running statistics before each pass instead
        (:meth:`recalibrate_bn`, called before the alignment and the solves)."""
        self.model.eval()
        saved: list[tuple[_BatchNorm, float | None]] = []
        if self.cfg.label_bn == "batch":
            for mod in self.model.modules():
                if isinstance(mod, _BatchNorm):
                    saved.append((mod, mod.momentum))
                    mod.momentum = 0.0
                    mod.train()
        return saved

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
        clips = self.clips_for(videos, seed_for(seed, 1))
        bs = cfg.eval_batch_size
        starts = list(range(0, m, bs))[self.info.rank :: self.info.world_size]
        mine = np.concatenate([clips[s : s + bs] for s in starts]) if starts else np.zeros(0, np.int64)
        aug_seed = seed_for(seed, 2)

        def forward(batch: dict[str, torch.Tensor]) -> None:
            video, audio, _ = self.to_device(batch)
            v, a = self._augment(batch, video, audio, aug_seed, train_aug and cfg.label_inputs != "eval")
            with self.autocast():
                self.model(video=v, audio=a)

        return recalibrate_batchnorm(self.model, self.loader(mine, bs), forward)

    @torch.no_grad()
    def final_features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every clip of this process's videos under the inference inputs of ``videolabel assign``: the
        encoders' pooled features ``fv``, ``fa`` ``[clips, D]`` and the clip's video index (global), plus
        the clip-averaged features of every video ``[n_local, Dv + Da]`` (for k-means)."""
        dev = self.info.device
        start, stop = split_range(self.n, self.info.world_size, self.info.rank)
        clips = np.concatenate([np.arange(f, f + c) for f, c in zip(self.first_clip[start:stop],
                                                                   self.n_clips[start:stop])]
                               or [np.zeros(0, np.int64)])
        self.model.eval()
        fvs, fas, owners = [], [], []
        for batch in self.loader(clips.astype(np.int64), self.cfg.eval_batch_size):
            video, audio, vidx = self.to_device(batch)
            with self.autocast():
                fvs.append(self.model.encode_video(self.inputs.video_eval(video)).float())
                fas.append(self.model.encode_audio(self.inputs.audio_eval(audio)).float())
            owners.append(vidx.to(dev))
        self.model.train()
        fv, fa, owner = torch.cat(fvs), torch.cat(fas), torch.cat(owners)
        local = owner - start
        n_local = stop - start
        count = torch.zeros(n_local, device=dev).index_add_(0, local, torch.ones_like(local, dtype=torch.float32))
        mean = torch.zeros(n_local, fv.shape[1] + fa.shape[1], device=dev).index_add_(
            0, local, torch.cat([fv, fa], dim=1)) / count.clamp_min(1.0)[:, None]
        return fv, fa, owner, mean
