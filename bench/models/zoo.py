"""torchvision's classification models as BlockNets: the arch `tv-<model>` (also spelled `torchvision:<model>`).

`torchvision.models.get_model(model, weights=None, num_classes=K)`: never pretrained weights, so nothing is
downloaded, and the network is torchvision's as it builds it for every input size: nothing is changed for a
3 x 32 x 32 CIFAR image (a ResNet's 7x7/2 stem and max-pool take it to 8 x 8 before layer1; the suite's own
`resnet18` is the CIFAR-style one). Two things are adapted, and said here: where the images have C != 3
channels (gray: C = 1), the first convolution is built anew for C input channels (same kernel, stride,
padding, torch's default init); googlenet and inception_v3 are built without their auxiliary classifiers
(`aux_logits=False`), whose extra training outputs no rule takes; a vit is built for the dataset's square
image size (`image_size`: a 32 px image is 2 x 2 patches of 16); its activations run out of place (the
same values; a rule reading a block's pre-activation, pepita, needs it kept). A model whose forward cannot take the
dataset's images (alexnet and inception_v3 at 32 px, maxvit at any size but 224) is refused with
torchvision's own error.

Blocks. Where the model's class is in STAGES, its forward is a sequence of top-level parts, cut into blocks:
a block starts at each part holding a Linear or Conv2d, and the parts without one (activations, pools, a
norm) join the block before them. So a ResNet's blocks are its stem (conv1, bn1, relu, maxpool) and
layer1-4, and its head avgpool + flatten + fc; a `features` Sequential (mobilenet_v2, efficientnet, vgg,
densenet, ...) gives its children as the parts. Any other model (vit, inception_v3) is one block, the whole
model with its classifier taken out, before that classifier as the head, and its BlockNet's `unstaged`
says why: the rules that learn at block outputs refuse it (bench.method.check_blocks). Either way the
BlockNet's output is checked against the model's own on one input before it is returned.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from bench.models.blocknet import ACTIVATIONS, BlockNet

# The functional steps of a forward (F.adaptive_avg_pool2d, torch.flatten, F.relu), as modules.
_POOL, _FLATTEN, _RELU = "<pool>", "<flatten>", "<relu>"
_MAKE = {
    _POOL: lambda: nn.AdaptiveAvgPool2d(1),
    _FLATTEN: lambda: nn.Flatten(1),
    _RELU: lambda: nn.ReLU(),
}
# model class -> (its body's parts in forward order, its head's); `name*`: the children of that container.
STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ResNet": (
        ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"),
        ("avgpool", _FLATTEN, "fc"),
    ),
    "AlexNet": (("features*",), ("avgpool", _FLATTEN, "classifier")),
    "ConvNeXt": (("features*",), ("avgpool", "classifier")),
    "DenseNet": (("features*", _RELU), (_POOL, _FLATTEN, "classifier")),
    "EfficientNet": (("features*",), ("avgpool", _FLATTEN, "classifier")),
    "GoogLeNet": (
        ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b"),
        ("avgpool", _FLATTEN, "dropout", "fc"),
    ),
    "MaxVit": (("stem", "blocks*"), ("classifier",)),
    "MNASNet": (("layers*",), (_POOL, _FLATTEN, "classifier")),
    "MobileNetV2": (("features*",), (_POOL, _FLATTEN, "classifier")),
    "MobileNetV3": (("features*",), ("avgpool", _FLATTEN, "classifier")),
    "RegNet": (("stem", "trunk_output*"), ("avgpool", _FLATTEN, "fc")),
    "ShuffleNetV2": (
        ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"),
        (_POOL, _FLATTEN, "fc"),
    ),
    "SqueezeNet": (("features*",), ("classifier", _FLATTEN)),
    "SwinTransformer": (("features*",), ("norm", "permute", "avgpool", "flatten", "head")),
    "VGG": (("features*",), ("avgpool", _FLATTEN, "classifier")),
}
STAGES["GoogLeNet"] = (  # the rest of its inception stages, in order
    STAGES["GoogLeNet"][0]
    + ("maxpool3", "inception4a", "inception4b", "inception4c", "inception4d", "inception4e")
    + ("maxpool4", "inception5a", "inception5b"),
    STAGES["GoogLeNet"][1],
)
BUILD_OPTIONS = {  # models built with options of their own (see the module docstring)
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def offered() -> list[str]:
    """The classification models this torchvision offers (its quantized, detection, ... models aside)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def torchvision_net(model_name: str, in_shape: tuple[int, ...], num_classes: int) -> BlockNet:
    """torchvision's `model_name` for images of shape `in_shape` (C, H, W) and K classes, as a BlockNet."""
    import torchvision

    where = f"arch tv-{model_name}"
    known = offered()
    if model_name not in known:
        raise ValueError(
            f"{where}: torchvision {torchvision.__version__} has no classification model "
            f"{model_name!r}; it offers: {', '.join(known)}"
        )
    if len(in_shape) != 3:
        raise ValueError(
            f"{where}: a torchvision model takes images (C x H x W); this dataset's inputs are "
            f"{'x'.join(map(str, in_shape))} vectors"
        )
    options = dict(BUILD_OPTIONS.get(model_name, {}))
    if model_name.startswith("vit_"):  # its position embedding is built for one image size
        options["image_size"] = in_shape[1]
    model = torchvision.models.get_model(
        model_name, weights=None, num_classes=num_classes, **options
    )
    if in_shape[0] != 3:
        _take_channels(model, in_shape[0], where)
    for module in model.modules():  # out of place: same values, a block's pre-activation kept
        if isinstance(module, ACTIVATIONS):
            module.inplace = False
    probe = torch.randn((2, *in_shape), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        try:
            expected = model(probe)
        except Exception as error:  # what torchvision raises varies: RuntimeError, AssertionError
            raise ValueError(
                f"{where} cannot take {'x'.join(map(str, in_shape))} images: {error}"
            ) from None
    staged = type(model).__name__ in STAGES
    net = _staged(model, in_shape) if staged else _one_block(model, in_shape)
    _mark_buffers(net)
    with torch.no_grad():
        try:
            got = net.eval()(probe)
        except Exception:  # a cut in the wrong order may not even run
            got = None
    if got is None or got.shape != expected.shape or not torch.allclose(got, expected, 1e-4, 1e-5):
        raise ValueError(
            f"{where}: its blocks and head do not compute {type(model).__name__}'s forward "
            "(torchvision changed it?); bench/models/zoo.py STAGES must follow it"
        )
    return net.train()


def _staged(model: nn.Module, in_shape: tuple[int, ...]) -> BlockNet:
    body, head = STAGES[type(model).__name__]
    blocks: list[OrderedDict] = []
    for name, part in _parts(model, body):
        if not blocks or _has_weights(part):
            blocks.append(OrderedDict())
        blocks[-1][name] = part
    return BlockNet(
        [nn.Sequential(parts) for parts in blocks],
        nn.Sequential(OrderedDict(_parts(model, head))),
        in_shape,
    )


def _parts(model: nn.Module, names: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """(name, module) of every part `names` lists: a child, a container's children, a functional step."""
    parts = []
    for name in names:
        if name in _MAKE:
            parts.append((name.strip("<>"), _MAKE[name]()))
        elif name.endswith("*"):
            container = getattr(model, name[:-1])
            parts += [(f"{name[:-1]}_{child}", m) for child, m in container.named_children()]
        else:
            parts.append((name, getattr(model, name)))
    return parts


def _has_weights(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in module.modules())


def _one_block(model: nn.Module, in_shape: tuple[int, ...]) -> BlockNet:
    """The whole model but its classifier (its last top-level part with a Linear or Conv2d) as one block."""
    name, head = [(n, c) for n, c in model.named_children() if _has_weights(c)][-1]
    setattr(model, name, nn.Identity())
    net = BlockNet([model], head, in_shape)
    net.unstaged = (
        f"torchvision's {type(model).__name__} has no top-level stages the suite knows "
        f"(bench/models/zoo.py STAGES: {', '.join(sorted(STAGES))}), so its one block is the whole "
        f"model but its classifier {name!r}"
    )
    return net


def _take_channels(model: nn.Module, channels: int, where: str) -> None:
    """Build the model's first convolution anew for `channels` input channels."""
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None or found[1].groups != 1:
        raise ValueError(f"{where}: no first convolution to give {channels} input channels")
    name, conv = found
    parent = model.get_submodule(name.rpartition(".")[0])
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    setattr(parent, name.rpartition(".")[2], new)


def _mark_buffers(net: nn.Module) -> None:
    """Mark the model's own buffers (swin's relative position index), a norm's statistics aside, as the
    architecture's: bench.layers.feedback_tensors then counts only what a rule registers as feedback."""
    for module in net.modules():
        own = {n for n, _ in module.named_buffers(recurse=False)}
        if own and not isinstance(module, _NormBase):
            module._architecture_buffers = frozenset(own)
