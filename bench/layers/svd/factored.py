"""SVD-parameterised Linear and Conv2d layers, W = U diag(s) V^T, and their rank reduction (their losses:
bench/layers/svd/losses.py).

[paper] every hidden Linear/Conv2d is stored and trained as U (m x r), s (r), V (n x r), initialised
by the SVD of a standard (Kaiming) initial weight. [suite] conv decompositions: `channel` (default,
kernel N x C x kh x kw as N x (C*kh*kw)) and `spatial` (the paper's form, (N*kw) x (C*kh)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DECOMPOSITIONS = ("channel", "spatial")
FORMS = ("auto", "factored", "composed")
# [suite] When the factored form runs (form "auto"): only where it is clearly faster than composing W
# and running the dense op. Measured (fwd + bwd, batch 128, 2-core AVX-512 CPU): a factored conv with fewer
# middle channels than one SIMD register holds (16 floats) was slower than the dense conv even at 28% of
# its FLOPs, and factored forms within ~0.6x of the composed FLOPs gained nothing. So the rank is
# rounded up to FACTOR_TILE and the factored FLOPs must stay under FACTORED_SHARE of the composed ones.
# On channels_last (NHWC) inputs oneDNN runs the thin two-conv form better (fwd + bwd, batch 128, 2
# threads): every smallconv, VGG-13 and ResNet-32 conv at ranks 0.25-0.75 with a tiled share up to 0.61
# ran faster factored (0.31-0.85x of the dense time), and so did the 3x3 convs at 0.70-0.77 (0.69-0.79x);
# only ResNet's 1x1 shortcut convs at 0.75 did not (0.99-1.2x of ~1 ms). Beyond 0.8 the dense conv
# mostly won. Hence FACTORED_SHARE_CHANNELS_LAST.
FACTOR_TILE = 16
FACTORED_SHARE = 0.6
FACTORED_SHARE_CHANNELS_LAST = 0.8
# A resize says, per parameter, which dimension was sliced and which indices were kept,
# so the trainer can slice the optimizer state the same way.
Resize = dict[nn.Parameter, tuple[int, torch.Tensor]]


class SVDLayer(nn.Module):
    """Shared factor storage: U (m x r), s (r), V (n x r), optional bias (m_out)."""

    form = "auto"  # "factored" / "composed" force a form (tests, benchmarks); both give the same numbers

    def _init_factors(self, matrix: torch.Tensor, rank: int, bias: torch.Tensor | None) -> None:
        u, s, vh = torch.linalg.svd(matrix.detach(), full_matrices=False)
        self.U = nn.Parameter(u[:, :rank].contiguous())
        self.s = nn.Parameter(s[:rank].contiguous())
        self.V = nn.Parameter(vh[:rank].T.contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def rank(self) -> int:
        return self.s.shape[0]

    def factored_is_cheaper(self) -> bool:
        """True when r(m+n) < mn: the two-factor form then costs fewer FLOPs than the dense one."""
        m, n = self.U.shape[0], self.V.shape[0]
        return self.rank * (m + n) < m * n

    def runs_factored(self, positions: int, channels_last: bool = False) -> bool:
        """Whether a forward over `positions` output rows (batch x output pixels) runs the factored form.

        Per forward, composed costs m*r*n (building W) + positions*m*n multiply-adds; factored costs
        positions*r*(m+n) (backward scales both alike). See FACTOR_TILE and FACTORED_SHARE; a conv on
        a channels_last input uses FACTORED_SHARE_CHANNELS_LAST.
        """
        if self.form != "auto":
            return self.form == "factored"
        m, n, r = self.U.shape[0], self.V.shape[0], self.rank
        tile = -(-r // FACTOR_TILE) * FACTOR_TILE
        share = FACTORED_SHARE_CHANNELS_LAST if channels_last else FACTORED_SHARE
        return positions * tile * (m + n) < share * (m * r * n + positions * m * n)

    def matrix(self) -> torch.Tensor:
        """The dense matrix U diag(s) V^T (m x n)."""
        return (self.U * self.s) @ self.V.T

    def channel_basis(self) -> torch.Tensor:
        """Output-channel directions of the factors (channels x r), used by L_align."""
        return self.U

    def inference_params(self) -> int:
        """Parameters of the cheapest deployed form: s folded into U, or the dense matrix."""
        m, n = self.U.shape[0], self.V.shape[0]
        bias = 0 if self.bias is None else self.bias.numel()
        return min(self.rank * (m + n), m * n) + bias

    def keep(self, index: torch.Tensor) -> Resize:
        """Keep only the factor columns `index` (in that order); returns what was sliced."""
        for p, dim in ((self.U, 1), (self.s, 0), (self.V, 1)):
            p.data = p.data.index_select(dim, index).contiguous()
            p.grad = None
        return {self.U: (1, index), self.s: (0, index), self.V: (1, index)}


class SVDLinear(SVDLayer):
    """y = x V diag(s) U^T + b."""

    def __init__(self, dense: nn.Linear, rank: int):
        super().__init__()
        self.in_features, self.out_features = dense.in_features, dense.out_features
        self._init_factors(dense.weight, rank, dense.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_factored(x.numel() // max(1, self.in_features)):
            # s folds into the m x r factor, not into the N x r activations: no extra pass, nothing saved
            return F.linear(F.linear(x, self.V.T), self.U * self.s, self.bias)
        return F.linear(x, self.matrix(), self.bias)


class SVDConv2d(SVDLayer):
    """A conv whose kernel is U diag(s) V^T, run as two convs (or one dense conv when cheaper).

    channel: kh x kw conv C->r with V, scale by s, 1x1 conv r->N with U (stride/padding in the first).
    spatial: kh x 1 conv C->r with V, scale by s, 1 x kw conv r->N with U; height stride/padding/
    dilation go to the first conv, width ones to the second. Both equal the dense conv exactly.
    """

    def __init__(self, dense: nn.Conv2d, rank: int, decomposition: str = "channel"):
        super().__init__()
        if decomposition not in DECOMPOSITIONS:
            raise ValueError(
                f"unknown decomposition {decomposition!r}; known: {', '.join(DECOMPOSITIONS)}"
            )
        if dense.groups != 1 or dense.padding_mode != "zeros" or isinstance(dense.padding, str):
            raise ValueError("SVDConv2d needs groups=1, zero padding given as numbers")
        self.decomposition = decomposition
        self.out_channels, self.in_channels, self.kh, self.kw = dense.weight.shape
        self.stride, self.padding, self.dilation = dense.stride, dense.padding, dense.dilation
        self._init_factors(self._to_matrix(dense.weight), rank, dense.bias)

    def _to_matrix(self, kernel: torch.Tensor) -> torch.Tensor:
        n, c, kh, kw = kernel.shape
        if self.decomposition == "channel":
            return kernel.reshape(n, c * kh * kw)
        return kernel.permute(0, 3, 1, 2).reshape(n * kw, c * kh)  # rows (n, j), cols (c, i)

    def kernel(self) -> torch.Tensor:
        """The dense N x C x kh x kw kernel the factors represent."""
        n, c, kh, kw = self.out_channels, self.in_channels, self.kh, self.kw
        m = self.matrix()
        if self.decomposition == "channel":
            return m.reshape(n, c, kh, kw)
        return m.reshape(n, kw, c, kh).permute(0, 2, 3, 1)

    def channel_basis(self) -> torch.Tensor:
        if self.decomposition == "channel":
            return self.U
        # [suite] spatial rows are (channel, tap): sum over the kw taps to get channel directions.
        return self.U.reshape(self.out_channels, self.kw, self.rank).sum(dim=1)

    def output_positions(self, x: torch.Tensor) -> int:
        """Batch x output pixels of this conv on input `x` (N x C x H x W)."""
        sides = [
            (size + 2 * p - d * (k - 1) - 1) // st + 1
            for size, p, d, k, st in zip(
                x.shape[-2:], self.padding, self.dilation, (self.kh, self.kw), self.stride
            )
        ]
        return (x.shape[0] if x.dim() == 4 else 1) * max(1, sides[0]) * max(1, sides[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.runs_factored(self.output_positions(x), is_channels_last(x)):
            return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation)
        r, n, c = self.rank, self.out_channels, self.in_channels
        scaled = (
            self.U * self.s
        )  # s folds into the small factor, not into the N x r x H x W activations
        if self.decomposition == "channel":
            mid = F.conv2d(
                x,
                self.V.T.reshape(r, c, self.kh, self.kw),
                None,
                self.stride,
                self.padding,
                self.dilation,
            )
            return F.conv2d(mid, scaled.view(n, r, 1, 1), self.bias)
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        mid = F.conv2d(x, self.V.T.reshape(r, c, self.kh, 1), None, (sh, 1), (ph, 0), (dh, 1))
        second = scaled.reshape(n, self.kw, r).permute(0, 2, 1).unsqueeze(2)  # n x r x 1 x kw
        return F.conv2d(mid, second, self.bias, (1, sw), (0, pw), (1, dw))


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether `x` (N x C x H x W) is laid out channels_last (and not also plainly contiguous)."""
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def rank_for(ratio: float, m: int, n: int) -> int:
    """Initial rank: rank_ratio * min(m, n), at least 1."""
    return max(1, min(m, n, round(ratio * min(m, n))))


