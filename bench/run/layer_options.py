"""BioTorch's two layer options as recipe keys, applied by the trainer to every Conv2d and Linear layer of
the network (head included) whatever the rule: `constrain_weights` and `grad_clip`.

BioTorch defines both in its converted layers, `biotorch/layers/fa_constructor/linear.py` and `conv.py`
(the fa, usf, brsf and frsf layers; its dfa layers apply `constrain_weights` only, its backpropagation
layers neither); here they are the trainer's, so they reach every rule alike.
- `constrain_weights`: the layer keeps the Frobenius norm of its weight at construction, and before every
  forward (training and evaluation) rescales the weight to it, W <- W * |W_0| / |W|, without gradient
  (after Moskovitz et al. 2018, "Feedback alignment in deep convolutional networks"). BioTorch assigns a
  new `nn.Parameter`, which detaches the weight from an optimizer built before the first forward (its
  benchmark's); the rescale here is in place, so the optimizer keeps training the weight.
- `gradient_clip`: a backward hook clamps each element of the gradients the layer's backward returns to
  [-1, 1]: the weight's, the bias's and the error passed down to its input. Here the bound is the key's
  value (BioTorch's true is 1): the error passed down is clamped by an identity on the layer's input whose
  backward clamps, and the weight and bias gradients by `clip_gradients` after the rule's step.
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = (nn.Conv2d, nn.Linear)  # what BioTorch converts, and so what its options reach


class _ClampGrad(torch.autograd.Function):
    """Identity forward; backward clamps each element of the gradient to [-bound, bound]."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.bound = bound
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.clamp(-ctx.bound, ctx.bound), None


def apply(model: nn.Module, recipe: dict) -> nn.Module:
    """Hook the recipe's layer options into `model`, in place (once, when it is built and prepared by its
    rule, so that the norms kept are those of its initial weights); returns `model`."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LAYERS)]
    if recipe["constrain_weights"]:
        for name, layer in layers:
            layer.register_forward_pre_hook(_constrain(name, layer))
    if recipe["grad_clip"]:
        for _, layer in layers:
            layer.register_forward_pre_hook(_clamp_input_gradient(recipe["grad_clip"]))
    return model


def clip_gradients(model: nn.Module, bound: float) -> None:
    """Clamp each element of every Conv2d and Linear parameter's gradient to [-bound, bound], in place
    (after the rule's step, before the optimizer's, as BioTorch's hook clamps before its optimizer step)."""
    for layer in model.modules():
        if isinstance(layer, LAYERS):
            for param in layer.parameters(recurse=False):
                if param.grad is not None:
                    param.grad.clamp_(-bound, bound)


def _constrain(name: str, layer: nn.Module):
    """The forward pre-hook that rescales `layer.weight` to its norm now (W * |W_0| / |W| in float32, in
    BioTorch's order of operations)."""
    with torch.no_grad():
        initial = float(torch.linalg.norm(layer.weight))
    if not initial > 0:  # a zero (or non-finite) norm would pin the weight at zero, or make it NaN
        raise ValueError(
            f"bad value true for 'constrain_weights': layer {name!r} starts with weight norm "
            f"{initial}; accepted: layers whose initial weights are finite and not all zero"
        )

    def hook(module: nn.Module, args):
        with torch.no_grad():
            weight = module.weight
            weight.copy_(weight * initial / torch.linalg.norm(weight))

    return hook


def _clamp_input_gradient(bound: float):
    """The forward pre-hook that clamps the gradient the layer passes to its input (not the input's other
    uses, such as a residual shortcut: BioTorch clamps the layer's own backward output)."""

    def hook(module: nn.Module, args):
        x, *rest = args
        if torch.is_tensor(x) and x.requires_grad:
            return (_ClampGrad.apply(x, bound), *rest)
        return None

    return hook
