"""The report's map: PCA to 2-D, alignment of the features to the assignments, the SVG."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from videolabel.errors import VideolabelError
from videolabel.features import FeatureTable
from videolabel.report.projection import map_features, pca_2d, svg_scatter


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two groups of 50 points in 10-D, 8 apart along a random direction, unit noise."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=10)
    d /= np.linalg.norm(d)
    lab = np.repeat([0, 1], 50)
    return rng.normal(size=(100, 10)) + 8 * lab[:, None] * d, lab


def test_first_axis_separates_two_groups_and_shares_are_ordered():
    x, lab = _blobs()
    xy, share = pca_2d(x)
    assert xy.shape == (100, 2)
    a, b = xy[lab == 0, 0], xy[lab == 1, 0]
    assert a.max() < b.min() or b.max() < a.min()  # every point of one group on one side
    assert 1.0 >= share[0] + share[1] and share[0] > 0.5 > share[1] > 0  # the gap holds most of the variance
    assert np.allclose(xy.mean(axis=0), 0, atol=1e-9)  # centred


def test_same_features_same_picture_whatever_the_row_order():
    x, _ = _blobs(1)
    perm = np.random.default_rng(2).permutation(len(x))
    xy, _ = pca_2d(x)
    xy2, _ = pca_2d(x[perm])
    np.testing.assert_allclose(xy2, xy[perm], atol=1e-9)  # no sign flip between the two


def test_degenerate_inputs():
    xy, share = pca_2d(np.ones((5, 3)))  # no variance: every point at the origin
    assert np.allclose(xy, 0) and np.allclose(share, 0)
    xy, _ = pca_2d(np.arange(4.0)[:, None])  # one dimension: the second axis is zero
    assert xy.shape == (4, 2) and np.allclose(xy[:, 1], 0) and np.allclose(np.abs(xy[:, 0]), [1.5, 0.5, 0.5, 1.5])
    with pytest.raises(VideolabelError, match="NaN"):
        pca_2d(np.array([[0.0, np.nan], [1.0, 2.0]]))


def test_features_are_matched_by_video_id_and_missing_rows_left_out():
    df = pd.DataFrame({"video_id": ["a", "b", "c", "d"], "path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]})
    ids = pd.DataFrame({"video_id": ["d", "b", "a"], "path": ["d.mp4", "b.mp4", "a.mp4"]})
    video = np.array([[4.0, 0.0], [2.0, 0.0], [0.0, 1.0]], np.float32)  # d, b, a
    audio = np.array([[0.0, 3.0], [1.0, 0.0], [0.0, 0.0]], np.float32)
    x, rows = map_features(df, FeatureTable(ids=ids, video=video, audio=audio), np.array([True, True, True, False]))
    assert rows.tolist() == [0, 1, 3]  # c has no features
    # each modality L2-normalised, zeros where a video has no sound (a's audio row is zero here anyway)
    np.testing.assert_allclose(x, [[0, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]], atol=1e-6)
    with pytest.raises(VideolabelError, match="no video of the assignments"):
        map_features(df.assign(video_id=list("wxyz"), path=list("wxyz")), FeatureTable(ids=ids, video=video, audio=audio),
                     np.ones(4, bool))


def test_svg_escapes_titles_and_links_and_draws_every_point():
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]])
    svg = svg_scatter(xy, [0, 1, 1], titles=["<b>a</b>", 'x"y', "z"], links=["cluster_000.html", None, 'q"><x']
                      , size=100, pad=10)
    assert svg.count("<circle") == 3 and svg.count("<a ") == 2
    assert "<b>" not in svg and "&lt;b&gt;a&lt;/b&gt;" in svg and 'href="q&quot;&gt;&lt;x"' in svg
    cx = [float(v) for v in re.findall(r'cx="([\d.]+)"', svg)]
    cy = [float(v) for v in re.findall(r'cy="([\d.]+)"', svg)]
    assert cx == [10.0, 50.0, 90.0] and cy == [90.0, 10.0, 50.0]  # x to the right, y up, within the padding
    fills = re.findall(r'fill="(#[0-9a-f]{6})" data-c', svg)
    assert fills[1] == fills[2] != fills[0]
