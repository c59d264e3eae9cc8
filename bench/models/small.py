"""The small reference architectures: `mlp3` and `smallconv` [paper: the authors' small CNN and MLP]."""
from __future__ import annotations

import math

from torch import nn

from bench.models.blocknet import BlockNet


def mlp3(in_shape: tuple[int, ...], num_classes: int, width: int = 512, batchnorm: bool = False) -> BlockNet:
    """Three hidden Linear-ReLU blocks of `width` units, then a Linear head (Linear-BN-ReLU with `batchnorm`)."""
    in_features = math.prod(in_shape)
    blocks = [
        nn.Sequential(nn.Flatten(), *_unit(nn.Linear(in_features, width), nn.BatchNorm1d, batchnorm)),
        nn.Sequential(*_unit(nn.Linear(width, width), nn.BatchNorm1d, batchnorm)),
        nn.Sequential(*_unit(nn.Linear(width, width), nn.BatchNorm1d, batchnorm)),
    ]
    return BlockNet(blocks, nn.Linear(width, num_classes), in_shape)


def smallconv(in_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> BlockNet:
    """conv3x3 32 -> pool -> conv 64 -> pool -> conv 128 -> adaptive avg pool 2x2 -> FC 512 -> FC K.

    One block per layer: conv-ReLU-maxpool, conv-ReLU-maxpool, conv-ReLU-avgpool(2x2),
    flatten-FC-ReLU; the head is the last FC. No BatchNorm, as in the reference network; `batchnorm`
    [suite] puts one after every hidden conv and FC (before the ReLU), for the DFA-baseline sweep.
    """
    channels = in_shape[0]
    bn = batchnorm
    blocks = [
        nn.Sequential(*_unit(nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d, bn), nn.MaxPool2d(2)),
        nn.Sequential(*_unit(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d, bn), nn.MaxPool2d(2)),
        nn.Sequential(*_unit(nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d, bn), nn.AdaptiveAvgPool2d(2)),
        nn.Sequential(nn.Flatten(), *_unit(nn.Linear(128 * 2 * 2, 512), nn.BatchNorm1d, bn)),
    ]
    return BlockNet(blocks, nn.Linear(512, num_classes), in_shape)


def _unit(layer: nn.Module, norm: type[nn.Module], batchnorm: bool) -> list[nn.Module]:
    """layer-ReLU, or layer-BN-ReLU with `batchnorm`."""
    width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    return [layer, norm(width), nn.ReLU()] if batchnorm else [layer, nn.ReLU()]
