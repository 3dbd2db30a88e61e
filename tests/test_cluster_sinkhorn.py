"""Sinkhorn-Knopp self-labelling (eq. 1-3): marginals, planted labels, numerics, batching, distributed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videolabel.cluster.priors import gaussian_prior_masses
from videolabel.cluster.sinkhorn import sinkhorn, sinkhorn_multihead

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("single_thread")


def _log_domain_reference(log_p: torch.Tensor, r: torch.Tensor, lam: float = 20.0, iters: int = 3000) -> torch.Tensor:
    """Plain log-domain Sinkhorn in float64 (slow but obviously right): the plan Q of eq. 3."""
    a = lam * log_p.double()
    n, _ = a.shape
    u = torch.zeros(n, dtype=torch.float64)
    v = torch.zeros(a.shape[1], dtype=torch.float64)
    log_r = r.double().log()
    log_c = -torch.log(torch.tensor(float(n), dtype=torch.float64))
    for _ in range(iters):
        v = log_r - torch.logsumexp(a + u[:, None], 0)
        u = log_c - torch.logsumexp(a + v[None, :], 1)
    return (a + u[:, None] + v[None, :]).exp()


def _check_marginals(plan: torch.Tensor, r: torch.Tensor, tol: float = 1e-6) -> None:
    n = plan.shape[0]
    torch.testing.assert_close(plan.sum(1), torch.full((n,), 1.0 / n, dtype=torch.float64), rtol=1e-10, atol=0)
    rel = ((plan.sum(0) - r.double()) / r.double()).abs().max().item()
    assert rel < tol


@pytest.mark.parametrize("prior", ["uniform", "gaussian"])
def test_plan_marginals(prior: str) -> None:
    torch.manual_seed(0)
    n, k = 1000, 10
    log_p = torch.log_softmax(2.0 * torch.randn(n, k), 1)
    r = torch.full((k,), 1.0 / k, dtype=torch.float64) if prior == "uniform" else gaussian_prior_masses(k, seed=1)
    res = sinkhorn(log_p, None if prior == "uniform" else r, return_plan=True)
    assert res.plan is not None and res.plan.dtype == torch.float64
    assert res.error < 1e-6
    _check_marginals(res.plan, r)
    assert res.labels.dtype == torch.int64 and res.labels.shape == (n,)
    assert torch.equal(res.labels, res.plan.argmax(1))


def test_matches_log_domain_reference() -> None:
    torch.manual_seed(1)
    log_p = torch.log_softmax(torch.randn(200, 5), 1)
    r = torch.tensor([0.1, 0.15, 0.2, 0.25, 0.3], dtype=torch.float64)
    res = sinkhorn(log_p, r, tol=1e-12, max_iters=20000, return_plan=True)
    ref = _log_domain_reference(log_p, r)
    torch.testing.assert_close(res.plan, ref, rtol=1e-7, atol=1e-12)
    assert torch.equal(res.labels, ref.argmax(1))


def test_planted_labels_are_recovered() -> None:
    torch.manual_seed(2)
    sizes = [100, 200, 300]
    truth = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    logits = 3.0 * torch.nn.functional.one_hot(truth, 3).float() + 0.5 * torch.randn(len(truth), 3)
    log_p = torch.log_softmax(logits, 1)
    r = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
    assert torch.equal(sinkhorn(log_p, r, tol=1e-4).labels, truth)
    # With a uniform prior and balanced planted clusters, too.
    balanced = torch.arange(300) % 3
    logits = 3.0 * torch.nn.functional.one_hot(balanced, 3).float() + 0.5 * torch.randn(300, 3)
    assert torch.equal(sinkhorn(torch.log_softmax(logits, 1), tol=1e-4).labels, balanced)


def test_equipartition_against_a_collapsed_network() -> None:
    """All samples prefer cluster 0: the uniform constraint still spreads them (the point of eq. 2)."""
    torch.manual_seed(3)
    n, k = 2000, 4
    logits = torch.tensor([4.0, 0.0, 0.0, 0.0]) + 0.3 * torch.randn(n, k)
    res = sinkhorn(torch.log_softmax(logits, 1))
    counts = torch.bincount(res.labels, minlength=k).double() / n
    assert (counts - 0.25).abs().max() < 0.05


def test_float32_underflow_of_p_power_lambda() -> None:
    """P^20 is exactly 0 in float32 for every entry here (K = 300: p ~ 3e-3, p^20 < 1e-45)."""
    torch.manual_seed(4)
    n, k = 900, 300
    log_p = torch.log_softmax(0.1 * torch.randn(n, k), 1)
    assert torch.exp(20.0 * log_p).max().item() == 0.0
    r = torch.full((k,), 1.0 / k, dtype=torch.float64)
    res = sinkhorn(log_p, return_plan=True)
    assert res.plan is not None and torch.isfinite(res.plan).all()
    _check_marginals(res.plan, r)
    ref = _log_domain_reference(log_p, r, iters=100)
    assert (res.labels == ref.argmax(1)).float().mean().item() > 0.999


def test_gaps_beyond_float64_range_use_stabilisation() -> None:
    """Log-probability gaps of 60 nats: exp(-1200) underflows even float64; the solver must absorb."""
    log_p = torch.zeros(6, 2)
    log_p[:, 1] = -60.0
    log_p[0] = torch.tensor([-60.0, 0.0])
    log_p[1] = torch.tensor([-59.0, 0.0])
    log_p = log_p - torch.logsumexp(log_p, 1, keepdim=True)
    res = sinkhorn(log_p, tol=1e-9, max_iters=100000, return_plan=True)
    assert res.error < 1e-9
    assert res.plan is not None
    _check_marginals(res.plan, torch.tensor([0.5, 0.5]), tol=1e-9)
    assert res.labels[:2].tolist() == [1, 1]


def test_zero_mass_cluster_gets_nothing() -> None:
    torch.manual_seed(5)
    log_p = torch.log_softmax(torch.randn(300, 4), 1)
    r = torch.tensor([0.0, 0.2, 0.3, 0.5])
    res = sinkhorn(log_p, r, return_plan=True)
    assert res.plan is not None
    assert res.plan[:, 0].abs().max().item() == 0.0
    assert (res.labels != 0).all()
    _check_marginals(res.plan[:, 1:], r[1:])


def test_prior_is_normalised_and_dtypes_are_accepted() -> None:
    torch.manual_seed(6)
    log_p = torch.log_softmax(torch.randn(400, 6), 1)
    base = sinkhorn(log_p, torch.arange(1.0, 7.0) / 21.0)
    scaled = sinkhorn(log_p.to(torch.bfloat16).float(), torch.arange(1.0, 7.0))  # unnormalised counts
    assert base.labels.shape == scaled.labels.shape
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        res = sinkhorn(log_p.to(dtype))
        assert res.labels.dtype == torch.int64 and res.error < 1e-6


def test_multihead_equals_single_solves() -> None:
    torch.manual_seed(7)
    h, n, k = 3, 500, 8
    log_ps = torch.log_softmax(1.5 * torch.randn(h, n, k), 2)
    rs = [gaussian_prior_masses(k, seed=s) for s in range(h)]
    for heads_per_batch in (None, 2):
        multi = sinkhorn_multihead(log_ps, rs, tol=1e-9, return_plan=True, heads_per_batch=heads_per_batch)
        assert len(multi) == h
        for i in range(h):
            single = sinkhorn(log_ps[i], rs[i], tol=1e-9, return_plan=True)
            assert torch.equal(multi[i].labels, single.labels)
            assert multi[i].plan is not None and single.plan is not None
            torch.testing.assert_close(multi[i].plan, single.plan, rtol=1e-6, atol=1e-12)
            _check_marginals(multi[i].plan, rs[i])
    # a list of heads with different K, shared uniform prior
    mixed = sinkhorn_multihead([log_ps[0], torch.log_softmax(torch.randn(n, 5), 1)])
    assert [m.labels.shape for m in mixed] == [(n,), (n,)]
    assert mixed[1].labels.max().item() <= 4


def test_invalid_inputs_raise() -> None:
    log_p = torch.log_softmax(torch.randn(10, 3), 1)
    bad = log_p.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError):
        sinkhorn(bad)
    with pytest.raises(ValueError):
        sinkhorn(log_p, torch.ones(4))
    with pytest.raises(ValueError):
        sinkhorn(log_p, torch.tensor([0.5, -0.1, 0.6]))
    dead = log_p.clone()
    dead[:, 0] = float("-inf")
    with pytest.raises(ValueError):
        sinkhorn(dead)
    assert (sinkhorn(dead, torch.tensor([0.0, 0.5, 0.5]), max_iters=20000).labels != 0).all()
    with pytest.raises(ValueError):
        sinkhorn(log_p[0])


def test_not_converged_warns_and_reports_error() -> None:
    torch.manual_seed(8)
    log_p = torch.log_softmax(5.0 * torch.randn(200, 5), 1)
    with pytest.warns(RuntimeWarning):
        res = sinkhorn(log_p, tol=1e-12, max_iters=2)
    assert res.iterations == 2 and res.error > 1e-12


DIST_N, DIST_K, DIST_H = 1001, 12, 3  # N odd: uneven split; plus a split with an empty rank
DIST_SPLITS = [[501, 500], [700, 301], [DIST_N, 0]]


@pytest.fixture(scope="module")
def dist_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run tests/dist_sinkhorn_worker.py once on 2 gloo ranks (CPU) and collect both ranks' outputs."""
    tmp_path = tmp_path_factory.mktemp("dist_sinkhorn")
    gen = torch.Generator().manual_seed(9)
    log_ps = torch.log_softmax(1.5 * torch.randn(DIST_H, DIST_N, DIST_K, generator=gen), 2)
    r = gaussian_prior_masses(DIST_K, seed=3)
    torch.save({"log_ps": log_ps, "r": r, "splits": DIST_SPLITS}, tmp_path / "input.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           str(REPO / "tests" / "dist_sinkhorn_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outs = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    return {"log_ps": log_ps, "r": r, "outs": outs}


def test_distributed_rows_equal_single_process(dist_run: dict) -> None:
    log_ps, r, outs = dist_run["log_ps"], dist_run["r"], dist_run["outs"]
    n, k, h = DIST_N, DIST_K, DIST_H
    single = sinkhorn(log_ps[0], r, tol=1e-9, max_iters=5000, return_plan=True)
    multi = sinkhorn_multihead(log_ps, [r, None, None], tol=1e-9, max_iters=5000, return_plan=True)
    uniform = torch.full((k,), 1.0 / k, dtype=torch.float64)
    for s, split in enumerate(DIST_SPLITS):
        parts = [outs[rank][f"single{s}"] for rank in range(2)]
        assert [p["labels"].shape[0] for p in parts] == split
        assert torch.equal(torch.cat([p["labels"] for p in parts]), single.labels)
        col = parts[0]["col_sums"] + parts[1]["col_sums"]
        assert ((col - r) / r).abs().max().item() < 1e-8
        rows = torch.cat([p["row_sums"] for p in parts])
        torch.testing.assert_close(rows, torch.full((n,), 1.0 / n, dtype=torch.float64), rtol=1e-10, atol=0)
        assert parts[0]["iterations"] == parts[1]["iterations"]
        for i in range(h):
            heads = [outs[rank][f"multi{s}"][i] for rank in range(2)]
            assert torch.equal(torch.cat([m["labels"] for m in heads]), multi[i].labels)
            col = heads[0]["col_sums"] + heads[1]["col_sums"]
            target = r if i == 0 else uniform
            assert ((col - target) / target).abs().max().item() < 1e-8


def test_distributed_only_k_sized_tensors_cross_ranks(dist_run: dict) -> None:
    outs, k = dist_run["outs"], DIST_K
    for out in outs:
        records = out["records"]
        assert records, "no collective was recorded"
        assert all(name == "all_reduce" for _, name, _ in records), records
        single = [numel for phase, _, numel in records if phase.startswith("single")]
        multi = [numel for phase, _, numel in records if phase.startswith("multi")]
        assert single and max(single) <= k
        assert multi and max(multi) <= 2 * k  # heads_per_batch = 2: two heads' column sums at once
    assert outs[0]["records"] == outs[1]["records"]  # same collectives, same order, on both ranks
