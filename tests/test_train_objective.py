"""The training loss and the cluster-size figures of a solve, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videolabel.train.objective import cluster_size_entropy, cluster_sizes, clusters_used, selavi_loss


def _ce(logits: list[float], y: int) -> float:
    return -(logits[y] - math.log(sum(math.exp(v) for v in logits)))


def test_loss_of_both_towers_by_hand():
    # H=1 head, B=2 videos, K=2; the second video has no audio
    video = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    audio = torch.tensor([[[0.0, 3.0], [5.0, -5.0]]])
    y = torch.tensor([[0, 1]])
    has_audio = torch.tensor([True, False])
    loss = selavi_loss({"video_logits": video, "audio_logits": audio}, y, has_audio)
    ce_v = (_ce([2.0, 0.0], 0) + _ce([0.0, 1.0], 1)) / 2
    ce_a = _ce([0.0, 3.0], 0)  # the video without audio does not count
    assert loss.item() == pytest.approx(0.5 * ce_v + 0.5 * ce_a, rel=1e-6)


def test_loss_of_one_tower_and_of_fusion_heads():
    logits = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 2.0]]])  # H=2, B=1, K=3
    y = torch.tensor([[0], [1]])
    want = (_ce([1.0, 0.0, 0.0], 0) + _ce([0.0, 0.0, 2.0], 1)) / 2  # the mean over heads
    has = torch.tensor([True])
    assert selavi_loss({"video_logits": logits}, y, has).item() == pytest.approx(want, rel=1e-6)
    assert selavi_loss({"audio_logits": logits}, y, has).item() == pytest.approx(want, rel=1e-6)
    assert selavi_loss({"fused_logits": logits}, y, has).item() == pytest.approx(want, rel=1e-6)
    # no video has audio: the audio term is 0 (not NaN), so the loss is half the video CE
    both = selavi_loss({"video_logits": logits, "audio_logits": logits}, y, torch.tensor([False]))
    assert both.item() == pytest.approx(want / 2, rel=1e-6)
    with pytest.raises(ValueError):
        selavi_loss({}, y, has)


def test_loss_has_gradients():
    logits = torch.zeros(1, 2, 4, requires_grad=True)
    selavi_loss({"video_logits": logits}, torch.tensor([[0, 3]]), torch.tensor([True, True])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_cluster_size_figures_by_hand():
    labels = np.array([[0, 0, 1, 1], [2, 2, 2, 2], [0, 1, 2, 3]])  # K=4
    sizes = cluster_sizes(labels, 4)
    np.testing.assert_array_equal(sizes, [[0.5, 0.5, 0, 0], [0, 0, 1, 0], [0.25] * 4])
    ent = cluster_size_entropy(sizes)
    np.testing.assert_allclose(ent, [math.log(2) / math.log(4), 0.0, 1.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(clusters_used(sizes), [2, 1, 4])
