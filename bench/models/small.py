"""The small reference architectures: `mlp3`, `smallconv` [paper: the authors' small CNN and MLP], `lenet`
[BioTorch: its LeNetMNIST on gray 28 px and larger inputs, its LeNetCIFAR otherwise]."""

from __future__ import annotations

import math

from torch import nn

from bench.models.blocknet import BlockNet

# The smallest side on which lenet's unpadded convs fit: three 3x3 convs (-2 each) and two 2x2
# max-pools (halving, rounded down) leave 1 pixel from 18. Smaller inputs (digits 8x8) pad instead.
LENET_MIN_UNPADDED_SIDE = 18
# The smallest side of a gray input on which lenet is BioTorch's LeNetMNIST: LeNet-5's 32 px frame less
# the 2-pixel zero pad of its first conv (28 -> 28 -> 14 -> 10 -> 5 -> 1); MNIST and Fashion-MNIST are 28.
LENET_MNIST_MIN_SIDE = 28


def mlp3(
    in_shape: tuple[int, ...],
    num_classes: int,
    width: int = 512,
    batchnorm: bool = False,
    batchnorm_fc: bool = True,
) -> BlockNet:
    """Three hidden Linear-ReLU blocks of `width` units, then a Linear head (Linear-BN-ReLU with `batchnorm`;
    every block is a fully connected one, so `batchnorm_fc: false` leaves it without any)."""
    in_features = math.prod(in_shape)
    bn = batchnorm and batchnorm_fc
    blocks = [
        nn.Sequential(nn.Flatten(), *_unit(nn.Linear(in_features, width), nn.BatchNorm1d, bn)),
        nn.Sequential(*_unit(nn.Linear(width, width), nn.BatchNorm1d, bn)),
        nn.Sequential(*_unit(nn.Linear(width, width), nn.BatchNorm1d, bn)),
    ]
    return BlockNet(blocks, nn.Linear(width, num_classes), in_shape)


def smallconv(
    in_shape: tuple[int, ...],
    num_classes: int,
    batchnorm: bool = False,
    batchnorm_fc: bool = True,
    conv_bias: bool = True,
) -> BlockNet:
    """conv3x3 32 -> pool -> conv 64 -> pool -> conv 128 -> adaptive avg pool 2x2 -> FC 512 -> FC K.

    One block per layer: conv-ReLU-maxpool, conv-ReLU-maxpool, conv-ReLU-avgpool(2x2),
    flatten-FC-ReLU; the head is the last FC. No BatchNorm, as in the reference network; `batchnorm`
    [suite] puts one after every hidden conv and FC (before the ReLU), for the DFA-baseline sweep;
    `batchnorm_fc: false` keeps it out of the FC block (conv blocks only), `conv_bias: false` drops the
    convs' biases (BatchNorm, when it follows, would cancel them).
    """
    channels, bn, bias = in_shape[0], batchnorm, conv_bias
    blocks = [
        nn.Sequential(
            *_unit(nn.Conv2d(channels, 32, 3, padding=1, bias=bias), nn.BatchNorm2d, bn),
            nn.MaxPool2d(2),
        ),
        nn.Sequential(
            *_unit(nn.Conv2d(32, 64, 3, padding=1, bias=bias), nn.BatchNorm2d, bn), nn.MaxPool2d(2)
        ),
        nn.Sequential(
            *_unit(nn.Conv2d(64, 128, 3, padding=1, bias=bias), nn.BatchNorm2d, bn),
            nn.AdaptiveAvgPool2d(2),
        ),
        nn.Sequential(
            nn.Flatten(), *_unit(nn.Linear(128 * 2 * 2, 512), nn.BatchNorm1d, bn and batchnorm_fc)
        ),
    ]
    return BlockNet(blocks, nn.Linear(512, num_classes), in_shape)


