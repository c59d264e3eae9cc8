"""What local rules share: the output error and the one backward call that delivers block signals."""
from __future__ import annotations

import torch


def output_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """e = softmax(logits) - onehot(y), detached (N x K): the batch-summed CE gradient at the logits."""
    with torch.no_grad():
        e = torch.softmax(logits.float(), dim=1)
        e[torch.arange(len(y), device=y.device), y] -= 1
    return e.to(logits.dtype)


def deliver(loss: torch.Tensor, outputs: list[torch.Tensor], signals: list[torch.Tensor]) -> None:
    """One backward call: `loss` through its graph, and each signal as the gradient of its block output.

    With the graph cut at every block input this is the gradient of
    loss + sum_i <stopgrad(signal_i), h_i>, each block's parameters seeing only their own term.
    """
    torch.autograd.backward([loss, *outputs], [torch.ones_like(loss), *signals])


def step_stats(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch's mean cross-entropy and count of correct predictions, as 0-d tensors.

    Tensors, not floats: the trainer sums them on the device and reads them once an epoch,
    so a step never waits for the device.
    """
    return {"loss": loss.detach(), "correct": (logits.detach().argmax(1) == y).sum()}
