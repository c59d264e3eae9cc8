"""Layers the learning rules swap into a BlockNet: SVD-factored Linear and Conv2d, and layers whose
backward a rule replaces (feedback layers): feedback.py (the generic swap and feedback registry),
sign.py (sign-symmetric feedback), svd/ (SVD-factored layers and their losses)."""

from bench.layers.feedback import (
    FeedbackConv2d,
    FeedbackLayer,
    FeedbackLinear,
    exact_backward,
    exact_backward_active,
    feedback_layers,
    feedback_tensors,
    like_weight,
    register_feedback,
    swap_layers,
    weight_std,
    xavier_std,
    xavier_uniform,
)
from bench.layers.svd.factored import (
    SVDConv2d,
    SVDLayer,
    SVDLinear,
    convert_to_svd,
    energy_rank,
    reduce_rank,
    reduce_ranks,
    svd_layers,
)
from bench.layers.svd.losses import alignment_loss, factor_penalties, hoyer, orthogonality_loss

__all__ = [
    "FeedbackConv2d",
    "FeedbackLayer",
    "FeedbackLinear",
    "SVDConv2d",
    "SVDLayer",
    "SVDLinear",
    "alignment_loss",
    "convert_to_svd",
    "energy_rank",
    "exact_backward",
    "exact_backward_active",
    "factor_penalties",
    "feedback_layers",
    "feedback_tensors",
    "hoyer",
    "like_weight",
    "orthogonality_loss",
    "reduce_rank",
    "reduce_ranks",
    "register_feedback",
    "svd_layers",
    "swap_layers",
    "weight_std",
    "xavier_std",
    "xavier_uniform",
]
