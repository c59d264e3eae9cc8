"""ssa: SVD-Space Alignment, low-rank DFA with SVD-structured feedback (arXiv 2510.25594)."""
import math

import torch
import torch.nn.functional as F

from bench import Method, Option
from bench.layers import alignment_loss, convert_to_svd, factor_penalties, reduce_ranks, svd_layers
from bench.layers.svd import DECOMPOSITIONS
from bench.local import deliver, output_error, step_stats


class SSA(Method):
    """Local loss of block i: <stopgrad(g_i), h_i> + lambda_align L_align + lambda_orth L_orth (+ cos, Hoyer).

    [paper] every hidden layer trained as U diag(s) V^T from the SVD of its initial weight; feedback
    shares the SVD structure; full rank at start, then epoch-scheduled energy-threshold reduction.
    [suite] B_i = B_V diag(beta) B_U^T (K x m, k = min(K, r) orthonormal columns each side) from the
    SVD of a seeded Gaussian scaled by 1/sqrt(size_i); for convs the channel signal is broadcast
    over the H x W positions; L_align acts on the layer that produces the block output.
    """

    options = {
        "rank_ratio": Option(1.0, "initial rank as a share of min(m, n) [paper: full rank]", above=0.0, maximum=1.0),
        "decomposition": Option("channel", "conv factorisation; spatial is the paper's form", choices=DECOMPOSITIONS),
        "lambda_align": Option(0.1, "weight of L_align [suite default]", minimum=0.0),
        "lambda_orth": Option(0.1, "weight of L_orth [suite default]", minimum=0.0),
        "lambda_cos": Option(0.0, "weight of 1 - cos(h_i, g_i) (earlier paper version)", minimum=0.0),
        "lambda_sparse": Option(0.0, "weight of the Hoyer sparsity of s (earlier paper version)", minimum=0.0),
        "align_on": Option("top", "L_align against the top-k columns of U or all of U", choices=("top", "all")),
        "rank_epochs": Option([2, 4, 6, 8], "epochs after which energy-threshold rank reduction runs", minimum=1),
        "rank_eps": Option(0.01, "energy share rank reduction may drop", minimum=0.0, maximum=1.0),
        "scale": Option(1.0, "multiplier on every feedback matrix", minimum=0.0),
    }

    def prepare(self, model, num_classes, generator):
        convert_to_svd(model.blocks, self.rank_ratio, self.decomposition)
        self.out_layers = []
        for i, (block, shape) in enumerate(zip(model.blocks, model.block_output_shapes())):
            channels = shape[0]
            layers = [layer for _, layer in svd_layers(block) if layer.channel_basis().shape[0] == channels]
            if not layers:
                raise ValueError(f"ssa: block {i} has no SVD layer producing its {channels} output channels")
            layer = layers[-1]
            self.out_layers.append(layer)
            k = min(num_classes, layer.rank)
            gaussian = torch.randn(num_classes, channels, generator=generator) / math.sqrt(math.prod(shape))
            u, beta, vh = torch.linalg.svd(gaussian, full_matrices=False)
            model.feedback.register_buffer(f"ssa_{i}_BV", u[:, :k].contiguous())
            model.feedback.register_buffer(f"ssa_{i}_beta", beta[:k].contiguous())
            model.feedback.register_buffer(f"ssa_{i}_BU", vh[:k].T.contiguous())
        return model

    def _factors(self, model, i):
        fb = model.feedback
        return getattr(fb, f"ssa_{i}_BV"), getattr(fb, f"ssa_{i}_beta"), getattr(fb, f"ssa_{i}_BU")

    def channel_signals(self, model, logits, y):
        """Per block, e B_i: the N x m channel signal before its broadcast over H x W."""
        error = output_error(logits, y) / len(y)
        signals = []
        for i in range(len(self.out_layers)):
            bv, beta, bu = self._factors(model, i)
            signals.append(((error @ bv) * (beta * self.scale)) @ bu.T)  # the low-rank structured projection
        return signals

    def block_signals(self, model, outputs, logits, y):
        return [broadcast(g, h) for g, h in zip(self.channel_signals(model, logits, y), outputs)]

    def step(self, model, x, y):
        outputs, logits = model.forward_blocks(x, cut=True)
        loss = F.cross_entropy(logits, y)
        channel = self.channel_signals(model, logits, y)
        signals = [broadcast(g, h) for g, h in zip(channel, outputs)]
        penalty, terms = factor_penalties(model.blocks, self.lambda_orth, self.lambda_sparse)
        align = cos = torch.zeros((), device=loss.device)
        with torch.set_grad_enabled(self.lambda_align != 0):
            for i, layer in enumerate(self.out_layers):
                align = align + alignment_loss(layer, self._factors(model, i)[2], self.align_on)
        with torch.set_grad_enabled(self.lambda_cos != 0):
            for h, g in zip(outputs, channel):
                cos = cos + 1 - broadcast_cosine(h, g).mean()
        penalty = penalty + self.lambda_align * align + self.lambda_cos * cos
        deliver(loss + penalty, outputs, signals)
        blocks = len(outputs)  # log per-block means; the loss uses the sums (one term per block)
        return {**step_stats(loss, logits, y), **terms, "align": align.detach() / blocks, "cos": cos.detach() / blocks}

    def on_epoch_end(self, model, epoch):
        if epoch not in self.rank_epochs:
            return {}
        resized = reduce_ranks(model.blocks, self.rank_eps)
        for i, layer in enumerate(self.out_layers):
            bv, beta, bu = self._factors(model, i)
            k = min(bv.shape[1], layer.rank)  # keep the k strongest feedback directions
            for name, tensor in (("BV", bv), ("beta", beta), ("BU", bu)):
                setattr(model.feedback, f"ssa_{i}_{name}", tensor[..., :k].contiguous())
        return resized


def broadcast(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The channel signal g (N x m) as a view shaped like h (N x m [x H x W]): no copy."""
    return g.view(*g.shape, *[1] * (h.dim() - 2)).expand_as(h)


def broadcast_cosine(h: torch.Tensor, g: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per sample, cos(h, g broadcast over h's H x W): h (N x m [x H x W]), g (N x m); shape N.

    The same value as F.cosine_similarity(h.flatten(1), g.expand_as(h).flatten(1)) without writing the
    broadcast signal out: <h, g> = sum_c g_c sum_hw h_chw and ||g broadcast|| = ||g|| sqrt(H W).
    """
    pooled = h.flatten(2).sum(2) if h.dim() > 2 else h
    positions = h[0, 0].numel()
    dot = (pooled * g).sum(1)
    norms = h.flatten(1).norm(dim=1).clamp_min(eps) * (g.norm(dim=1) * positions ** 0.5).clamp_min(eps)
    return dot / norms
