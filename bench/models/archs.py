"""The architectures by name (one line each in ARCHS, and torchvision's as `tv-<model>`), `check_arch`, and
`build`, which returns a BlockNet."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from bench.config.names import TORCHVISION_ALIAS, TORCHVISION_PREFIX, arch_name
from bench.models import torchvision_model
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
from bench.models.zoo import offered, torchvision_net

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


def check_arch(spelled: str, where: str = "") -> str:
    """The arch `spelled` names, in its one form (`torchvision:resnet18` -> `tv-resnet18`); a ValueError
    starting with `where` names an unknown one and what is accepted."""
    name = arch_name(spelled)
    model = torchvision_model(name) if isinstance(name, str) else None
    if name in ARCHS or (model is not None and model in offered()):
        return name
    prefix = f"{where}: " if where else ""
    if model is not None:
        raise ValueError(
            f"{prefix}unknown arch {spelled!r}: torchvision has no classification model {model!r}; "
            f"it offers: {', '.join(offered())}"
        )
    raise ValueError(
        f"{prefix}unknown arch {spelled!r}; known: {', '.join(sorted(ARCHS))}; or a torchvision "
        f"classification model, {TORCHVISION_PREFIX}<model> (also {TORCHVISION_ALIAS}<model>): "
        f"`python -m bench list` names them"
    )


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
    blocks, or of every layer with `weight_init_scope: all` (bench/models/init.py). A torchvision
    model (`tv-<model>`, bench/models/zoo.py) is built as torchvision builds it: the structure keys
    do not reach it, `weight_init` does.
    """
    name = check_arch(name)
    if torchvision_model(name) is not None:
        net = torchvision_net(torchvision_model(name), tuple(in_shape), int(num_classes))
        return initialise(net, weight_init, weight_init_scope)
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
