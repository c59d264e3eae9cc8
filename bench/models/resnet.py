"""ResNets as BlockNets: CIFAR style `resnet32` [paper], `resnet20`, `resnet44`, `resnet56`, `resnet1202`
[BioTorch] and `resnet110` [InfoPro, AugLocal]; ImageNet style `resnet18` [suite]."""

from __future__ import annotations

import torch
from torch import nn

from bench.models.blocknet import BlockNet


class PadShortcut(nn.Module):
    """He et al. 2016 option A: (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)), no parameters.

    Keeps every s-th row and column and zero-pads the channels, (C_out - C_in) // 2 before and the rest
    after: BioTorch's `IdentityPadding` (planes // 4 on each side, as its stages double the width).
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if c_out < c_in:
            raise ValueError(f"option-A shortcut cannot drop channels: {c_in} -> {c_out}")
        self.before = (c_out - c_in) // 2
        self.after = c_out - c_in - self.before
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.before, self.after))


# A residual block's shortcut where the shape changes: "projection" (1x1 conv + BN, option B) or "pad"
# (option A, parameter-free: He et al.'s CIFAR ResNets and BioTorch's).
SHORTCUTS = ("projection", "pad")


class BasicBlock(nn.Module):
    """h = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x)): (N, C_in, H, W) -> (N, C_out, H/s, W/s).

    The shortcut is the identity, or where the shape changes a 1x1 conv + BN projection (He et al.
    2016 option B, the default, so SVD conversion covers it) or with `shortcut="pad"` the
    parameter-free option A. It is registered before conv1/conv2 on purpose:
    ssa takes the *last* SVD layer of a block with the output channel count as the block's output
    layer (the one L_align acts on), and that should be conv2 of the residual branch.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, shortcut: str = "projection"):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; known: {', '.join(SHORTCUTS)}")
        self.shortcut: nn.Module = nn.Identity()
        if (stride != 1 or c_in != c_out) and shortcut == "pad":
            self.shortcut = PadShortcut(c_in, c_out, stride)
        elif stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _stages(
    c_in: int, widths: tuple[int, ...], depth: int, first_stride: int, shortcut: str = "projection"
) -> list[nn.Module]:
    """`depth` basic blocks per width; each stage after the first starts with stride 2."""
    blocks: list[nn.Module] = []
    for i, c_out in enumerate(widths):
        for j in range(depth):
            stride = (first_stride if i == 0 else 2) if j == 0 else 1
            blocks.append(BasicBlock(c_in, c_out, stride, shortcut))
            c_in = c_out
    return blocks


def _head(channels: int, num_classes: int) -> nn.Module:
    """Global average pool (N, C, H, W) -> (N, C), then Linear(C, K)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def resnet32(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """He et al. 2016 CIFAR ResNet-32: stem conv3x3 16-BN-ReLU, 3 stages x 5 blocks (16, 32, 64), head.

    16 blocks: the stem, then 15 residual blocks; input (C, H, W) -> (64, H/4, W/4) before the head.
    About 0.47M parameters for K = 10 (0.46M with the parameter-free option-A shortcut).
    """
    return _cifar_resnet(in_shape, num_classes, 5, "projection")


def _cifar_resnet(
    in_shape: tuple[int, ...], num_classes: int, depth: int, shortcut: str
) -> BlockNet:
    """Stem conv3x3 16-BN-ReLU, 3 stages x `depth` blocks (16, 32, 64), global average pool, Linear."""
    stem = nn.Sequential(
        nn.Conv2d(in_shape[0], 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
    )
    return BlockNet(
        [stem, *_stages(16, (16, 32, 64), depth, 1, shortcut)], _head(64, num_classes), in_shape
    )


def resnet20(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """BioTorch's CIFAR ResNet-20 (`biotorch/models/small_resnet.py`, after He et al. 2016): 3 x 3 blocks.

    As resnet32 but 3 blocks a stage and the parameter-free option-A shortcut (`PadShortcut`) where the
    width doubles: 10 blocks (stem + 9 residual); (C, H, W) -> (64, H/4, W/4) before the head (sides
    round up, so 8x8 inputs work). 269,722 parameters for K = 10 (0.27M in small_resnet.py's table).
    """
    return _cifar_resnet(in_shape, num_classes, 3, "pad")


def resnet56(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """BioTorch's CIFAR ResNet-56: as `resnet20` with 9 blocks a stage, 28 blocks (stem + 27 residual).

    853,018 parameters for K = 10 (0.85M in small_resnet.py's table).
    """
    return _cifar_resnet(in_shape, num_classes, 9, "pad")


def resnet44(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """BioTorch's CIFAR ResNet-44 (`biotorch/models/small_resnet.py`, He et al. 2016's 6n+2 with n = 7):
    as `resnet20` with 7 blocks a stage and option-A shortcuts, 22 blocks (stem + 21 residual).

    658,586 parameters for K = 10 (0.66M in He et al.'s table 6 and small_resnet.py's table).
    """
    return _cifar_resnet(in_shape, num_classes, 7, "pad")


def resnet1202(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """BioTorch's CIFAR ResNet-1202 (`biotorch/models/small_resnet.py`, He et al. 2016's 6n+2 with
    n = 200): as `resnet20` with 200 blocks a stage and option-A shortcuts, 601 blocks (stem + 600).

    19,421,274 parameters for K = 10 (19.4M in He et al.'s table 6 and small_resnet.py's table).
    """
    return _cifar_resnet(in_shape, num_classes, 200, "pad")


def resnet110(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """He et al. 2016's CIFAR ResNet-110 as InfoPro (blackfeather-wang/InfoPro-Pytorch) and AugLocal
    (ChenxiangMA/AugLocal) build it in `networks/resnet.py`: as resnet32 with 18 blocks a stage.

    55 blocks (stem + 54 residual), the units their modules group; (C, H, W) -> (64, H/4, W/4) before the
    head. Their `_make_layer` puts a 1x1 conv + BN projection where the width doubles (option B), as
    resnet32 here, not He et al.'s option A: 1,730,714 parameters for K = 10, 2,752 over option A's
    1,727,962 (both the 1.7M of He et al.'s table 6).
    """
    return _cifar_resnet(in_shape, num_classes, 18, "projection")


def resnet18(in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """ImageNet ResNet-18: stem conv7x7/2 64-BN-ReLU-maxpool3x3/2, 4 stages x 2 blocks (64..512), head.

    9 blocks: the stem, then 8 residual blocks; input (C, H, W) -> (512, H/32, W/32) before the head
    (sides stop shrinking at 1, and the head's adaptive pool makes small inputs work).
    11.69M parameters for K = 1000, as torchvision's resnet18.
    """
    stem = nn.Sequential(
        nn.Conv2d(in_shape[0], 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    return BlockNet(
        [stem, *_stages(64, (64, 128, 256, 512), 2, 1)], _head(512, num_classes), in_shape
    )
