"""The recipe key `locality`: how a local rule's step holds its graph.

`graph` (the default) is the rule's own `step`: one forward with the graph cut at every block input and
one backward call, so the whole network's saved activations live until that call, as in BP.
`blockwise` runs a rule that declares `blockwise = True` (bench.Method, "Locality") one block at a time:

1. a no-grad forward to the logits, keeping each block's input (the only activations kept throughout);
2. the head trained with its true cross-entropy gradient on the last block's output;
3. each block, last first, re-run from its kept input with its own graph, its signal (the rule's
   `block_signal`, made from those logits just before the block learns; or its `block_signals`, all made
   at once) backwarded, the graph and the block's input let go before the next block's is built; then
   the rule's parameter-only `penalty`.

The gradients equal the graph mode's (tests/test_blockwise.py, per rule, to float tolerance). BatchNorm
running statistics are updated once per step, by the first forward, as in `graph` mode: the re-runs use
the same batch statistics and their updates of the running estimates are undone. The re-run is the
price: one extra forward per step (FLOPs counted by perf step, which times this same function).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _NormBase

from bench.local import in_layout_of, step_stats
from bench.measure import memory

LOCALITIES = ("graph", "blockwise")


def step_function(method, locality: str) -> Callable:
    """The step the trainer calls for `method`: its own `step`, or the blockwise one."""
    if locality == "graph":
        return method.step
    problem = method.blockwise_problem()
    if problem:
        raise ValueError(f"bad value 'blockwise' for 'locality': {problem}")
    return functools.partial(blockwise_step, method=method)


def blockwise_step(model, x: torch.Tensor, y: torch.Tensor, method) -> dict[str, torch.Tensor]:
    """One training step of a blockwise rule, holding one block's graph at a time (see the module doc)."""
    at = getattr(method, "signal_at", "output")
    with torch.no_grad():
        inputs, points, h = [], [], x
        for i in range(len(model.blocks)):
            inputs.append(h)
            point, h = model.run_block(i, h, at)
            points.append(point)
    norms = [m for m in model.modules() if isinstance(m, _NormBase) and m.track_running_stats]
    updated = [
        [buffer.clone() for buffer in _statistics(m)] for m in norms
    ]  # after the one update of the step
    logits = model.head(h)  # h carries no graph: the cut before the head, as in graph mode
    loss = F.cross_entropy(logits, y)
    loss.backward()
    del h  # the head's input: no longer needed once the head has learned
    logits = logits.detach()
    signals = None if method.block_signal else method.block_signals(model, points, logits, y)
    del points
    memory.note_kept(
        [*inputs[1:], *(signals or [])]
    )  # what this step holds beside one block's graph
    # Last block first: each block's input is let go once the block has learned, so the inputs of the
    # small late blocks go while the large early ones are still held, and the peak stays near the sum
    # of the inputs plus the last block's graph, not plus the largest one's.
    for i in reversed(range(len(model.blocks))):
        point, _ = model.run_block(i, inputs[i], at)
        # A rule with block_signal makes each signal just before its block learns: one held at a time.
        made = signals is None
        signal = method.block_signal(model, i, point.detach(), logits, y) if made else signals[i]
        memory.note_kept([signal] if made else [])
        point.backward(in_layout_of(point, signal))
        memory.note_released(([signal] if made else []) + ([inputs[i]] if i > 0 else []))
        inputs[i] = None
        del point, signal  # this block's graph is freed here, before the next block's is built
    penalty, logged = method.penalty(model)
    if penalty is not None and penalty.requires_grad:
        penalty.backward()
    with torch.no_grad():
        for module, buffers in zip(norms, updated):
            for current, kept in zip(_statistics(module), buffers):
                current.copy_(kept)
    return {**step_stats(loss, logits, y), **logged}


def _statistics(module: _NormBase) -> list[torch.Tensor]:
    return [
        b
        for b in (module.running_mean, module.running_var, module.num_batches_tracked)
        if b is not None
    ]
