"""Distilling k-means labels into the heads, on features made to be separable."""

from __future__ import annotations

import torch

from videolabel.kmeans import kmeans, pooled_features
from videolabel.models import build_model
from videolabel.seeds import DISTILL, seed_for
from videolabel.train.distill import distill_heads, kmeans_labels


def _features(n: int, k: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(n) % k
    centres = 6 * torch.randn(k, d, generator=g)
    return centres[truth] + 0.1 * torch.randn(n, d, generator=g), truth


def test_kmeans_labels_and_distilled_heads_learn_them():
    torch.manual_seed(0)
    model = build_model("tiny", num_clusters=3, num_heads=2)
    n = 60
    fv, truth = _features(n, 3, model.feat_dim_v, seed=1)
    fa, _ = _features(n, 3, model.feat_dim_a, seed=2)
    has_audio = torch.ones(n, dtype=torch.bool)
    labels = kmeans_labels(fv, fa, has_audio, 3, 2, seed=0)
    assert labels.shape == (2, n) and labels.dtype == torch.int64
    x = pooled_features(fv, fa, has_audio, "both", pca=32)  # as assign --method kmeans, one seed per head
    for h in range(2):
        want = kmeans(x, 3, seed=seed_for(0, DISTILL, h) % (1 << 31)).labels
        assert labels[h].tolist() == list(want)
    labels = torch.stack([truth, (truth + 1) % 3])  # clear clusters to learn
    before = [p.clone() for p in model.video_encoder.parameters()]
    owner = torch.arange(n)
    steps, fit = distill_heads(model, fv, fa, owner, labels, has_audio, epochs=10, weight_decay=0.0, seed=0,
                               rank=0, world_size=1)
    assert steps == 10 * 2  # 60 clips in batches of 32: two steps an epoch
    assert fit == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.video_encoder.parameters()))  # heads only


def test_shared_space_labels_are_kmeans_on_the_canonical_variates():
    """final_space=shared: k-means on what the two modalities share (as assign --method kmeans --space
    shared), one seed per head; on classes both modalities see, the labels find them."""
    from videolabel.cluster.cca import SHARED_PCA, shared_dims
    from videolabel.metrics import nmi

    model = build_model("tiny", num_clusters=3, num_heads=2)
    n = 90
    fv, truth = _features(n, 3, model.feat_dim_v, seed=1)
    fa, _ = _features(n, 3, model.feat_dim_a, seed=2)
    has_audio = torch.ones(n, dtype=torch.bool)
    labels = kmeans_labels(fv, fa, has_audio, 3, 2, seed=0, space="shared")
    x = pooled_features(fv, fa, has_audio, "both", pca=SHARED_PCA, shared=shared_dims(3))
    assert x.shape == (n, 2 * shared_dims(3))
    for h in range(2):
        assert labels[h].tolist() == list(kmeans(x, 3, seed=seed_for(0, DISTILL, h) % (1 << 31)).labels)
        assert nmi(truth.numpy(), labels[h].numpy()) > 0.99
