"""MobileNetV1 as a BlockNet, CIFAR style (stride-1 stem) [paper], with a width multiplier.

Depthwise 3x3 convs (groups = C) stay dense under SVD conversion (`convert_to_svd` only factorises
groups = 1 convs): a depthwise kernel is C x 1 x 3 x 3, with no channel mixing to factorise. The
pointwise 1x1 conv is each block's output layer, the one ssa aligns.
"""

from __future__ import annotations

from torch import nn

from bench.models.blocknet import BlockNet

# (output channels, stride) of the 13 depthwise-separable blocks at width 1.0.
MOBILENET_V1 = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Depthwise conv3x3/stride (groups = c_in)-BN-ReLU, pointwise conv1x1-BN-ReLU.

    (N, c_in, H, W) -> (N, c_out, H', W') with H' = ceil(H / stride).
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def mobilenetv1(in_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> BlockNet:
    """Stem conv3x3/1 32-BN-ReLU, 13 separable blocks (64 .. 1024 channels), avg pool + Linear(1024, K).

    14 blocks. Every channel count is scaled by `width` (at least 1 channel); input (C, H, W) ->
    (1024 * width, H/16, W/16) before the head, whose adaptive pool makes small inputs work.
    4.23M parameters at width 1.0 for K = 1000, as the ImageNet network.
    """
    if width <= 0:
        raise ValueError(f"bad width {width!r} for mobilenetv1; accepted: a float > 0")

    def scaled(c: int) -> int:
        return max(1, int(c * width))

    c_in = scaled(32)
    blocks: list[nn.Module] = [
        nn.Sequential(
            nn.Conv2d(in_shape[0], c_in, 3, padding=1, bias=False), nn.BatchNorm2d(c_in), nn.ReLU()
        )
    ]
    for c_out, stride in MOBILENET_V1:
        blocks.append(separable(c_in, scaled(c_out), stride))
        c_in = scaled(c_out)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
    return BlockNet(blocks, head, in_shape)
