"""What local rules share: the output error and the one backward call that delivers block signals."""

from __future__ import annotations

import torch

from bench.layers.svd.factored import is_channels_last


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