def lenet(
    in_shape: tuple[int, ...],
    num_classes: int,
    batchnorm: bool = False,
    batchnorm_fc: bool = True,
    conv_bias: bool = True,
) -> BlockNet:
    """BioTorch's LeNets (`biotorch/models/le_net.py`): its LeNetMNIST on one-channel inputs of at least
    `LENET_MNIST_MIN_SIDE` (28) pixels (`_lenet_mnist`), else its CIFAR-10 LeNetCIFAR: four blocks, then a
    Linear head.

    conv3x3 32 -> pool -> conv3x3 64 -> pool -> conv3x3 128 -> global avg pool -> FC 256 -> FC K; one block
    per hidden layer: conv-ReLU-maxpool2, conv-ReLU-maxpool2, conv-ReLU-global average pool,
    flatten-FC-ReLU; the head is the last FC. On 32x32 the convs are unpadded (32 -> 30 -> 15 -> 13 -> 6
    -> 4 -> 1), exactly BioTorch's; its `avg_pool2d` over the map's width is this global average pool on
    square maps. 128,842 parameters on (3, 32, 32) with K = 10. [suite] Where an input side is under
    `LENET_MIN_UNPADDED_SIDE` (18) pixels, too small for unpadded convs, every conv pads by 1 and keeps
    its input's size (8x8: 8 -> 4 -> 2 -> 1); channels and K follow the data (BioTorch fixes 3 and 10).
    No BatchNorm, as BioTorch's; `batchnorm` [suite] puts one after every hidden conv and FC, as smallconv
    (`batchnorm_fc` and `conv_bias` as smallconv's).
    """
    if in_shape[0] == 1 and min(in_shape[1:]) >= LENET_MNIST_MIN_SIDE:
        return _lenet_mnist(in_shape, num_classes, batchnorm, batchnorm_fc, conv_bias)
    pad = 0 if min(in_shape[1:]) >= LENET_MIN_UNPADDED_SIDE else 1
    bn, bias = batchnorm, conv_bias
    blocks = [
        nn.Sequential(
            *_unit(nn.Conv2d(in_shape[0], 32, 3, padding=pad, bias=bias), nn.BatchNorm2d, bn),
            nn.MaxPool2d(2),
        ),
        nn.Sequential(
            *_unit(nn.Conv2d(32, 64, 3, padding=pad, bias=bias), nn.BatchNorm2d, bn),
            nn.MaxPool2d(2),
        ),
        nn.Sequential(
            *_unit(nn.Conv2d(64, 128, 3, padding=pad, bias=bias), nn.BatchNorm2d, bn),
            nn.AdaptiveAvgPool2d(1),
        ),
        nn.Sequential(
            nn.Flatten(), *_unit(nn.Linear(128, 256), nn.BatchNorm1d, bn and batchnorm_fc)
        ),
    ]
    return BlockNet(blocks, nn.Linear(256, num_classes), in_shape)


def _lenet_mnist(
    in_shape: tuple[int, ...],
    num_classes: int,
    batchnorm: bool = False,
    batchnorm_fc: bool = True,
    conv_bias: bool = True,
) -> BlockNet:
    """BioTorch's LeNetMNIST (`biotorch/models/le_net.py`, LeCun et al.'s LeNet-5 with ReLU and max-pool):
    conv5x5 6 -> pool -> conv5x5 16 -> pool -> conv5x5 120 -> FC 84 -> FC K; four blocks (conv-ReLU-pool2,
    conv-ReLU-pool2, conv-ReLU, flatten-FC-ReLU), the last FC the head.

    BioTorch resizes MNIST to 32x32 first (its `target_size`; the recipe's `image_size: 32` does the same,
    and the first conv then pads nothing: its inputs exactly). [suite] On a smaller side the first conv
    zero-pads up to that frame instead (28 px: padding 2, LeNet-5's own), so the maps' sizes are
    BioTorch's, 32 -> 28 -> 14 -> 10 -> 5 -> 1, but not its inputs: the border is the normalised zero
    (the mean intensity), around an image not rescaled. 61,706 parameters for K = 10, as its net.
    Larger inputs keep their extra pixels: the FC takes the flattened 120-channel map, as many inputs as
    it has.
    """
    pad = max(0, (32 - min(in_shape[1:]) + 1) // 2)
    side = [(((s + 2 * pad - 4) // 2 - 4) // 2) - 4 for s in in_shape[1:]]
    bn, bias = batchnorm, conv_bias
    blocks = [
        nn.Sequential(
            *_unit(nn.Conv2d(in_shape[0], 6, 5, padding=pad, bias=bias), nn.BatchNorm2d, bn),
            nn.MaxPool2d(2),
        ),
        nn.Sequential(*_unit(nn.Conv2d(6, 16, 5, bias=bias), nn.BatchNorm2d, bn), nn.MaxPool2d(2)),
        nn.Sequential(*_unit(nn.Conv2d(16, 120, 5, bias=bias), nn.BatchNorm2d, bn)),
        nn.Sequential(
            nn.Flatten(),
            *_unit(nn.Linear(120 * math.prod(side), 84), nn.BatchNorm1d, bn and batchnorm_fc),
        ),
    ]
    return BlockNet(blocks, nn.Linear(84, num_classes), in_shape)


def _unit(layer: nn.Module, norm: type[nn.Module], batchnorm: bool) -> list[nn.Module]:
    """layer-ReLU, or layer-BN-ReLU with `batchnorm`."""
    width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    return [layer, norm(width), nn.ReLU()] if batchnorm else [layer, nn.ReLU()]
