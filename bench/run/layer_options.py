"""BioTorch's two layer options as recipe keys, `constrain_weights` and `grad_clip`, applied by the trainer
to every Conv2d and Linear layer of the network (head included) for every rule that keeps them.

BioTorch defines both in its converted layers, `biotorch/layers/fa_constructor/linear.py` and `conv.py`
(the fa, usf, brsf and frsf layers; its dfa layers apply `constrain_weights` only, its backpropagation
layers neither); here they are the trainer's, so they reach every rule alike.
- `constrain_weights`: the layer keeps the Frobenius norm of its weight at construction, and every
  forward sees the weight rescaled to it, W <- W * |W_0| / |W|, without gradient (after Moskovitz et al.
  2018, "Feedback alignment in deep convolutional networks"). BioTorch rescales before each forward and
  assigns a new `nn.Parameter`, which detaches the weight from an optimizer built before the first forward
  (its benchmark's). Here the weight is rescaled in place once at the start and after every optimizer step
  (`after_step`), the only place it changes, so every forward sees what BioTorch's would, the optimizer
  keeps training the weight, and no forward writes into a weight an earlier forward's graph still holds
  (a rule running two forwards before one backward, as pepita, or a measure's extra forward).
- `gradient_clip`: a backward hook clamps each element of the gradients the layer's backward returns to
  [-1, 1]: the weight's, the bias's and the error passed down to its input. Here the bound is the key's
  value (BioTorch's true is 1): the error passed down is clamped by an identity on the layer's input whose
  backward clamps (not inside `exact_backward`, the true-BP reference of the alignment measures), and the
  weight and bias gradients by `clip_gradients` after the rule's step.

Both reach the network's own layers, the ones it had before its rule prepared it: a rule's auxiliary nets
(dgl's, predsim's, infopro's heads) are not the network, and a rule that replaces the network's layers
by others (ssa's and svd_bp's factorised layers) is refused, since the options would reach none of them.
A learned feedback that lives on the layer (kp's B) has its gradient clamped with the weight's, but is not
rescaled with it: under constrain_weights kp's B follows W's updates, not W's rescaling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bench import distributed
from bench.layers.feedback import exact_backward_active

LAYERS = (nn.Conv2d, nn.Linear)  # what BioTorch converts, and so what its options reach


@dataclass
class _Options:
    """What `apply` hooked into a model: the layers clipped and the kept norms of those constrained."""

    clip: float = 0.0
    clipped: list[nn.Module] = field(default_factory=list)
    constrained: list[tuple[nn.Module, float]] = field(default_factory=list)


class _ClampGrad(torch.autograd.Function):
    """Identity forward; backward clamps each element of the gradient to [-bound, bound]."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.bound = bound
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.clamp(-ctx.bound, ctx.bound), None


def network_layers(model: nn.Module) -> list[str]:
    """The names of `model`'s Conv2d and Linear layers: taken before the rule prepares it, they are the
    network's own, the layers the options reach."""
    return [name for name, m in model.named_modules() if isinstance(m, LAYERS)]


def apply(model: nn.Module, recipe: dict, layers: list[str] | None = None) -> nn.Module:
    """Hook the recipe's layer options into `model`, in place, once, when it is built and prepared by its
    rule (so that the norms kept are those of its initial weights); returns `model`.

    `layers`: `network_layers(model)` taken before the rule's `prepare` (default: the model's Conv2d and
    Linear layers now). Raises ValueError naming the key where an option cannot do what it says.
    """
    clip, constrain = recipe["grad_clip"], recipe["constrain_weights"]
    if not (clip or constrain):
        return model
    key = "grad_clip" if clip else "constrain_weights"
    value = clip if clip else "true"
    if clip and distributed.world_size() > 1:
        raise ValueError(
            f"bad value {clip} for 'grad_clip' with {distributed.world_size()} processes: each would "
            "clamp its own share of the batch's gradient, not the batch's as one process does; "
            "accepted: grad_clip 0, or one process"
        )
    modules = dict(model.named_modules())
    chosen = []
    for name in network_layers(model) if layers is None else layers:
        layer = modules.get(name)
        if not isinstance(layer, LAYERS):
            now = "gone" if layer is None else type(layer).__name__
            raise ValueError(
                f"bad value {value} for '{key}': the rule replaced the network's layer {name!r} "
                f"(now {now}), which the option does not reach; accepted: {key} off with this rule"
            )
        chosen.append((name, layer))
    options = _Options(clip=clip)
    if constrain:
        for name, layer in chosen:
            options.constrained.append((layer, _initial_norm(name, layer)))
    if clip:
        for _, layer in chosen:
            layer.register_forward_pre_hook(_clamp_input_gradient(clip))
            options.clipped.append(layer)
    model._layer_options = options  # a plain attribute: not state, rebuilt with the model
    after_step(model)  # BioTorch's first forward already sees the rescaled weight
    return model


def clip_gradients(model: nn.Module) -> None:
    """Clamp each element of every clipped layer's parameter gradients to [-grad_clip, grad_clip], in
    place (after the rule's step, before the optimizer's, as BioTorch's hook clamps before its optimizer
    step); nothing where the model has no grad_clip."""
    options = getattr(model, "_layer_options", None)
    if options is None:
        return
    for layer in options.clipped:
        for param in layer.parameters(recurse=False):
            if param.grad is not None:
                param.grad.clamp_(-options.clip, options.clip)


def after_step(model: nn.Module) -> None:
    """Rescale every constrained weight to its kept norm, in place (W * |W_0| / |W| in float32, in
    BioTorch's order of operations): after each optimizer step; nothing without constrain_weights."""
    options = getattr(model, "_layer_options", None)
    if options is None:
        return
    with torch.no_grad():
        for layer, initial in options.constrained:
            weight = layer.weight
            weight.copy_(weight * initial / torch.linalg.norm(weight))


def _initial_norm(name: str, layer: nn.Module) -> float:
    with torch.no_grad():
        initial = float(torch.linalg.norm(layer.weight))
    if not initial > 0:  # a zero (or non-finite) norm would pin the weight at zero, or make it NaN
        raise ValueError(
            f"bad value true for 'constrain_weights': layer {name!r} starts with weight norm "
            f"{initial}; accepted: layers whose initial weights are finite and not all zero"
        )
    return initial


def _clamp_input_gradient(bound: float):
    """The forward pre-hook that clamps the gradient the layer passes to its input (not the input's other
    uses, such as a residual shortcut: BioTorch clamps the layer's own backward output)."""

    def hook(module: nn.Module, args):
        x, *rest = args
        if torch.is_tensor(x) and x.requires_grad and not exact_backward_active():
            return (_ClampGrad.apply(x, bound), *rest)
        return None

    return hook
