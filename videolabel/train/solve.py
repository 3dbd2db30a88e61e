"""The label solve of a run (paper eq. 1-6), as functions the trainer calls and benchmarks time.

A solve is: the heads' log-probabilities from a label pass -> :func:`label_log_probs` (eq. 6 over the
modalities the run trains, :func:`~videolabel.cluster.combine.modality_log_probs`, which ``videolabel
assign`` uses too) -> :func:`solve_head` (the prior matched to the cluster sizes, eq. 4-5, then
Sinkhorn-Knopp, eq. 3) -> labels. :func:`modality_agreement_metrics` says whether the towers agree.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Literal, Mapping

import numpy as np
import torch
from torch import Tensor

from videolabel.cluster.combine import modality_log_probs
from videolabel.cluster.priors import match_prior
from videolabel.cluster.sinkhorn import SinkhornResult, sinkhorn
from videolabel.metrics import nmi

__all__ = ["label_log_probs", "modality_agreement_metrics", "solve_head"]


def label_log_probs(out: Mapping[str, Tensor], j: int, modalities: str, has_audio: Tensor, *,
                    balance: bool = False, all_reduce: Callable[[Tensor], Any] | None = None) -> Tensor:
    """The log P [n, K] that head ``out[...][j]`` is solved on.

    Args:
        out: a label pass's per-head log-probabilities ``{"video": [H', n, K], "audio": ...}``, or
            ``{"fused": ...}`` for a ``modalities="concat"`` run.
        j: the head's row in ``out``.
        modalities: the run's ``modalities``: ``both`` (eq. 6), ``video``, ``audio`` or ``concat``.
        has_audio: [n] bool.
        balance: the run's ``balance_modalities``.
        all_reduce: in-place sum across processes (the spreads of ``balance``), or None.
    """
    if modalities == "concat":
        return out["fused"][j]
    lv, la = out.get("video"), out.get("audio")
    use: Literal["both", "video", "audio"] = ("both" if modalities == "both" else
                                              "video" if modalities == "video" else "audio")
    return modality_log_probs(None if lv is None else lv[j], None if la is None else la[j], has_audio, use,
                              balance=balance, all_reduce=all_reduce)


def solve_head(log_p: Tensor, prior_masses: Tensor, previous: Tensor, *, match: bool, lam: float, tol: float,
               max_iters: int) -> SinkhornResult:
    """New labels of one head: Sinkhorn-Knopp (eq. 3) on ``log_p`` [n, K] with marginals ``r``.

    ``r`` is ``prior_masses`` [K], permuted so that the largest mass goes to the largest cluster of the
    ``previous`` labels [N] (eq. 4-5, :func:`~videolabel.cluster.priors.match_prior`) when ``match`` (a
    non-uniform prior). Not reaching ``tol`` in ``max_iters`` is reported in the result, not warned.
    """
    K = prior_masses.shape[-1]
    r = prior_masses
    if match:
        r = match_prior(prior_masses, torch.bincount(previous, minlength=K).double())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sinkhorn(log_p, r.to(log_p.device), lam=lam, tol=tol, max_iters=max_iters)


def modality_agreement_metrics(labels: Tensor, argmaxes: Tensor, has_audio: Tensor) -> dict[str, float]:
    """Do the two towers predict the same clusters, and which one decides the labels?

    SeLaVi trains both encoders to predict one labelling (eq. 6 combines their log-probabilities), so
    on a healthy run the video and audio heads agree and the labels follow both. Where one tower fits
    labels the other cannot predict (memorised instances, a nuisance of its own), the labels follow
    that tower and agreement stays low: the failure seen on AV-Digits (docs/method.md).

    Args:
        labels: [H, N] labels just solved.
        argmaxes: [2H, N] the label pass's per-modality argmax: video heads in rows 0..H-1, audio heads
            in rows H..2H-1.
        has_audio: [N] bool; videos without audio are left out of the audio figures.

    Returns:
        ``modality_agreement``: fraction of videos whose video and audio argmax coincide;
        ``labels_nmi_video`` / ``labels_nmi_audio``: NMI between the labels and each tower's argmax;
        each the mean over heads.
    """
    H = labels.shape[0]
    ok = has_audio.bool().numpy()
    lab, arg = labels.numpy(), argmaxes.numpy()
    if not ok.any():
        return {}
    agree = [float(np.mean(arg[h][ok] == arg[H + h][ok])) for h in range(H)]
    by_v = [nmi(lab[h], arg[h]) for h in range(H)]
    by_a = [nmi(lab[h][ok], arg[H + h][ok]) for h in range(H)]
    return {"modality_agreement": float(np.mean(agree)), "labels_nmi_video": float(np.mean(by_v)),
            "labels_nmi_audio": float(np.mean(by_a))}
