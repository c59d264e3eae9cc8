"""Auxiliary parameters: how many parameters a rule trains outside the network, in its auxiliary modules.

Local-loss rules (dgl) train each module through a small auxiliary net (a local classifier head, a
decoder) registered with bench.local.register_auxiliary. Those parameters are trained and cost memory,
but they are no part of the network, no feedback, and no inference uses them: they are counted here,
never in trainable_params, feedback_params or inference_params (their bytes: the memory entry
`auxiliary`). 0 for a rule that registers none (bp, dfa, every feedback-alignment rule). A count of the
trained network's parameters, once after training; it does not depend on the probe batch.
"""

from __future__ import annotations

from bench.measure.declare import Measure


def count(model, x, y) -> int:
    """The number of parameters in `model`'s auxiliary modules (0 without any)."""
    from bench.local import (
        auxiliary_parameters,
    )  # here: the record wing reads this file without torch

    return sum(p.numel() for _, p in auxiliary_parameters(model))


MEASURE = Measure(
    name="auxiliary_params",
    when="end",
    shape="number",
    low=0.0,
    high=float("inf"),
    compute=count,
    doc="parameters the rule trains in auxiliary modules (local heads, decoders), apart from the "
    "network's trainable parameters",
    column="auxiliary params",
    digits=0,
)
