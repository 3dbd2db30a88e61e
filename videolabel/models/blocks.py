"""Small convolution blocks shared by the ``tiny`` encoders (:mod:`videolabel.models.video`, ``.audio``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def conv2d_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """conv3x3 (no bias) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def maxpool_cnn(cin: int, widths: Sequence[int]) -> nn.Sequential:
    """:func:`conv2d_bn_relu` blocks of ``widths``, each but the last followed by a 2x2 max-pool."""
    layers: list[nn.Module] = []
    for i, w in enumerate(widths):
        layers.append(conv2d_bn_relu(cin, w))
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        cin = w
    return nn.Sequential(*layers)
