"""Layers whose backward a rule replaces: the generic Linear/Conv2d swap, the exact-backward switch, feedback marks.

A rule with its own backward (fa, the sign-symmetry rules, kp) keeps the network's forward exactly as
built and changes only what carries the error to a layer's input: `swap_layers` turns every Linear and
Conv2d into a FeedbackLinear / FeedbackConv2d (the same object, its parameters and their init kept),
whose backward sends the input gradient through `feedback_weight(layer)` instead of W, while W still
gets its ordinary gradient delta_l h_{l-1}^T. Inside `exact_backward()` these layers run their true
backward: that is how the trainer computes the BP reference of the same forward weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

FeedbackWeight = Callable[
    [nn.Module], torch.Tensor
]  # layer -> the tensor used in place of its weight (W's shape)

# A plain module global (not a ContextVar): torch.compile guards on globals, so both modes compile.
_exact = False


@contextlib.contextmanager
def exact_backward() -> Iterator[None]:
    """Inside, every feedback layer backpropagates through its own weight W: true BP of the same forward."""
    global _exact
    before, _exact = _exact, True
    try:
        yield
    finally:
        _exact = before


def exact_backward_active() -> bool:
    """Whether the caller runs inside `exact_backward` (a hook that shapes the training backward, such as
    the trainer's gradient clip, leaves the true-BP reference alone there)."""
    return _exact


class _LinearFeedback(torch.autograd.Function):
    """y = x W^T + b; backward: dx = dy B (B in place of W), dW = dy^T x, db = sum dy."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        needs_x, needs_w, needs_b, _ = (
            ctx.needs_input_grad
        )  # as autograd would: no input gradient for the stem
        grad_x = grad @ feedback.to(grad.dtype) if needs_x else None
        flat_grad, flat_x = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        grad_w = flat_grad.T @ flat_x.to(grad.dtype) if needs_w else None
        grad_b = flat_grad.sum(0) if ctx.has_bias and needs_b else None
        return grad_x, grad_w, grad_b, None


class _ConvFeedback(torch.autograd.Function):
    """A Conv2d whose input gradient is the transposed convolution with B's kernel instead of W's."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, stride, padding, dilation, groups):
        ctx.save_for_backward(x, feedback)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        # One kernel call: the input gradient through B's kernel; the weight gradient does not depend on
        # the kernel's values, so it is W's true gradient.
        needs_x, needs_w, needs_b = ctx.needs_input_grad[
            :3
        ]  # the stem's input needs no gradient: skip it
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad,
            x.to(grad.dtype),
            feedback.to(grad.dtype),
            [feedback.shape[0]] if ctx.has_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [needs_x, needs_w, ctx.has_bias and needs_b],
        )
        return grad_x, grad_w, grad_b, None, None, None, None, None


class FeedbackLayer:
    """Mixin of a Linear/Conv2d whose backward uses `feedback_weight(self)` in place of its weight."""

    feedback_weight: FeedbackWeight

    def backward_weight(self) -> torch.Tensor:
        """The tensor that carries the gradient to this layer's input (W's shape), detached."""
        return self.feedback_weight(self).detach()


