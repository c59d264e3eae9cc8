"""Architectures by name: `build(name, in_shape, num_classes)` returns a BlockNet."""
from __future__ import annotations

import inspect
from collections.abc import Callable

from bench.models.blocknet import BlockNet
from bench.models.mobilenet import mobilenetv1
from bench.models.resnet import resnet18, resnet32
from bench.models.small import mlp3, smallconv
from bench.models.vgg import vgg13

# One line per architecture: name -> builder(in_shape, num_classes).
ARCHS: dict[str, Callable[..., BlockNet]] = {
    "mlp3": mlp3,
    "mobilenetv1": mobilenetv1,
    "resnet18": resnet18,
    "resnet32": resnet32,
    "smallconv": smallconv,
    "vgg13": vgg13,
}


def build(name: str, in_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> BlockNet:
    """Build architecture `name` for inputs of per-sample shape `in_shape` (C, H, W) and K classes.

    `batchnorm` adds BatchNorm to the archs built without it; the others have it already, so asking
    for it there is an error rather than a silent no-op.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; known: {', '.join(sorted(ARCHS))}")
    builder = ARCHS[name]
    if not batchnorm:
        return builder(tuple(in_shape), int(num_classes))
    if "batchnorm" not in inspect.signature(builder).parameters:
        optional = sorted(a for a, b in ARCHS.items() if "batchnorm" in inspect.signature(b).parameters)
        raise ValueError(f"bad value True for 'batchnorm' with arch {name!r} (it has BatchNorm already); "
                         f"accepted for: {', '.join(optional)}")
    return builder(tuple(in_shape), int(num_classes), batchnorm=True)


__all__ = ["ARCHS", "BlockNet", "build"]
