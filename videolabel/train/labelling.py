"""The label steps of a run: modality alignment (eq. 7), the label solve (eq. 1-6), the final distillation.

Each function runs its passes (:class:`~videolabel.train.passes.Passes`) and returns what it computed
(permutations applied to the model, new labels, a metrics row); the trainer keeps the run's state.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from videolabel.cluster.align import align_heads, permute_linear_
from videolabel.cluster.priors import ADAPTIVE_WARMUP, adaptive_prior
from videolabel.metrics import nmi
from videolabel.seeds import ALIGN, BN, LABEL, SPLIT, generator, seed_for
from videolabel.train import dist as D
from videolabel.train.distill import distill_heads, final_stream_weights, kmeans_labels
from videolabel.train.objective import cluster_size_entropy, cluster_sizes, clusters_used
from videolabel.train.passes import Passes
from videolabel.train.solve import label_log_probs, modality_agreement_metrics, solve_head

__all__ = ["ALIGN_MAX_VIDEOS", "align_modalities", "distill_labels", "solve_labels", "solve_metrics"]

#: Videos used for the modality alignment before training (a random sample; eq. 7 is a sum over them).
ALIGN_MAX_VIDEOS = 8192


def align_modalities(passes: Passes) -> list[tuple[float, float]]:
    """Permute each audio head's output rows to best match its visual head (once, before training).

    Computed on rank 0 on a random sample of videos (the costs before and after, per head, are
    returned there; an empty list elsewhere); rank 0's permuted heads are then broadcast."""
    cfg, info, model = passes.cfg, passes.info, passes.model
    costs: list[tuple[float, float]] = []
    if info.is_main and cfg.modalities == "both":
        g = generator(seed_for(cfg.seed, ALIGN))
        videos = torch.randperm(passes.n, generator=g)[:ALIGN_MAX_VIDEOS].sort().values.numpy()
        p = passes.head_log_probs(passes.clips_for(videos, seed_for(cfg.seed, ALIGN, 1)),
                                  seed_for(cfg.seed, ALIGN, 2), softmax=True)
        p_v, p_a = p["video"], p["audio"]
        for h in range(cfg.num_heads):
            res = align_heads(p_a[h].cpu(), p_v[h].cpu(), proposals=cfg.align_proposals,
                              restarts=cfg.align_restarts, seed=seed_for(cfg.seed, ALIGN, 3, h))
            permute_linear_(model.last_linear("audio", h), res.perm.to(info.device))
            costs.append((float(res.cost_before), float(res.cost_after)))
    if info.distributed:  # rank 0's permuted heads to everyone
        for param in model.audio_heads.parameters():
            torch.distributed.broadcast(param.data, src=0)
    return costs


