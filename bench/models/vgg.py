"""VGG-13 with BatchNorm, CIFAR style [paper]: one conv-BN-ReLU[-maxpool] block per conv, then a head."""

from __future__ import annotations

from torch import nn

from bench.models.blocknet import BlockNet

# Output channels per conv; "M" is a 2x2 max pool, owned by the block of the conv before it.
VGG13 = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg13(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """10 blocks conv3x3-BN-ReLU (64, 64, 128, 128, 256, 256, 512, 512, 512, 512), head Linear(512, K).

    Input (C, H, W). A pool that would shrink a side below 1 is skipped, so 8x8 inputs work:
    32x32 gives block outputs 32, 16, 16, 8, 8, 4, 4, 2, 2, 1 pixels wide; 8x8 gives 8, 4, 4, 2, 2,
    1, 1, 1, 1, 1. The head is global average pool (C x H x W -> C) + Linear(512, K); for 32x32
    the last map is already 1x1, so this equals the CIFAR VGG's flatten + Linear.
    Convs carry no bias (BN follows); BN is inside its block, so local rules train it locally.
    """
    channels, height, width = in_shape
    blocks: list[nn.Module] = []
    for entry in VGG13:
        if entry == "M":
            if min(height, width) >= 2:
                blocks[-1].append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            continue
        blocks.append(
            nn.Sequential(
                nn.Conv2d(channels, entry, 3, padding=1, bias=False),
                nn.BatchNorm2d(entry),
                nn.ReLU(),
            )
        )
        channels = entry
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
    return BlockNet(blocks, head, in_shape)
