"""Precise BatchNorm statistics (videolabel.models.batchnorm) against direct computation."""

from __future__ import annotations

import copy

import torch
from torch import nn

from videolabel.models.batchnorm import batchnorm_layers, recalibrate_batchnorm


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5),
    )


def _data(n: int = 50) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return 2.0 + 3.0 * torch.randn(n, 3, 10, 10, generator=g)


def test_one_batch_equals_a_full_batch_training_forward() -> None:
    x = _data()
    net = _net()
    ref = copy.deepcopy(net)
    for bn in batchnorm_layers(ref):
        bn.momentum = 1.0  # running := this batch's statistics (unbiased variance)
    ref.train()
    with torch.no_grad():
        ref(x)
    net.eval()
    assert recalibrate_batchnorm(net, [x], net) == 1
    for a, b in zip(batchnorm_layers(net), batchnorm_layers(ref)):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-5, atol=1e-5)
    assert not net.training  # flags restored


def test_first_layer_statistics_are_exact_pooled_moments_whatever_the_batching() -> None:
    x = _data(53)
    net = _net()
    net.eval()
    n = recalibrate_batchnorm(net, list(torch.split(x, 8)), net)  # 7 batches, the last of 5
    assert n == 7
    with torch.no_grad():
        y = net[0](x)  # the input of the first BatchNorm does not depend on any batch statistic
    var, mean = torch.var_mean(y.double(), dim=(0, 2, 3), correction=1)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, mean.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var.float(), rtol=1e-5, atol=1e-6)


def test_weights_momentum_and_flags_are_left_alone() -> None:
    net = _net()
    net.train()
    net[4].eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    momenta = [bn.momentum for bn in batchnorm_layers(net)]
    recalibrate_batchnorm(net, torch.split(_data(), 16), net)
    after = net.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert [bn.momentum for bn in batchnorm_layers(net)] == momenta
    assert net.training and net[1].training and not net[4].training
    assert all(p.grad is None for p in net.parameters())


def test_stale_running_statistics_are_repaired() -> None:
    """Eval-mode outputs with garbage running statistics are far from the batch-statistics outputs;
    after recalibration on the same data they agree (the module's motivation)."""
    x = _data(64)
    net = _net()
    net.train()
    with torch.no_grad():
        target = net(x)  # batch statistics over all 64 samples
    for bn in batchnorm_layers(net):
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(0.01)
    net.eval()
    with torch.no_grad():
        stale = net(x)
    assert (stale - target).abs().max() > 1.0
    recalibrate_batchnorm(net, [x], net)
    with torch.no_grad():
        fixed = net(x)
    # equal up to the unbiased variance kept for eval mode (64/63 on the last layer's 64 samples)
    assert (fixed - target).abs().max() < 0.05 < 1.0 < (stale - target).abs().max()


def test_sync_batchnorm_runs_as_plain_batchnorm_and_is_restored() -> None:
    x = _data()
    plain = _net()
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
    recalibrate_batchnorm(plain, [x], plain)
    recalibrate_batchnorm(sync, [x], sync)
    for a, b in zip(batchnorm_layers(plain), batchnorm_layers(sync)):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
    assert all("forward" not in bn.__dict__ for bn in batchnorm_layers(sync))


def test_no_batches_and_no_layers_change_nothing() -> None:
    net = _net()
    stats = [bn.running_var.clone() for bn in batchnorm_layers(net)]
    assert recalibrate_batchnorm(net, [], net) == 0
    assert all(torch.equal(a, bn.running_var) for a, bn in zip(stats, batchnorm_layers(net)))
    lin = nn.Linear(3, 2)
    assert recalibrate_batchnorm(lin, [torch.zeros(2, 3)], lin) == 0