class FeedbackLinear(FeedbackLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _exact or not torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        return _LinearFeedback.apply(x, self.weight, self.bias, self.backward_weight())


class FeedbackConv2d(FeedbackLayer, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _exact or not torch.is_grad_enabled():
            return super().forward(x)  # the true backward: the BP reference, or inference
        return _ConvFeedback.apply(
            x,
            self.weight,
            self.bias,
            self.backward_weight(),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


SWAPS = {nn.Linear: FeedbackLinear, nn.Conv2d: FeedbackConv2d}
NORMS = (
    _NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)  # their own parameters learn from the gradient that reaches them


def swap_layers(
    root: nn.Module,
    feedback_weight: FeedbackWeight,
    attach: Callable[[nn.Module], None] | None = None,
) -> list[str]:
    """Give every Linear and Conv2d under `root` a backward through `feedback_weight(layer)`; their names.

    The layer object stays the same (its class becomes FeedbackLinear / FeedbackConv2d), so its
    parameters, their init and every reference to it are kept; `attach(layer)` runs on each one first
    (register its feedback tensors there, with `register_feedback`). `feedback_weight` must be a plain
    function of the layer (it is stored on the layer; a bound method would drag its object along on a
    deepcopy). Layers already swapped are left alone.
    """
    swapped, kept = [], []
    for name, layer in root.named_modules():
        target = SWAPS.get(type(layer))
        if target is None:
            if not isinstance(layer, (FeedbackLayer, *NORMS)) and any(
                True for _ in layer.parameters(recurse=False)
            ):
                kept.append(f"{name or type(root).__name__} ({type(layer).__name__})")
            continue
        if target is FeedbackConv2d:
            _explicit_padding(name, layer)
        if attach is not None:
            attach(layer)
        layer.__class__ = target
        layer.feedback_weight = feedback_weight
        swapped.append(name)
    # A layer left with its true backward would mix BP into the rule's numbers without a word (BioTorch's
    # converter reports what it did not convert; here it is an error).
    if kept:
        raise ValueError(
            f"cannot give these layers a feedback backward (only nn.Linear and nn.Conv2d): "
            f"{', '.join(kept)}"
        )
    if not swapped:
        raise ValueError(
            f"{type(root).__name__} has no Linear or Conv2d layer to give a feedback backward"
        )
    return swapped


def _explicit_padding(name: str, conv: nn.Conv2d) -> None:
    """Give `conv` integer padding (the feedback backward's form), or refuse a padding it cannot take."""
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"conv {name}: padding_mode {conv.padding_mode!r} has no feedback backward; accepted: zeros"
        )
    if conv.padding == "valid":
        conv.padding = (0, 0)
    elif conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total):
            raise ValueError(
                f"conv {name}: padding 'same' with an even kernel pads unevenly; give it integer padding"
            )
        conv.padding = tuple(t // 2 for t in total)


def feedback_layers(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, layer) of every swapped layer under `root`."""
    return [(name, m) for name, m in root.named_modules() if isinstance(m, FeedbackLayer)]


def weight_std(layer: nn.Module) -> float:
    """The standard deviation of `layer.weight` (the scale of its init); ValueError when it is 0, since
    feedback drawn at that scale would carry no error at all."""
    std = layer.weight.detach().float().std().item() if layer.weight.numel() > 1 else 0.0
    if not std > 0:
        raise ValueError(
            f"{type(layer).__name__} of weight shape {tuple(layer.weight.shape)} has a constant weight "
            "at init (std 0): no feedback can be scaled like it"
        )
    return std


def xavier_std(shape: tuple[int, ...]) -> float:
    """sqrt(2 / (fan_in + fan_out)) of a weight of `shape` (K x C or K x C x kh x kw), fans as torch
    counts them (a kernel's area in both): the std of Xavier's init, BioTorch's `scaling_factor` under
    its `init: xavier`."""
    area = math.prod(shape[2:])
    return math.sqrt(2.0 / (shape[1] * area + shape[0] * area))


def xavier_uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A tensor of `shape` drawn as `nn.init.xavier_uniform_` draws it, U(-a, a) with a = sqrt(3) times
    `xavier_std(shape)`, from `generator` (BioTorch's FA and DFA feedback under `init: xavier`)."""
    return (torch.rand(shape, generator=generator) * 2 - 1) * (math.sqrt(3.0) * xavier_std(shape))


def like_weight(
    layer: nn.Module, generator: torch.Generator, init: str = "uniform"
) -> torch.Tensor:
    """A random tensor of `layer.weight`'s shape (fa's and kp's B), from `generator`: uniform or gaussian
    with the weight's standard deviation at init, or `xavier`: Xavier-uniform for the weight's shape,
    whatever the weight's own init (BioTorch's B under `init: xavier`)."""
    shape = tuple(layer.weight.shape)
    if init == "xavier":
        return xavier_uniform(shape, generator)
    if init == "uniform":
        noise = (torch.rand(shape, generator=generator) * 2 - 1) * 3**0.5
    elif init == "gaussian":
        noise = torch.randn(shape, generator=generator)
    else:
        raise ValueError(f"bad value {init!r} for 'init'; accepted: uniform, gaussian, xavier")
    return noise * weight_std(layer)


def register_feedback(
    module: nn.Module, name: str, tensor: torch.Tensor, learned: bool = False
) -> torch.Tensor:
    """Register `tensor` on `module` as feedback; returns what was registered.

    A fixed tensor is a buffer (saved in the state_dict, moved by `.to()`, never in `parameters()`).
    A `learned` one (kp's B) is a Parameter, so the trainer's optimizer updates it with the rule's
    `.grad`, but it is counted as feedback, never as a trainable parameter of the network.
    """
    if learned:
        module.register_parameter(name, nn.Parameter(tensor))
    else:
        module.register_buffer(name, tensor)
    marks = getattr(module, "_feedback_names", set())
    module._feedback_names = marks | {name}
    return getattr(module, name)


def feedback_tensors(root: nn.Module) -> dict[str, torch.Tensor]:
    """Every feedback tensor under `root`, by qualified name: wherever a rule registers it.

    That is every buffer except the statistics of normalisation layers (BatchNorm's running mean and
    variance, the only buffers the suite's architectures have: a test checks that an unprepared network
    has no feedback) and those a builder marks as the architecture's (`_architecture_buffers`: swin's
    position index, bench/models/zoo.py), plus the learned tensors marked by `register_feedback`.
    """
    found = {}
    for prefix, module in root.named_modules():
        own = getattr(module, "_architecture_buffers", ())
        names = (
            []
            if isinstance(module, _NormBase)
            else [n for n, _ in module.named_buffers(recurse=False) if n not in own]
        )
        for name in [*names, *sorted(getattr(module, "_feedback_names", ()))]:
            found[f"{prefix}.{name}" if prefix else name] = getattr(module, name)
    return found