def solve_labels(passes: Passes, labels: torch.Tensor, prior_masses: torch.Tensor, solve_index: int,
                 has_audio: torch.Tensor, *, recalibrate: bool) -> tuple[torch.Tensor, dict[str, Any]]:
    """Solve ``solve_index``: label-pass outputs under two augmentations, half the heads on each
    (decorrelated heads), modalities combined (eq. 6), prior matched (eq. 4-5), Sinkhorn (eq. 3).

    ``labels`` [H, N]: the current ones (for the prior matching); ``recalibrate``: precise BatchNorm
    statistics first (``label_bn="precise"``). Returns the new labels [H, N] (CPU) and the solve's
    timings (``solve_s``, ``label_pass_s``), Sinkhorn and modality-agreement metrics."""
    cfg, info, H = passes.cfg, passes.info, passes.cfg.num_heads
    dev, n = info.device, passes.n
    start, stop = D.split_range(n, info.world_size, info.rank)
    videos = np.arange(start, stop)
    n_aug = 2 if cfg.decorrelate else 1
    which = torch.zeros(H, dtype=torch.int64)
    if n_aug == 2:
        half = torch.randperm(H, generator=generator(seed_for(cfg.seed, SPLIT, solve_index)))[: H // 2]
        which[half] = 1
    t0 = time.perf_counter()
    if recalibrate:
        passes.recalibrate_bn(seed_for(cfg.seed, BN, 1, solve_index), train_aug=True)
    present_a = has_audio[start:stop].to(dev)
    reduce = torch.distributed.all_reduce if D.is_dist() else None
    # each augmentation pass keeps only its own heads' outputs and folds them into log P at once
    # (eq. 6), so memory holds H x n x K log-probabilities plus one pass's half
    log_ps: list[torch.Tensor | None] = [None] * H
    # per-modality argmaxes [n_local, 2H] (video of head h in column h, audio in H + h): whether the
    # two towers predict the same clusters, the premise of the method (modality_agreement_metrics)
    both = cfg.modalities == "both"
    argmaxes = torch.zeros(stop - start, 2 * H if both else 0, dtype=torch.int64, device=dev)
    for a in range(n_aug):
        mine = [h for h in range(H) if int(which[h]) == a]
        if not mine:
            continue
        out = passes.head_log_probs(passes.clips_for(videos, seed_for(cfg.seed, LABEL, solve_index, a)),
                                    seed_for(cfg.seed, LABEL, solve_index, a, 7), heads=mine)
        for j, h in enumerate(mine):
            if both:
                argmaxes[:, h] = out["video"][j].argmax(-1)
                argmaxes[:, H + h] = out["audio"][j].argmax(-1)
            log_ps[h] = label_log_probs(out, j, cfg.modalities, present_a, balance=cfg.balance_modalities,
                                        all_reduce=reduce)
        del out
    t_pass = time.perf_counter() - t0
    new_local = []
    sk_err, sk_iters = 0.0, 0
    adaptive = cfg.prior == "adaptive" and solve_index >= math.ceil(ADAPTIVE_WARMUP * cfg.n_solves)
    r_ratio = 0.0
    for h in range(H):
        log_p = log_ps[h]
        log_ps[h] = None
        assert log_p is not None  # every head belongs to one augmentation pass
        r = prior_masses[h]
        if adaptive:  # the model's predicted masses (already in its cluster order: no matching)
            r = adaptive_prior(log_p, all_reduce=reduce).cpu()
            r_ratio = max(r_ratio, float(r.max() / r.min()))
        res = solve_head(log_p, r, labels[h], match=cfg.prior not in ("uniform", "adaptive"), lam=cfg.lam,
                         tol=cfg.sinkhorn_tol, max_iters=cfg.sinkhorn_iters)  # not reaching tol: recorded below
        new_local.append(res.labels.to(dev))
        sk_err = max(sk_err, float(res.error))
        sk_iters = max(sk_iters, int(res.iterations))
    local = torch.stack(new_local, dim=1)  # [n_local, H]
    new = D.all_gather_rows(local, n).T.contiguous().cpu()
    t_total = time.perf_counter() - t0
    m: dict[str, Any] = {"solve_s": round(t_total, 3), "label_pass_s": round(t_pass, 3),
                         "sinkhorn_error": sk_err, "sinkhorn_iterations": sk_iters}
    if adaptive:
        m["prior_max_ratio"] = round(r_ratio, 3)  # largest / smallest adaptive mass, over the heads
    if both:
        m.update(modality_agreement_metrics(new, D.all_gather_rows(argmaxes, n).T.cpu(), has_audio.cpu()))
    return new, m


def solve_metrics(old: torch.Tensor, new: torch.Tensor, num_clusters: int, solve: int, step: int,
                  gt_codes: np.ndarray | None, **first: Any) -> dict[str, Any]:
    """The ``solve`` row: ``first`` (e.g. timings), then stability (NMI to the previous labels ``old``;
    from the second solve on), cluster-size entropy, clusters used, NMI to the ground truth (monitoring)."""
    labels = new.numpy()
    m: dict[str, Any] = {"event": "solve", "solve": solve, "step": step, **first}
    if solve > 0:
        m["label_stability"] = float(np.mean([nmi(old[h].numpy(), labels[h]) for h in range(len(labels))]))
    sizes = cluster_sizes(labels, num_clusters)
    m["cluster_size_entropy"] = float(cluster_size_entropy(sizes).mean())
    m["clusters_used"] = float(clusters_used(sizes).mean())
    if gt_codes is not None:
        ok = gt_codes >= 0
        scores = [nmi(gt_codes[ok], labels[h][ok]) for h in range(len(labels))]
        m["nmi_gt_head0"] = float(scores[0])
        m["nmi_gt_mean"] = float(np.mean(scores))
    return m


def distill_labels(passes: Passes, labels: torch.Tensor, has_audio: torch.Tensor, step: int,
                   gt_codes: np.ndarray | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """``final_labels="features"``: the run's labels become k-means on the final features, learnt by the heads.

    See :mod:`videolabel.train.distill`. Every process runs the same k-means on the gathered features
    and the heads' gradients are averaged over processes. Returns the new labels [H, N] and the
    ``distill`` row (``labels``: the last solve's, compared with the new ones)."""
    cfg, info, H, K = passes.cfg, passes.info, passes.cfg.num_heads, passes.cfg.num_clusters
    t0 = time.perf_counter()
    fv, fa, owner, mean = passes.final_features()
    full = D.all_gather_rows(mean, passes.n).cpu()
    dv = fv.shape[1]
    both = cfg.modalities in ("both", "concat")
    space = cfg.final_space if both else "joint"  # shared needs both streams
    weights = None
    if both and cfg.stream_weights == "auto":
        weights = final_stream_weights(full[:, :dv], full[:, dv:], has_audio.cpu(), K, cfg.seed)
    new = kmeans_labels(full[:, :dv], full[:, dv:], has_audio.cpu(), K, H, cfg.seed, space=space, weights=weights)
    steps, fit = distill_heads(passes.model, fv, fa, owner, new, has_audio, epochs=cfg.distill_epochs,
                               weight_decay=cfg.weight_decay, seed=cfg.seed, rank=info.rank,
                               world_size=info.world_size)
    m: dict[str, Any] = {"event": "distill", "step": step, "distill_s": round(time.perf_counter() - t0, 3),
                         "distill_steps": steps, "heads_fit": fit,
                         "labels_nmi_last_solve": float(np.mean([nmi(labels[h].numpy(), new[h].numpy())
                                                                  for h in range(H)]))}
    if weights is not None:
        m.update(weights.record())
    if gt_codes is not None:
        ok = gt_codes >= 0
        m["nmi_gt_head0"] = float(nmi(gt_codes[ok], new[0].numpy()[ok]))
    return new, m
