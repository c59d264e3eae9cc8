"""Measurements a record carries: parameter counts, alignment with BP, per-layer ranks (memory: bench/measure/memory.py)."""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.layers.feedback import FeedbackLayer, exact_backward, feedback_layers, feedback_tensors
from bench.layers.svd.factored import SVDLayer, svd_layers
from bench.local import is_auxiliary
from bench.method import call_hook
from bench.models import BlockNet


def network_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the network itself: every parameter except learned feedback (kp's B) and
    the auxiliary modules' (bench.local.register_auxiliary: trained, never deployed)."""
    feedback = feedback_tensors(model)
    return [
        (n, p) for n, p in model.named_parameters() if n not in feedback and not is_auxiliary(n)
    ]


def param_counts(model: BlockNet) -> dict[str, int]:
    """trainable (network parameters with requires_grad), feedback (every feedback tensor, wherever a
    rule registered it: bench.layers.feedback_tensors) and inference (what a deployed network stores:
    SVD layers in their cheapest form, s folded in)."""
    network = [p for _, p in network_parameters(model)]
    trainable = sum(p.numel() for p in network if p.requires_grad)
    feedback = sum(t.numel() for t in feedback_tensors(model).values())
    svd = [layer for _, layer in svd_layers(model)]
    inside_svd = sum(p.numel() for layer in svd for p in layer.parameters())
    inference = (
        sum(p.numel() for p in network) - inside_svd + sum(l.inference_params() for l in svd)
    )
    return {
        "trainable_params": trainable,
        "feedback_params": feedback,
        "inference_params": inference,
    }


def converted_layers(model: BlockNet) -> dict[str, list | None]:
    """`converted_layers`: every layer the rule gave a feedback backward (bench.layers.swap_layers), in
    module order ([] for a rule that gives none: bp, the local rules); `unconverted_layers`, where it
    gave some: every other layer with parameters of its own, as `name (type)`: the normalisation layers,
    which learn from the gradient that reaches them and pass it on through their own derivative (as
    BioTorch's converter leaves them); swap_layers refuses any other kind (None where none was given)."""
    converted = [name for name, _ in feedback_layers(model)]
    kept = [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if not isinstance(m, FeedbackLayer)
        and any(True for _ in m.parameters(recurse=False))
        and not is_auxiliary(name)
    ]
    return {"converted_layers": converted, "unconverted_layers": kept if converted else None}


def alignment_with_bp(model: BlockNet, method, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per block: mean over the probe batch of cos(method's signal at h_i, true dCE/dh_i)
    (at the pre-activation instead of h_i for a rule whose `signal_at` says so); NaN for every block
    of a rule that defines no block signals (`block_signals` returns None), and for a block whose
    signal or true gradient holds a NaN or an infinity (a diverged network).

    Runs in eval mode (BatchNorm statistics untouched), with every swapped layer's exact backward,
    and leaves every .grad as it was.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), exact_backward():
            # The class's eager forward_blocks, not a compiled one: a compiled graph hands back the block
            # outputs beside the logits, not on their autograd path, so dCE/dh_i would not exist.
            outputs, logits = type(model).forward_blocks(
                model, x, at=getattr(method, "signal_at", "output")
            )
            signals = call_hook(method.block_signals, model, outputs, logits.detach(), y, x=x)
            if signals is None:
                return [math.nan] * len(outputs)
            true = torch.autograd.grad(F.cross_entropy(logits, y), outputs)
            return [_mean_cosine(s.flatten(1), t.flatten(1)) for s, t in zip(signals, true)]
    finally:
        model.train(was_training)


def update_alignment(
    model: BlockNet,
    method,
    x: torch.Tensor,
    y: torch.Tensor,
    context=contextlib.nullcontext,
    on_gradients=None,
) -> dict[str, float]:
    """Per layer (a module owning trainable network parameters): the cosine between the update the rule's
    `step` produces on the probe batch (x, y) and the true BP gradient of the same parameters.

    `context()` wraps both passes (the training step's bf16 autocast, when on), so the measured update is
    the one that trains; x comes in the training batches' memory layout. `on_gradients(model)`: what the
    trainer does to the gradients after the rule's step (the grad_clip clamp), so that it is measured too.

    Both are taken in train mode from the same weights; the BP gradient of the batch-mean cross-entropy
    runs with every swapped layer's exact backward (bench.layers.exact_backward), never through the
    rule's own. Everything the step changes is restored: parameters, buffers (BatchNorm statistics, a
    rule's redrawn feedback), gradients, the rule's generator and its private state, so measuring never
    changes training. NaN where a layer's BP gradient or update is exactly 0 or not finite (undefined);
    exactly 1.0 where they are equal.
    """
    # Every tensor the step may change, non-persistent buffers included (state_dict would miss those).
    state = {
        name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    grads = {p: p.grad for p in model.parameters()}
    generator, private = method.generator.get_state(), copy.deepcopy(method.state_dict())
    was_training = model.training
    network = {
        id(p) for _, p in network_parameters(model)
    }  # kp's learned B is no network parameter
    layers = {
        name: [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) in network]
        for name, module in model.named_modules()
    }
    layers = {name: ps for name, ps in layers.items() if ps}
    try:
        model.train()
        with torch.enable_grad():
            model.zero_grad(set_to_none=True)
            with context():
                method.step(model, x, y)
            if on_gradients is not None:
                on_gradients(model)
            update = {name: _flat(ps) for name, ps in layers.items()}
            model.zero_grad(set_to_none=True)
            with exact_backward(), context():
                F.cross_entropy(model(x), y).backward()
            true = {name: _flat(ps) for name, ps in layers.items()}
        return {name: _cosine(update[name], true[name]) for name in layers}
    finally:
        with torch.no_grad():
            current = dict([*model.named_parameters(), *model.named_buffers()])
            for name, value in state.items():
                current[name].copy_(value)
        for p, grad in grads.items():
            p.grad = grad
        method.generator.set_state(generator)
        method.load_state_dict(private)
        model.train(was_training)


def _flat(params: list[torch.Tensor]) -> torch.Tensor:
    """The layer's gradients as one float64 vector (a missing gradient counts as zeros)."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().flatten()
            for p in params
        ]
    )


class Undefined(ValueError):
    """A measure has no value on these inputs (non-finite outputs, one class, no images); the message
    is the reason the record gives (`unmeasured`)."""


def finite(*tensors: torch.Tensor) -> bool:
    """Whether every element of every tensor is finite (no NaN, no infinity)."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def clamped_cosine(value: float) -> float:
    """A computed cosine clamped to [-1, 1] against rounding; NaN stays NaN (min and max would turn a
    NaN into 1.0: Python's `max(-1.0, min(1.0, nan))` is 1.0)."""
    return max(-1.0, min(1.0, value)) if math.isfinite(value) else math.nan


def rate(count: float, seconds: float) -> float:
    """count / seconds (images per second); NaN where no positive finite time was measured."""
    return count / seconds if math.isfinite(seconds) and seconds > 0 else math.nan


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) in [-1, 1]; exactly 1.0 for equal vectors; NaN where either is 0 or holds a NaN or an
    infinity (a diverged step: the cosine is undefined, never 1.0)."""
    if not finite(a, b):
        return math.nan
    if torch.equal(a, b):
        return 1.0 if a.any() else math.nan
    norms = a.norm() * b.norm()
    if norms == 0:
        return math.nan
    return clamped_cosine((a @ b / norms).item())


def _mean_cosine(signal: torch.Tensor, true: torch.Tensor) -> float:
    """Mean per-sample cosine over the samples where both vectors are nonzero; NaN where none is, or
    where any holds a NaN or an infinity (a diverged network: such a sample is no fitted sample).

    A fitted sample's true gradient can underflow to exactly 0; its cosine is undefined, not 0.
    """
    # float64 and no eps clamp (unlike F.cosine_similarity): fitted samples have gradients far below 1e-8.
    signal, true = signal.double(), true.double()
    if not finite(signal, true):
        return math.nan
    norms = signal.norm(dim=1) * true.norm(dim=1)
    defined = norms > 0
    if not defined.any():
        return math.nan
    return ((signal * true).sum(dim=1)[defined] / norms[defined]).mean().item()


def layer_ranks(model: nn.Module) -> dict[str, int]:
    """Rank of every SVD layer, by qualified name (empty for dense networks)."""
    return {name: layer.rank for name, layer in svd_layers(model) if isinstance(layer, SVDLayer)}
