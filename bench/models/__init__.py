"""Architectures by name: `build(name, in_shape, num_classes)` returns a BlockNet."""
from __future__ import annotations

import inspect
from collections.abc import Callable

from bench.models.blocknet import BlockNet
from bench.models.mobilenet import mobilenetv1
from bench.models.resnet import resnet18, resnet20, resnet32, resnet56
from bench.models.small import lenet, mlp3, smallconv
from bench.models.vgg import vgg13

# One line per architecture: name -> builder(in_shape, num_classes).
ARCHS: dict[str, Callable[..., BlockNet]] = {
    "lenet": lenet,
    "mlp3": mlp3,
    "mobilenetv1": mobilenetv1,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "smallconv": smallconv,
    "vgg13": vgg13,
}


def build(name: str, in_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> BlockNet:
    """Build architecture `name` for inputs of per-sample shape `in_shape` (C, H, W) and K classes.

    `batchnorm` ensures BatchNorm: the archs built without it (those whose builder takes `batchnorm`)
    get one before every hidden activation; the others have it already and are built as they are, so
    one recipe can ask for it over a grid of archs.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; known: {', '.join(sorted(ARCHS))}")
    builder = ARCHS[name]
    if batchnorm and "batchnorm" in inspect.signature(builder).parameters:
        return builder(tuple(in_shape), int(num_classes), batchnorm=True)
    return builder(tuple(in_shape), int(num_classes))
