"""Weight alignment (issue 21, BioTorch's layer-wise measure): per layer with its own feedback weight, the
angle between the forward weight and the weight its backward uses, and the ratio of their norms.

A swapped layer (bench.layers.feedback: fa, usf, brsf, frsf, kp) carries the error to its input through
B_l instead of W_l. BP's backward uses W_l^T; the rule's uses B_l^T, stored in W_l's shape, so the angle
between W_l^T and B_l^T is the angle between W_l and B_l flattened:

    angle_l = arccos(<W_l, B_l> / (||W_l|| ||B_l||)) in degrees,   ratio_l = ||B_l|| / ||W_l|| (Frobenius).

0 degrees is BP's backward (up to scale); a random B independent of W sits near 90.
[suite] Undefined (the history's `weight_alignment` is null) for rules with no per-layer feedback weight:
dfa, ssa and drtp project the output error straight to each block with a matrix of shape
(classes x block size), which has no forward weight of its shape to compare with (their block signals'
alignment with the true gradient is the history's `alignment`); bp and svd_bp use W itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.layers.feedback import feedback_layers
from bench.measure.network import clamped_cosine, finite


def angle_and_ratio(
    weight: torch.Tensor, feedback: torch.Tensor
) -> tuple[float | None, float | None]:
    """(angle in degrees, ||feedback|| / ||weight||) of two tensors of one shape, in float64; the angle is
    None when either is all zeros, the ratio None when the weight is; both None when either holds a NaN
    or an infinity (a diverged network: undefined, not 0 degrees or a ratio of 0)."""
    if weight.shape != feedback.shape:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} and feedback of shape {tuple(feedback.shape)}: "
            "the angle needs one shape"
        )
    w, b = weight.detach().double().flatten(), feedback.detach().double().flatten()
    if not finite(w, b):
        return None, None
    w_norm, b_norm = w.norm().item(), b.norm().item()
    ratio = b_norm / w_norm if w_norm > 0 else None
    if not (w_norm > 0 and b_norm > 0):
        return None, ratio
    cosine = clamped_cosine((w @ b).item() / (w_norm * b_norm))
    return (math.degrees(math.acos(cosine)) if math.isfinite(cosine) else None), ratio


@torch.no_grad()
def weight_alignment(model: nn.Module) -> dict | None:
    """{"angle_deg": {layer: degrees}, "norm_ratio": {layer: ||B||/||W||}} over every swapped layer of
    `model`, by qualified name; None when it has none (the measure is undefined for its rule)."""
    layers = feedback_layers(model)
    if not layers:
        return None
    angles, ratios = {}, {}
    for name, layer in layers:
        angles[name], ratios[name] = angle_and_ratio(layer.weight, layer.backward_weight())
    return {"angle_deg": angles, "norm_ratio": ratios}
