"""Dead units per block: the fraction of a block's output units that no probe image activates.

A unit is one element of the block's output (a feature, or a channel at one position); it is dead when it
is at most 0 on every image of the run's fixed probe batch. For a block that ends in a ReLU, as every
block of the suite's archs does, these are its dead ReLUs on that batch: units that pass no signal
forward and, through the ReLU's zero derivative, learn from no error. A rule whose feedback pushes many
units below zero for good (a known failure of random feedback) shows here before its accuracy does.
Taken after every epoch, on the network in eval mode (batch norm with its running statistics).
"""

from __future__ import annotations

from bench.measure.declare import Measure


def dead_fraction(model, x, y) -> list[float]:
    """Per block of `model`, the fraction of its output units that are <= 0 on every image of `x`."""
    outputs, _ = model.forward_blocks(x)
    return [(h.flatten(1) > 0).any(0).logical_not().float().mean().item() for h in outputs]


MEASURE = Measure(
    name="dead_units",
    when="epoch",
    shape="per_block",
    low=0.0,
    high=1.0,
    compute=dead_fraction,
    doc="per block, the fraction of output units at most 0 on every probe image (dead ReLUs)",
    column="dead units",
)
