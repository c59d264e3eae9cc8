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

A rule whose modules learn from local losses (`module_loss`, dgl) needs no logits before its modules
learn, so no first forward and no re-run (`module_step`): the modules (the rule's `module_ranges`) run
first to last, each on its detached input, its local loss (and, for the last, the head's cross-entropy)
backwarded into it and its auxiliary modules at once, its graph freed before the next module's is
built. Every layer runs once, as in graph mode, so BatchNorm statistics move once too. Each module's
logged terms come back as `module_loss` gave them.

A blockwise step returns the keys of the rule's own `step`: `loss` (the head's cross-entropy),
`correct`, and the rule's logged terms (`penalty`'s, `module_loss`'s).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.local import (
    call_module_loss,
    frozen_statistics,
    in_layout_of,
    run_module,
    step_stats,
)
from bench.measure import memory
from bench.method import call_hook

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
    if method.module_loss:
        return module_step(model, x, y, method)
    at = getattr(method, "signal_at", "output")
    with torch.no_grad():
        inputs, points, h = [], [], x
        for i in range(len(model.blocks)):
            inputs.append(h)
            point, h = model.run_block(i, h, at)
            points.append(point)
    # The network's statistics as the one update of the step left them: the re-runs leave them so.
    with frozen_statistics(model.blocks, model.head):
        logits = model.head(h)  # h carries no graph: the cut before the head, as in graph mode
        loss = F.cross_entropy(logits, y)
        loss.backward()
        del h  # the head's input: no longer needed once the head has learned
        logits = logits.detach()
        signals = None
        if not method.block_signal:
            signals = call_hook(method.block_signals, model, points, logits, y, x=x)
        del points
        # what this step holds beside one block's graph
        memory.note_kept([*inputs[1:], *(signals or [])])
        # Last block first: each block's input is let go once the block has learned, so the inputs of
        # the small late blocks go while the large early ones are still held, and the peak stays near
        # the sum of the inputs plus the last block's graph, not plus the largest one's.
        for i in reversed(range(len(model.blocks))):
            point, _ = model.run_block(i, inputs[i], at)
            # A rule with block_signal makes each signal just before its block learns: one at a time.
            made = signals is None
            if made:
                signal = call_hook(method.block_signal, model, i, point.detach(), logits, y, x=x)
            else:
                signal = signals[i]
            memory.note_kept([signal] if made else [])
            point.backward(in_layout_of(point, signal))
            memory.note_released(([signal] if made else []) + ([inputs[i]] if i > 0 else []))
            inputs[i] = None
            del point, signal  # this block's graph is freed here, before the next block's is built
        penalty, logged = method.penalty(model)
        if penalty is not None and penalty.requires_grad:
            penalty.backward()
    return {**step_stats(loss, logits, y), **logged}


def module_step(model, x: torch.Tensor, y: torch.Tensor, method) -> dict[str, torch.Tensor]:
    """One training step of a rule with per-module losses, one module's graph at a time: each module
    on its detached input, its `module_loss` (the last: plus the head's cross-entropy through it)
    backwarded at once, its output kept detached as the next module's input."""
    ranges = method.module_ranges(model)
    h, terms, last = x, {}, len(ranges) - 1
    for index, blocks in enumerate(ranges):
        kept = h
        h = run_module(model, blocks, kept)
        local, logged = call_module_loss(method, model, index, h, y, x)
        terms |= logged
        if index == last:
            logits = model.head(h)
            loss = F.cross_entropy(logits, y)
            local = loss if local is None else loss + local
        if local is not None:
            local.backward()
        memory.note_released([kept] if index else [])
        h = h.detach()
        memory.note_kept([h])  # the next module's input, held outside autograd until it has learned
        del (
            local
        )  # this module's graph (and its auxiliary modules') is freed before the next is built
    memory.note_released([h])
    penalty, logged = method.penalty(model)
    if penalty is not None and penalty.requires_grad:
        penalty.backward()
    return {**step_stats(loss, logits, y), **terms, **logged}
