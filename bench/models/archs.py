"""The architectures by name (one line each in ARCHS) and `build`, which returns a BlockNet."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from bench.models.blocknet import BlockNet
from bench.models.init import initialise
from bench.models.mobilenet import mobilenetv1
from bench.models.resnet import (
    resnet18,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
    resnet1202,
)
from bench.models.small import lenet, mlp3, smallconv
from bench.models.vgg import vgg8b, vgg13

# One line per architecture: name -> builder(in_shape, num_classes).
ARCHS: dict[str, Callable[..., BlockNet]] = {
    "lenet": lenet,
    "mlp3": mlp3,
    "mobilenetv1": mobilenetv1,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet1202": resnet1202,
    "smallconv": smallconv,
    "vgg8b": vgg8b,
    "vgg13": vgg13,
}
# What is known of an arch without building it (FULLY_CONNECTED) is declared beside the names, in
# bench/models/__init__.py, which imports no torch; tests/test_models.py checks it on every arch.


def build(
    name: str,
    in_shape: tuple[int, ...],
    num_classes: int,
    batchnorm: bool = False,
    batchnorm_fc: bool = True,
    conv_bias: bool = True,
    weight_init: str = "default",
    weight_init_scope: str = "hidden",
) -> BlockNet:
    """Build architecture `name` for inputs of per-sample shape `in_shape` (C, H, W) and K classes.

    The structure keys ensure a property, so one recipe can ask for it over a grid of archs:
    `batchnorm` puts BatchNorm before every hidden activation of the archs built without it (those
    whose builder takes `batchnorm`; the others have it already); `batchnorm_fc: false` keeps it out of
    the fully connected blocks and `conv_bias: false` takes the hidden convs' biases away, in the archs
    whose builder takes those keys (the others have no hidden FC block and no conv bias:
    tests/test_models.py checks both over every arch). `weight_init` re-draws the weights of the hidden
    blocks, or of every layer with `weight_init_scope: all` (bench/models/init.py).
    """
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; known: {', '.join(sorted(ARCHS))}")
    builder = ARCHS[name]
    accepted = inspect.signature(builder).parameters
    given = {"batchnorm": batchnorm, "batchnorm_fc": batchnorm_fc, "conv_bias": conv_bias}
    kwargs = {key: value for key, value in given.items() if key in accepted}
    return initialise(
        builder(tuple(in_shape), int(num_classes), **kwargs), weight_init, weight_init_scope
    )


def build_for(recipe: dict, name: str, in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """Architecture `name` as a resolved recipe asks for it (its structure and init keys)."""
    return build(
        name,
        in_shape,
        num_classes,
        batchnorm=recipe["batchnorm"],
        batchnorm_fc=recipe["batchnorm_fc"],
        conv_bias=recipe["conv_bias"],
        weight_init=recipe["weight_init"],
        weight_init_scope=recipe["weight_init_scope"],
    )
