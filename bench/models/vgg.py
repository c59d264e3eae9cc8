"""The VGG family as BlockNets: `vgg13` [paper], CIFAR style with BatchNorm, and `vgg8b` [Nøkland & Eidnes
2019], the network of the predsim tables; one block per conv (and per hidden FC)."""

from __future__ import annotations

from torch import nn

from bench.models.blocknet import BlockNet

# Output channels per conv; "M" is a 2x2 max pool, owned by the block of the conv before it.
VGG13 = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
# Nøkland & Eidnes's `cfg['vgg8b']` (anokland/local-loss train.py), written as VGG13 (but a pool opens the
# block after it: see vgg8b), then one hidden FC block of VGG8B_HIDDEN units (their --num-layers 1 --num-hidden 1024 defaults).
VGG8B = (128, 256, "M", 256, 512, "M", 512, "M", 512, "M")
VGG8B_HIDDEN = 1024
# Their first conv is 7x7 with stride 2 (padding 3) on inputs over 64 pixels a side (STL-10's 96), 3x3
# otherwise.
VGG8B_LARGE_INPUT = 64


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


def vgg8b(
    in_shape: tuple[int, ...],
    num_classes: int,
    batchnorm_fc: bool = True,
    conv_bias: bool = True,
) -> BlockNet:
    """Nøkland & Eidnes 2019's VGG8b: 6 conv blocks (128, 256, 256, 512, 512, 512), an FC 1024 block, head
    Linear(1024, K); 8,903,434 parameters on (3, 32, 32) with K = 10 (their table: 8.9M).

    Blocks: [pool] conv3x3-BN-ReLU, six times, then [pool]-flatten-Linear(512 h w, 1024)-BN1d-ReLU; the
    head is Linear(1024, K). A 2x2 max pool opens the block after the conv it follows, so that every conv
    block's output is its unpooled map: where their code computes each layer's local loss (the pool is a
    separate layer after the detached output), so a local-loss rule's auxiliary net sees what theirs sees.
    On 32x32 the block outputs are 32, 32, 16, 16, 8, 4 pixels wide and the FC block flattens 512 x 2 x 2.
    As their code: convs with bias (`conv_bias: false` [suite] drops them; BatchNorm follows each),
    BatchNorm1d in the FC block (`batchnorm_fc: false` [suite] drops it), on sides over 64 pixels a 7x7
    stride-2 first conv. Their CIFAR recipes add LeakyReLU(0.01) and dropout 0.2 after each nonlinearity
    (train.py --nonlin leakyrelu --dropout 0.2); here the default ReLU (`--nonlin relu`), no dropout.
    [suite] A pool that would shrink a side below 1 is skipped (8x8 inputs), as in vgg13.
    """
    channels, height, width = in_shape
    blocks: list[nn.Module] = []
    pending: list[nn.Module] = []  # the pool that opens the next block
    for entry in VGG8B:
        if entry == "M":
            if min(height, width) >= 2:
                pending.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            continue
        if not blocks and min(height, width) > VGG8B_LARGE_INPUT:
            conv = nn.Conv2d(channels, entry, 7, stride=2, padding=3, bias=conv_bias)
            height, width = (height + 1) // 2, (width + 1) // 2
        else:
            conv = nn.Conv2d(channels, entry, 3, padding=1, bias=conv_bias)
        blocks.append(nn.Sequential(*pending, conv, nn.BatchNorm2d(entry), nn.ReLU()))
        pending, channels = [], entry
    features = channels * height * width
    norm = [nn.BatchNorm1d(VGG8B_HIDDEN)] if batchnorm_fc else []
    fc = nn.Sequential(*pending, nn.Flatten(), nn.Linear(features, VGG8B_HIDDEN), *norm, nn.ReLU())
    return BlockNet([*blocks, fc], nn.Linear(VGG8B_HIDDEN, num_classes), in_shape)
