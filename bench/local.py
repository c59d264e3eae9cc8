"""What local rules share: the output error and the one backward call that delivers block signals;
auxiliary modules (training-only heads and decoders) and where they live; the `modules` option that
groups blocks into gradient-isolated modules; the graph-mode step of a rule with per-module losses;
a forward pass that leaves normalisation statistics as they were."""

from __future__ import annotations

import contextlib
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from bench.layers.svd.factored import is_channels_last
from bench.option import Option


def output_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """e = softmax(logits) - onehot(y), detached (N x K): the batch-summed CE gradient at the logits."""
    with torch.no_grad():
        e = torch.softmax(logits.float(), dim=1)
        e[torch.arange(len(y), device=y.device), y] -= 1
    return e.to(logits.dtype)


FEEDBACK_INITS = ("uniform", "gaussian", "prior")


def shared_feedback(
    num_classes: int, sizes: list[int], init: str, generator: torch.Generator
) -> torch.Tensor:
    """TinyDFA's one feedback buffer for every block: K x max(sizes), block i using its first sizes[i] columns.

    Entries uniform in [-1, 1) or standard gaussian (callers scale block i by 1/sqrt(size_i)), or `prior`:
    uniform in [0, 1e-4) as the authors' earlier DFA drew it; all from `generator`.
    """
    shape = (num_classes, max(sizes))
    if init == "uniform":
        return torch.rand(shape, generator=generator) * 2 - 1
    if init == "gaussian":
        return torch.randn(shape, generator=generator)
    if init == "prior":
        return torch.rand(shape, generator=generator) * 1e-4
    raise ValueError(f"bad value {init!r} for 'init'; accepted: one of {', '.join(FEEDBACK_INITS)}")


def deliver(loss: torch.Tensor, outputs: list[torch.Tensor], signals: list[torch.Tensor]) -> None:
    """One backward call: `loss` through its graph, and each signal as the gradient of its block output.

    With the graph cut at every block input this is the gradient of
    loss + sum_i <stopgrad(signal_i), h_i>, each block's parameters seeing only their own term.
    """
    signals = [in_layout_of(h, signal) for h, signal in zip(outputs, signals)]
    torch.autograd.backward([loss, *outputs], [torch.ones_like(loss), *signals])


