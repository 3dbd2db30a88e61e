"""Audio encoders: spectrogram ``[B, 1, F, T]`` (float, normalised log-mel) -> feature ``[B, D]``.

* :class:`ResNet9AudioEncoder` - the paper's ResNet-9: a ResNet with one BasicBlock per stage
  (64, 128, 256, 512), a 1-channel 7x7/2 stem + BN + ReLU + 3x3/2 max-pool, global average pool
  -> 512-d (method.md "Model"). Built on torchvision's ``ResNet(BasicBlock, [1, 1, 1, 1])``.
* :class:`TinyAudioEncoder` - a small 2D conv net for CPU runs and tests (``tiny`` preset).

Every encoder exposes ``out_dim`` and accepts any F, T.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from videolabel.models.blocks import conv2d_bn_relu, maxpool_cnn


class ResNet9AudioEncoder(nn.Module):
    """ResNet-9 on one-channel spectrograms: ``[B,1,F,T] -> [B,512]``."""

    out_dim = 512

    def __init__(self) -> None:
        super().__init__()
        net = ResNet(BasicBlock, [1, 1, 1, 1])
        conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
        self.conv1 = conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


class TinyAudioEncoder(nn.Module):
    """conv2d-BN-ReLU blocks (stride 2 except the last), global average pool:
    ``[B,1,F,T] -> [B, widths[-1]]``. With the ``tiny`` preset input (64 x 100) the last map is 8 x 13.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128)) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("TinyAudioEncoder needs at least two widths")
        blocks = []
        cin = 1
        for i, w in enumerate(widths):
            blocks.append(conv2d_bn_relu(cin, w, 1 if i == len(widths) - 1 else 2))
            cin = w
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


class SpecCNNEncoder(nn.Module):
    """conv3x3-BN-ReLU blocks, each but the last followed by a 2x2 max-pool, then a global average
    pool (``spec2d``, the ``tiny`` preset): ``[B,1,F,T] -> [B, widths[-1]]``. The max-pools tolerate
    small shifts in time and pitch (a word said a little earlier, a voice a little higher)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128)) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("SpecCNNEncoder needs at least two widths")
        self.features = maxpool_cnn(1, widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)
