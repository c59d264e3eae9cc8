"""Layers the learning rules swap into a BlockNet (SVD-factored Linear and Conv2d)."""
from bench.layers.svd import (
    SVDConv2d, SVDLayer, SVDLinear, alignment_loss, convert_to_svd, energy_rank, factor_penalties,
    hoyer, orthogonality_loss, reduce_rank, reduce_ranks, svd_layers,
)

__all__ = ["SVDConv2d", "SVDLayer", "SVDLinear", "alignment_loss", "convert_to_svd", "energy_rank",
           "factor_penalties", "hoyer", "orthogonality_loss", "reduce_rank", "reduce_ranks", "svd_layers"]