def in_layout_of(h: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """`signal` in `h`'s memory layout (NHWC when the model runs channels_last).

    Signals are built NCHW (a view of one projection); handed to a channels_last graph as they are,
    every backward kernel below converts them on its own, which made DFA's step on CPU slower than
    BP's. One copy here is the cheapest conversion.
    """
    return signal.contiguous(memory_format=torch.channels_last) if is_channels_last(h) else signal


def step_stats(
    loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The batch's mean cross-entropy and count of correct predictions, as 0-d tensors.

    Tensors, not floats: the trainer sums them on the device and reads them once an epoch,
    so a step never waits for the device.
    """
    return {"loss": loss.detach(), "correct": (logits.detach().argmax(1) == y).sum()}


# Auxiliary modules ---------------------------------------------------------------------------------

AUXILIARY = (
    "auxiliary"  # the model's attribute (and state-dict prefix) holding every auxiliary module
)


def register_auxiliary(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Register `module` as the training-only auxiliary module `name` of `model`; returns it.

    Auxiliary modules (a local classifier head, a decoder, a projection net) learn with the network
    but are no part of it: no inference uses them. They live in one nn.ModuleDict, `model.auxiliary`,
    made by the first registration, because being a submodule of the model is what gives them, with
    no code in the trainer, everything the network's layers get: `parameters()` (so the optimizer,
    built after `prepare`, trains them with the recipe's weight decay), `.to()` (the device and
    channels_last), `state_dict()` (checkpoints, resume), `train()`/`eval()`; and one named place is
    how every measure sets them apart, with no mark on each tensor: `auxiliary_params`, the memory
    entry `auxiliary`, never trainable_params, feedback_params, inference_params or the alignment
    measures (bench/measure/network.py network_parameters). A rule that registers none leaves the
    model, its state dict and its checkpoints as they were. An auxiliary module holds parameters and
    normalisation statistics only: a buffer of its own would be counted as feedback, so it is refused.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"auxiliary module {name!r} is a {type(module).__name__}, not an nn.Module")
    buffers = [
        f"{prefix}.{b}" if prefix else b
        for prefix, sub in module.named_modules()
        if not isinstance(sub, _NormBase)
        for b, _ in sub.named_buffers(recurse=False)
    ]
    if buffers:
        raise ValueError(
            f"auxiliary module {name!r} holds buffers {buffers}; accepted: parameters and "
            "normalisation statistics only (register fixed tensors as feedback)"
        )
    if AUXILIARY not in model._modules:
        model.add_module(AUXILIARY, nn.ModuleDict())
    if name in model.auxiliary:
        raise ValueError(f"auxiliary module {name!r} is registered twice")
    model.auxiliary[name] = module
    return module


def is_auxiliary(name: str) -> bool:
    """Whether a qualified parameter or buffer name of the model is an auxiliary module's."""
    return name.startswith(AUXILIARY + ".")


def auxiliary_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every auxiliary module of `model` (none for most rules)."""
    return [(n, p) for n, p in model.named_parameters() if is_auxiliary(n)]


@contextlib.contextmanager
def seeded(generator: torch.Generator):
    """Modules built inside draw their default init from `generator` (one seed taken from it), and the
    global RNG is left as it was: an auxiliary net gets PyTorch's usual init, seeded per run."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# Gradient-isolated modules ------------------------------------------------------------------------

# The one `modules` option every module-wise rule declares (options = {"modules": MODULES, ...}).
MODULES = Option(
    0,
    "gradient-isolated modules: the network's blocks grouped into this many contiguous modules, "
    "from 1 to the arch's block count (0: one module per block)",
    minimum=0,
)


def module_groups(model: nn.Module, modules: int) -> list[range]:
    """The blocks of `model` grouped into `modules` contiguous modules, as ranges of block indices.

    0 gives one module per block. Otherwise module m holds blocks floor(m B / K) to floor((m+1) B / K)
    - 1 [suite]: sizes differ by at most one, the larger modules last (e.g. 3 blocks in 2 modules:
    [0], [1, 2]). A ValueError names `modules`, the value and what the arch accepts.
    """
    blocks = len(model.blocks)
    if modules == 0:
        return [range(i, i + 1) for i in range(blocks)]
    if isinstance(modules, bool) or not isinstance(modules, int) or not 1 <= modules <= blocks:
        raise ValueError(
            f"bad value {modules!r} for 'modules'; accepted: 1 to {blocks} (this arch's blocks), "
            "or 0 for one module per block"
        )
    edges = [math.floor(m * blocks / modules) for m in range(modules + 1)]
    return [range(a, b) for a, b in zip(edges, edges[1:])]


def run_module(model: nn.Module, blocks: range, h: torch.Tensor) -> torch.Tensor:
    """The output of the module made of `blocks` on its input `h`."""
    for i in blocks:
        h = model.blocks[i](h)
    return h


def call_module_loss(rule, model: nn.Module, index: int, output, y, x) -> tuple:
    """rule.module_loss(model, index, output, y, x), `x` (the step's input batch: a decoder's target)
    passed only where the hook's signature names it, so a rule written without it (dgl) keeps working.
    (bench.method.call_hook does this for every hook; bench.method imports this module, so not it.)"""
    if "x" in inspect.signature(rule.module_loss).parameters:
        return rule.module_loss(model, index, output, y, x=x)
    return rule.module_loss(model, index, output, y)


def module_losses_step(rule, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The graph-mode step of a rule with per-module losses (`module_loss`): one forward with the graph
    cut at every module input, each module's local loss, the head's cross-entropy through the last
    module, all summed and backwarded in one call. Each module's parameters (and its auxiliary
    modules') see only their own loss; `locality: blockwise` computes the same gradients one module at
    a time (bench/run/blockwise.py). Returns `loss`, `correct` and every module's logged terms."""
    ranges = rule.module_ranges(model)
    h, losses, terms = x, [], {}
    for index, blocks in enumerate(ranges):
        h = run_module(model, blocks, h.detach())
        local, logged = call_module_loss(rule, model, index, h, y, x)
        losses += [] if local is None else [local]
        terms |= logged
    logits = model.head(h)
    loss = F.cross_entropy(logits, y)
    sum(losses, loss).backward()
    return {**step_stats(loss, logits, y), **terms}


# Normalisation statistics --------------------------------------------------------------------------


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@contextlib.contextmanager
def frozen_statistics(*modules: nn.Module):
    """Forward passes inside leave every normalisation layer's running statistics under `modules` as
    they were: a second forward of a step (a re-run, a modulated input) normalises with the batch's
    statistics, as in training, without moving the estimates twice. Gradients flow as in any forward.

    Inside, each layer works on copies of its estimates; on exit the untouched originals are put back.
    Writing the originals back in place instead would bump their version under any graph built inside
    (or, in eval mode, outside), and BatchNorm's backward would then refuse to run; with copies a
    backward after the block works."""
    originals = []
    for root in modules:
        for module in root.modules():
            if isinstance(module, _NormBase) and module.track_running_stats:
                for name in STATISTICS:
                    if getattr(module, name, None) is not None:
                        originals.append((module, name, module._buffers[name]))
                        module._buffers[name] = module._buffers[name].clone()
    try:
        yield
    finally:
        for module, name, original in originals:
            module._buffers[name] = original
