"""The losses on SVD layers (bench/layers/svd/factored.py): orthogonality of U and V, alignment of a layer's
top singular directions with a feedback basis, Hoyer sparsity of s, and their weighted sum over a model."""

from __future__ import annotations

import torch
from torch import nn

from bench.layers.svd.factored import SVDLayer, svd_layers

# Factors with at most this many entries and one shape share one batched matmul in L_orth (a ResNet
# stage's repeated layers): kernel launches, not FLOPs, are their cost. Bigger factors go one matmul
# each: stacking them costs a copy and batched matmuls of big factors ran slower than single ones.
GRAM_BATCH_NUMEL = 1 << 14


class _GramDistances(torch.autograd.Function):
    """sum_i ||A_i^T A_i - I||_F^2 / r_i^2 over factors A_i (n_i x r_i), with the closed-form gradient
    4 A_i (A_i^T A_i - I) / r_i^2.

    Autograd through A.T @ A would spend two n x r x r matmuls per factor on the backward; this spends
    one (the same numbers up to float rounding). One autograd node serves all the factors: on a CPU the
    per-factor Python nodes and small kernels, not the FLOPs, were most of the penalty's time.
    float32 even under autocast: the Grams are small r x r matrices.
    """

    @staticmethod
    def forward(ctx, *factors: torch.Tensor) -> torch.Tensor:
        groups: dict[tuple, list[int]] = {}
        for i, a in enumerate(factors):
            key = tuple(a.shape) if a.numel() <= GRAM_BATCH_NUMEL else i
            groups.setdefault(key, []).append(i)
        total = torch.zeros((), device=factors[0].device)
        saved = []
        with torch.autocast(factors[0].device.type, enabled=False):
            for members in groups.values():
                if len(members) == 1:
                    a = factors[members[0]].float()
                    gap = a.T @ a
                else:
                    a = torch.stack([factors[i] for i in members]).float()  # g x n x r
                    gap = a.mT @ a
                gap.diagonal(dim1=-2, dim2=-1).sub_(1)
                total.add_(torch.dot(gap.view(-1), gap.view(-1)), alpha=1 / a.shape[-1] ** 2)
                saved += [a, gap]
        ctx.members = list(groups.values())
        ctx.count = len(factors)
        ctx.save_for_backward(*saved)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        grads: list[torch.Tensor | None] = [None] * ctx.count
        with torch.autocast(grad.device.type, enabled=False):
            for members, a, gap in zip(ctx.members, saved[::2], saved[1::2]):
                da = a @ (
                    gap * (4 * grad.float() / a.shape[-1] ** 2)
                )  # the scale on the r x r side
                if len(members) == 1:
                    grads[members[0]] = da
                else:
                    for i, g in zip(members, da.unbind(0)):
                        grads[i] = g
        return tuple(grads)


def orthogonality_loss(layer: SVDLayer) -> torch.Tensor:
    """L_orth = ||U^T U - I||_F^2 / r^2 + ||V^T V - I||_F^2 / r^2 (Yang et al. 2020) [suite form]."""
    return _GramDistances.apply(layer.U, layer.V)


def alignment_loss(layer: SVDLayer, feedback_basis: torch.Tensor, on: str = "top") -> torch.Tensor:
    """L_align = 1 - ||Q^T B_U||_F^2 / k [suite]: the share of the feedback subspace outside span(Q).

    feedback_basis: B_U (m x k) with orthonormal columns. on="top": Q spans the k columns of the
    layer's channel basis with the largest |s|; on="all": Q spans all r columns.
    """
    basis = layer.channel_basis()
    k = feedback_basis.shape[1]
    if on == "top":
        basis = basis[:, torch.topk(layer.s.detach().abs(), min(k, layer.rank)).indices]
    q, _ = torch.linalg.qr(basis)
    return 1 - (q.T @ feedback_basis).pow(2).sum() / k


def hoyer(layer: SVDLayer) -> torch.Tensor:
    """Hoyer sparsity measure of the singular values, ||s||_1 / ||s||_2."""
    return layer.s.abs().sum() / layer.s.norm().clamp_min(1e-12)


def factor_penalties(
    module: nn.Module, lambda_orth: float, lambda_sparse: float
) -> tuple[torch.Tensor, dict]:
    """lambda_orth * sum L_orth + lambda_sparse * sum Hoyer(s) over the SVD layers of `module`.

    Returns (penalty to add to the loss, {"orth": .., "sparse": ..} per-layer means for the log).
    A term whose weight is 0 is still measured, without a graph, so ablations log it too.
    Each sum is computed for all layers at once (one autograd node for L_orth, foreach norms for
    Hoyer): per-layer small kernels were most of the penalties' time on a CPU.
    """
    layers = [layer for _, layer in svd_layers(module)]
    penalty = torch.zeros((), device=layers[0].U.device) if layers else torch.zeros(())
    if not layers:
        return penalty, {"orth": penalty.clone(), "sparse": penalty.clone()}
    grad = torch.is_grad_enabled()
    with torch.set_grad_enabled(lambda_orth != 0 and grad):
        orth = _GramDistances.apply(*[f for layer in layers for f in (layer.U, layer.V)])
    with torch.set_grad_enabled(lambda_sparse != 0 and grad):
        values = [layer.s for layer in layers]
        l1, l2 = torch._foreach_norm(values, 1), torch._foreach_norm(values, 2)
        sparse = (torch.stack(l1) / torch.stack(l2).clamp_min(1e-12)).sum()
    terms = {}
    for key, weight, total in (("orth", lambda_orth, orth), ("sparse", lambda_sparse, sparse)):
        if weight:
            penalty = penalty + weight * total
        terms[key] = total.detach() / len(layers)
    return penalty, terms
