"""Visual encoders: clip ``[B, 3, T, H, W]`` (float, normalised) -> feature ``[B, D]``.

* :class:`R2Plus1D18Encoder` - the paper's R(2+1)D-18 (torchvision, random init, fc removed,
  global average pool -> 512-d; method.md "Model").
* :class:`TinyVideoEncoder` - a small 3D conv net for CPU runs and tests (``tiny`` preset).

Every encoder exposes ``out_dim``. Both accept any T, H, W (global average pool at the end).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.video import r2plus1d_18

from videolabel.models.blocks import maxpool_cnn


class R2Plus1D18Encoder(nn.Module):
    """torchvision ``r2plus1d_18(weights=None)`` with the classifier removed: ``[B,3,T,H,W] -> [B,512]``."""

    out_dim = 512

    def __init__(self) -> None:
        super().__init__()
        net = r2plus1d_18(weights=None)
        self.stem = net.stem
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.pool = nn.AdaptiveAvgPool3d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


def _conv3d_bn_relu(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Sequential:
    pad = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class TinyVideoEncoder(nn.Module):
    """Four conv3d-BN-ReLU blocks, spatial stride 2 each, temporal stride 2 in the last two,
    then a global average pool: ``[B,3,T,H,W] -> [B, widths[-1]]``.

    With the ``tiny`` preset input (8 x 48 x 48) the last map is 2 x 3 x 3.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("TinyVideoEncoder needs at least two widths")
        blocks = [_conv3d_bn_relu(3, widths[0], (3, 5, 5), (1, 2, 2))]
        for i in range(1, len(widths)):
            t_stride = 2 if i >= len(widths) - 2 else 1
            blocks.append(_conv3d_bn_relu(widths[i - 1], widths[i], (3, 3, 3), (t_stride, 2, 2)))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.out_dim = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


class FrameCNNEncoder(nn.Module):
    """A small 2D CNN applied to every frame, features averaged over time (``frames2d``, the ``tiny``
    preset): ``[B,3,T,H,W] -> [B, widths[-1]]``.

    Each block is conv3x3-BN-ReLU followed by a 2x2 max-pool (none after the last block), then a global
    average pool over space and a mean over the frames. Max-pools give the small translation tolerance
    that strided convolutions lack: an object may sit anywhere in a user's frame. With 4 blocks on a
    48 x 48 frame the last map is 6 x 6 and one output sees 38 x 38 input pixels.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128)) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("FrameCNNEncoder needs at least two widths")
        self.features = maxpool_cnn(3, widths)
        self.out_dim = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * T, C, H, W)
        f = self.features(frames).mean(dim=(2, 3))  # [B*T, D]
        return f.reshape(B, T, -1).mean(dim=1)
