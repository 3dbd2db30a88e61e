"""What a training run is built from: backends, the model's inputs, optimiser, prior, ground truth, wrapping.

Each function builds one piece from the :class:`~videolabel.train.config.TrainConfig`; the trainer
(:mod:`videolabel.train.loop`) calls them in order, so that the global random state (the model's
initialisation) is drawn exactly where a run always drew it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from videolabel.cluster.priors import gaussian_prior_masses, load_prior, uniform_prior
from videolabel.data.augment import AudioAugment, VideoAugment
from videolabel.errors import VideolabelError
from videolabel.models.presets import PRESETS, Preset
from videolabel.seeds import PRIOR, seed_for
from videolabel.train.config import TrainConfig
from videolabel.train.dist import DistInfo

__all__ = ["Inputs", "autocast", "check_clusters", "configure_backends", "draw_prior", "make_inputs",
           "make_optimizer", "read_gt_codes", "wrap_model"]


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


def configure_backends(cfg: TrainConfig, cuda: bool) -> None:
    """Deterministic algorithms when asked; else, on CUDA, cuDNN autotuning and TF32 matmuls."""
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(cuda: bool, amp: bool) -> Any:
    """bf16 autocast on CUDA with ``amp``; a disabled (no-op) autocast otherwise."""
    if cuda and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@dataclass(frozen=True)
class Inputs:
    """The model's input transforms: training augmentations and inference inputs, per modality."""

    video_train: VideoAugment
    audio_train: AudioAugment
    video_eval: VideoAugment  # inference-time inputs, exactly as `videolabel assign` builds them
    audio_eval: AudioAugment


def make_inputs(preset: Preset, cfg: TrainConfig, cuda: bool) -> Inputs:
    channels_last = cuda and cfg.channels_last
    train_geometry = preset
    if cfg.scale_jitter_max:  # a wider random size in training only; the evaluation inputs stay the preset's
        train_geometry = preset.replace(scale_jitter=(preset.scale_jitter[0], cfg.scale_jitter_max))
    return Inputs(
        video_train=VideoAugment(train_geometry, train=True, channels_last=channels_last,
                                 color_jitter=cfg.color_jitter, norm=cfg.video_norm, flip_p=0.5 if cfg.flip else 0.0,
                                 view=cfg.video_view, gray=cfg.gray, invert_p=cfg.invert, blur=cfg.blur,
                                 noise=cfg.pixel_noise, polarity=cfg.polarity),
        audio_train=AudioAugment(preset, train=True, log_floor=cfg.log_floor, specaugment=cfg.specaugment,
                                 freq_masks=cfg.spec_masks, time_masks=cfg.spec_masks,
                                 norm=cfg.audio_norm, time_shift=cfg.audio_shift, warp=cfg.audio_warp,
                                 level=cfg.audio_level),
        video_eval=VideoAugment(preset, train=False, channels_last=channels_last, norm=cfg.video_norm,
                                view=cfg.video_view, gray=cfg.gray, polarity=cfg.polarity),
        audio_eval=AudioAugment(preset, train=False, log_floor=cfg.log_floor, specaugment=False,
                                norm=cfg.audio_norm, level=cfg.audio_level),
    )


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum (the paper's), both with ``weight_decay``, at the base rate ``lr``."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def draw_prior(cfg: TrainConfig) -> torch.Tensor:
    """The cluster-size masses [H, K] (float64) each head's solves aim at (a Gaussian prior: one draw per head)."""
    H, K = cfg.num_heads, cfg.num_clusters
    if cfg.prior in ("uniform", "adaptive"):  # adaptive: uniform until its warm-up ends (labelling.solve_labels)
        return uniform_prior(K).double().expand(H, K).clone()
    if cfg.prior == "gaussian":
        return torch.stack([gaussian_prior_masses(K, sigma=cfg.prior_sigma, seed=seed_for(cfg.seed, PRIOR, h))
                            for h in range(H)]).double()
    return load_prior(cfg.prior, K).double().expand(H, K).clone()


def read_gt_codes(paths: pd.Series, gt: str | Path) -> np.ndarray:
    """Ground-truth class codes of the cache's videos (``paths``, in order) from ``gt``; -1 where unmatched."""
    from videolabel.groundtruth import join_ground_truth, read_ground_truth

    aligned, _ = join_ground_truth(paths, read_ground_truth(gt))
    if aligned.notna().sum() == 0:
        raise VideolabelError(f"no video of the cache matches a path in {gt}")
    codes, _ = pd.factorize(aligned)
    return codes


def wrap_model(model: Any, cfg: TrainConfig, info: DistInfo, cuda: bool) -> torch.nn.Module:
    """The module the training step calls: the encoders compiled (in place) with ``compile``, and the
    model in DistributedDataParallel (SyncBatchNorm on CUDA with ``sync_bn``) under several processes."""
    wrapped: torch.nn.Module = model
    if cfg.compile:
        model.video_encoder = cast(torch.nn.Module, torch.compile(model.video_encoder))
        model.audio_encoder = cast(torch.nn.Module, torch.compile(model.audio_encoder))
    if info.distributed:
        if cuda and cfg.sync_bn:
            wrapped = torch.nn.SyncBatchNorm.convert_sync_batchnorm(wrapped)
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[info.device.index] if cuda else None,
            find_unused_parameters=cfg.modalities != "both",
        )
    return wrapped
