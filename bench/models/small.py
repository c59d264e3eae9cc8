"""The small reference architectures: `mlp3` and `smallconv` [paper: the authors' small CNN and MLP]."""
from __future__ import annotations

import math

from torch import nn

from bench.models.blocknet import BlockNet


def mlp3(in_shape: tuple[int, ...], num_classes: int, width: int = 512) -> BlockNet:
    """Three hidden Linear-ReLU blocks of `width` units, then a Linear head."""
    in_features = math.prod(in_shape)
    blocks = [
        nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU()),
        nn.Sequential(nn.Linear(width, width), nn.ReLU()),
        nn.Sequential(nn.Linear(width, width), nn.ReLU()),
    ]
    return BlockNet(blocks, nn.Linear(width, num_classes), in_shape)


def smallconv(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """conv3x3 32 -> pool -> conv 64 -> pool -> conv 128 -> adaptive avg pool 2x2 -> FC 512 -> FC K.

    One block per layer: conv-ReLU-maxpool, conv-ReLU-maxpool, conv-ReLU-avgpool(2x2),
    flatten-FC-ReLU; the head is the last FC. No BatchNorm, as in the reference network.
    """
    channels = in_shape[0]
    blocks = [
        nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(128 * 2 * 2, 512), nn.ReLU()),
    ]
    return BlockNet(blocks, nn.Linear(512, num_classes), in_shape)
