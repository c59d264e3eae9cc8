"""SVD layers equal their dense layers; the losses and rank reduction do what method.md says."""

import pytest
import torch
from torch import nn

from bench.layers import (
    SVDConv2d,
    SVDLinear,
    alignment_loss,
    convert_to_svd,
    energy_rank,
    orthogonality_loss,
    reduce_rank,
)


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("rank", [16, 5])  # full rank runs dense, rank 5 runs the two factors
def test_svd_linear_equals_dense_matrix(rank):
    torch.manual_seed(0)
    dense = nn.Linear(24, 16)
    layer = SVDLinear(dense, rank)
    x = torch.randn(8, 24)
    expected = x @ layer.matrix().T + dense.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    if rank == 16:
        assert torch.allclose(layer(x), dense(x), atol=1e-5)
    assert _count(layer) == rank * (16 + 24 + 1) + 16


@pytest.mark.parametrize("decomposition", ["channel", "spatial"])
@pytest.mark.parametrize(
    "stride,padding,kernel", [(1, 1, 3), (2, 1, 3), (2, (2, 1), (5, 3)), (1, 0, (3, 1))]
)
@pytest.mark.parametrize("ratio", [1.0, 0.3])
def test_svd_conv_equals_dense_conv_of_its_kernel(decomposition, stride, padding, kernel, ratio):
    torch.manual_seed(0)
    dense = nn.Conv2d(6, 10, kernel, stride=stride, padding=padding)
    converted = nn.Sequential(dense)
    convert_to_svd(converted, ratio, decomposition)
    layer = converted[0]
    assert isinstance(layer, SVDConv2d) and layer.decomposition == decomposition
    x = torch.randn(3, 6, 11, 9)
    expected = nn.functional.conv2d(x, layer.kernel(), layer.bias, stride, padding)
    assert layer(x).shape == dense(x).shape
    assert torch.allclose(layer(x), expected, atol=1e-4)
    if ratio == 1.0:  # full rank: the factors reproduce the original weight exactly
        assert torch.allclose(layer(x), dense(x), atol=1e-4)
    m, n = layer.U.shape[0], layer.V.shape[0]
    assert _count(layer) == layer.rank * (m + n + 1) + 10


def test_factored_forward_matches_dense_forward_gradients():
    torch.manual_seed(0)
    layer = SVDConv2d(nn.Conv2d(8, 8, 3, padding=1), rank=2)
    assert layer.factored_is_cheaper()
    x = torch.randn(2, 8, 6, 6)
    layer(x).pow(2).sum().backward()
    factored = [p.grad.clone() for p in (layer.U, layer.s, layer.V)]
    layer.zero_grad()
    nn.functional.conv2d(x, layer.kernel(), layer.bias, 1, 1).pow(2).sum().backward()
    for a, p in zip(factored, (layer.U, layer.s, layer.V)):
        assert torch.allclose(a, p.grad, atol=1e-4)


def test_convert_leaves_depthwise_convs_dense():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 1), nn.Linear(8, 3))
    converted, dense = convert_to_svd(model, 1.0)
    assert converted == ["1", "2"] and dense == ["0"]
    assert isinstance(model[0], nn.Conv2d)


def test_orthogonality_loss_zero_for_orthonormal_factors_and_grows():
    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(12, 8), 8)
    assert orthogonality_loss(layer).item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        layer.U.mul_(1.5)
    first = orthogonality_loss(layer).item()
    with torch.no_grad():
        layer.U.mul_(1.5)
    assert 0 < first < orthogonality_loss(layer).item()


def _layer_with_basis(columns: torch.Tensor, s: torch.Tensor) -> SVDLinear:
    layer = SVDLinear(nn.Linear(columns.shape[1], columns.shape[0]), columns.shape[1])
    with torch.no_grad():
        layer.U.copy_(columns)
        layer.s.copy_(s)
    return layer


def test_alignment_loss_zero_inside_span_and_one_when_orthogonal():
    eye = torch.eye(6)
    feedback = eye[:, :2]  # feedback directions e0, e1
    inside = _layer_with_basis(eye[:, [1, 0, 4, 5]] * 2.0, torch.tensor([3.0, 2.0, 1.0, 0.5]))
    assert alignment_loss(inside, feedback, "top").item() == pytest.approx(0.0, abs=1e-6)
    outside = _layer_with_basis(eye[:, [2, 3, 4, 5]], torch.tensor([3.0, 2.0, 1.0, 0.5]))
    assert alignment_loss(outside, feedback, "top").item() == pytest.approx(1.0, abs=1e-6)
    # "top" looks only at the k=2 strongest columns: here e0, e1 are the weak ones.
    weak = _layer_with_basis(eye[:, [2, 3, 0, 1]], torch.tensor([3.0, 2.0, 1.0, 0.5]))
    assert alignment_loss(weak, feedback, "top").item() == pytest.approx(1.0, abs=1e-6)
    assert alignment_loss(weak, feedback, "all").item() == pytest.approx(0.0, abs=1e-6)


def test_alignment_loss_is_differentiable():
    layer = SVDLinear(nn.Linear(10, 6), 4)
    loss = alignment_loss(layer, torch.linalg.qr(torch.randn(6, 2)).Q, "top")
    loss.backward()
    assert layer.U.grad is not None and layer.U.grad.abs().sum() > 0


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.3])
def test_energy_rank_keeps_the_energy_share(eps):
    s = torch.tensor([5.0, 0.1, 3.0, 1.0, 0.5, 2.0])
    k = energy_rank(s, eps)
    energy = s.pow(2).sort(descending=True).values
    assert energy[:k].sum() >= (1 - eps) * energy.sum()
    assert energy[: k - 1].sum() < (1 - eps) * energy.sum()


def test_reduce_rank_keeps_strongest_columns_in_order():
    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(8, 8), 8)
    with torch.no_grad():
        layer.s.copy_(torch.tensor([0.01, 4.0, 0.01, 3.0, 0.01, 0.01, 0.01, 0.01]))
    U = layer.U.detach().clone()
    resized = reduce_rank(layer, 0.01)
    assert layer.rank == 2 and layer.U.shape == (8, 2) and layer.V.shape == (8, 2)
    assert torch.equal(layer.s.detach(), torch.tensor([4.0, 3.0]))
    assert torch.equal(layer.U.detach(), U[:, [1, 3]])
    assert {p.shape[-1] if p.dim() > 1 else p.shape[0] for p in resized} == {2}
    assert reduce_rank(layer, 0.01) == {}  # nothing left to drop