def convert_to_svd(
    module: nn.Module, rank_ratio: float, decomposition: str = "channel"
) -> tuple[list[str], list[str]]:
    """Replace every Linear and groups=1 Conv2d under `module` by its SVD form, in place.

    Returns (converted, left_dense) qualified names; depthwise/grouped convs stay dense.
    """
    converted, left_dense = [], []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            qualified = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear):
                rank = rank_for(rank_ratio, sub.out_features, sub.in_features)
                setattr(child, attr, SVDLinear(sub, rank))
                converted.append(qualified)
            elif isinstance(sub, nn.Conv2d):
                if sub.groups != 1:
                    left_dense.append(qualified)
                    continue
                n, c, kh, kw = sub.weight.shape
                m, k = (n, c * kh * kw) if decomposition == "channel" else (n * kw, c * kh)
                setattr(child, attr, SVDConv2d(sub, rank_for(rank_ratio, m, k), decomposition))
                converted.append(qualified)
    return converted, left_dense


def svd_layers(module: nn.Module) -> list[tuple[str, SVDLayer]]:
    """(name, layer) of every SVD layer under `module`, in module order."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, SVDLayer)]


def energy_rank(s: torch.Tensor, eps: float) -> int:
    """Smallest k whose k largest s^2 hold at least (1 - eps) of sum(s^2); all of s where s holds a NaN
    or an infinity (a diverged layer has no energy share: reducing it to rank 1 would read NaN as 0)."""
    if not torch.isfinite(s).all():
        return s.numel()
    energy = s.detach().pow(2).sort(descending=True).values
    cumulative = energy.cumsum(0)
    return int((cumulative < (1 - eps) * cumulative[-1]).sum().item()) + 1


def reduce_rank(layer: SVDLayer, eps: float) -> Resize:
    """Energy-threshold rank reduction: keep the top-|s| columns holding (1 - eps) of the energy."""
    k = energy_rank(layer.s, eps)
    if k >= layer.rank:
        return {}
    return layer.keep(torch.topk(layer.s.detach().abs(), k).indices)


def reduce_ranks(module: nn.Module, eps: float) -> Resize:
    """Energy-threshold rank reduction of every SVD layer of `module`; the union of their resizes."""
    resized: Resize = {}
    for _, layer in svd_layers(module):
        resized.update(reduce_rank(layer, eps))
    return resized
