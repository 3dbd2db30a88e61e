"""Cluster marginals and their matching to the clusters (paper section 3.2, eq. 4-5, appendix A.2)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from videolabel.cluster.priors import adaptive_prior, gaussian_prior_masses, load_prior, match_prior, uniform_prior
from videolabel.cluster.sinkhorn import sinkhorn
from videolabel.errors import VideolabelError


def test_uniform_prior() -> None:
    r = uniform_prior(7)
    assert r.dtype == torch.float64 and r.shape == (7,)
    torch.testing.assert_close(r, torch.full((7,), 1 / 7, dtype=torch.float64))
    with pytest.raises(ValueError):
        uniform_prior(0)


def test_gaussian_prior_is_seeded_normalised_and_has_the_asked_spread() -> None:
    a = gaussian_prior_masses(20000, seed=5)
    b = gaussian_prior_masses(20000, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, gaussian_prior_masses(20000, seed=6))
    assert abs(a.sum().item() - 1.0) < 1e-12 and (a > 0).all()
    m = a * a.numel()  # back to masses around 1
    assert abs(m.std().item() - 0.1) < 0.005
    wide = gaussian_prior_masses(1000, sigma=3.0, seed=0)  # many negative draws: clipped, still positive
    assert (wide > 0).all() and abs(wide.sum().item() - 1.0) < 1e-12
    with pytest.raises(ValueError):
        gaussian_prior_masses(10, seed=1, generator=torch.Generator())


def test_load_prior_formats(tmp_path: Path) -> None:
    expected = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) / 10.0
    (tmp_path / "a.txt").write_text("# masses\n1\n2\n3\n4\n")
    (tmp_path / "b.csv").write_text("mass\n1,2\n3;4\n")
    np.save(tmp_path / "c.npy", np.array([[1, 2, 3, 4]]))
    for name in ("a.txt", "b.csv", "c.npy"):
        torch.testing.assert_close(load_prior(tmp_path / name, 4), expected)


@pytest.mark.parametrize(
    ("content", "k"),
    [("1\n2\n3\n", 4), ("1\n-2\n3\n4\n", 4), ("1\nabc\n3\n4\n", 4), ("0\n0\n", 2), ("1\nnan\n", 2)],
)
def test_load_prior_rejects_bad_files(tmp_path: Path, content: str, k: int) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(VideolabelError):
        load_prior(path, k)


def test_load_prior_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(VideolabelError, match="not found"):
        load_prior(tmp_path / "missing.txt", 3)
    (tmp_path / "broken.npy").write_bytes(b"not a numpy file")
    with pytest.raises(VideolabelError):
        load_prior(tmp_path / "broken.npy", 3)


def test_match_prior_gives_the_largest_mass_to_the_largest_cluster() -> None:
    r = match_prior(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([10, 50, 20]))
    torch.testing.assert_close(r, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))
    # not the inverted matching of the authors' code
    assert r.argmax().item() == 1 and r.argmin().item() == 0


def test_match_prior_ties_are_deterministic() -> None:
    r1 = match_prior(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([5, 5, 5, 5]))
    torch.testing.assert_close(r1, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    r2 = match_prior(torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([5, 5, 5, 5]))
    assert torch.equal(r1, r2)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7])
def test_match_prior_is_the_brute_force_optimum(k: int) -> None:
    """Over all K! permutations, no matching beats ours on eq. 4 (sum q log r) nor on sum q r."""
    rng = np.random.default_rng(k)
    perms = np.array(list(itertools.permutations(range(k))))
    for trial in range(30):
        m = rng.gamma(1.0 + trial % 3, size=k) + 1e-3
        m /= m.sum()
        q = rng.integers(0, 5, size=k) if trial % 2 else rng.random(k)  # integer counts: many ties
        r = match_prior(torch.from_numpy(m), torch.from_numpy(q)).numpy()
        # r is a permutation of m
        np.testing.assert_allclose(np.sort(r), np.sort(m), rtol=1e-12)
        for objective in (np.log, lambda x: x):
            best = (q[None, :] * objective(m[perms])).sum(1).max()
            ours = (q * objective(r)).sum()
            assert ours >= best - 1e-12 * max(1.0, abs(best))


def test_match_prior_validation() -> None:
    with pytest.raises(ValueError):
        match_prior(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError):
        match_prior(torch.tensor([1.0, -1.0]), torch.ones(2))


def test_adaptive_prior_is_the_floored_mean_prediction_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 6, generator=g) * 2
    logits[:, 5] -= 20  # a cluster nobody predicts: held at the floor
    got = adaptive_prior(logits, floor=0.1)
    p = torch.softmax(logits.double(), 1)
    want = [max(float(p[:, k].mean()), 0.1 / 6) for k in range(6)]
    want = [w / sum(want) for w in want]
    assert got.dtype == torch.float64 and got.sum().item() == pytest.approx(1.0)
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    assert got[5].item() == pytest.approx(min(want))
    # log-probabilities and logits give the same masses; floor 0 is the plain mean
    assert torch.allclose(adaptive_prior(torch.log_softmax(logits, 1)), got)
    assert torch.allclose(adaptive_prior(logits, floor=0.0), p.mean(0) / p.mean(0).sum())


def test_adaptive_prior_over_shards_equals_the_whole() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(30, 4, generator=g)
    whole = adaptive_prior(logits)
    shards = [logits[:10], logits[10:]]
    for i, mine in enumerate(shards):  # a two-process all-reduce: add the other shard's sums in place
        other = shards[1 - i]
        sums = iter([torch.softmax(other.double(), 1).sum(0), torch.tensor([float(len(other))], dtype=torch.float64)])

        def all_reduce(t: torch.Tensor, sums=sums) -> None:
            t.add_(next(sums))

        assert torch.allclose(adaptive_prior(mine, all_reduce=all_reduce), whole)


def test_adaptive_prior_lets_sinkhorn_keep_skewed_classes_that_uniform_splits() -> None:
    # 3 classes of 600 / 300 / 100 videos whose predictions each favour their class: the uniform
    # marginal forces 333 per cluster (moving videos of the large class into the others); the adaptive one
    # follows the predicted sizes and labels more videos by their class
    sizes = [600, 300, 100]
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(len(y), 3, generator=g) * 0.5
    logits[torch.arange(len(y)), y] += 1.5  # each video favours its class, some more than others
    log_p = torch.log_softmax(logits, 1)
    uni = sinkhorn(log_p, uniform_prior(3), lam=20.0).labels
    ada = sinkhorn(log_p, adaptive_prior(log_p), lam=20.0).labels
    assert torch.bincount(uni, minlength=3).tolist() == pytest.approx([333, 333, 333], abs=5)
    assert torch.bincount(ada, minlength=3)[0] > 420  # one solve moves most of the way (the training iterates)
    assert (ada == y).float().mean().item() > (uni == y).float().mean().item() + 0.1


def test_adaptive_prior_validation() -> None:
    with pytest.raises(ValueError):
        adaptive_prior(torch.zeros(3))
    with pytest.raises(ValueError):
        adaptive_prior(torch.zeros(3, 2), floor=1.5)
