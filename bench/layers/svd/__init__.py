"""SVD-factored layers for the SVD rules (svd_bp, ssa).

Files, each importing only those above it:
- factored.py: SVDLinear and SVDConv2d, W = U diag(s) V^T, converted from a network's layers, and their
  rank reduction.
- losses.py: the losses on them (orthogonality of U and V, alignment with a feedback basis, Hoyer
  sparsity of s) and their weighted sum over a model.
A rule imports these through bench.layers (or bench.layers.svd, for the names below).
"""

from bench.layers.svd.factored import DECOMPOSITIONS, FORMS, SVDLayer, svd_layers

__all__ = ["DECOMPOSITIONS", "FORMS", "SVDLayer", "svd_layers"]
