"""Kolen-Pollack (methods/kp.py): hand-computed gradients, B.grad = W.grad, learned feedback, W - B shrinking."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.layers import feedback_layers, feedback_tensors
from bench.measure.network import network_parameters, param_counts
from bench.method import discover
from bench.models import BlockNet

INIT_SEED, FEEDBACK_SEED = (
    0,
    101,
)  # distinct: a feedback stream equal to W's would make B a copy of W
K = 5


def tiny_net(width: int = 8) -> BlockNet:
    """6 -> width -> width -> K: two Linear-ReLU blocks and a Linear head."""
    blocks = [
        nn.Sequential(nn.Flatten(), nn.Linear(6, width), nn.ReLU()),
        nn.Sequential(nn.Linear(width, width), nn.ReLU()),
    ]
    return BlockNet(blocks, nn.Linear(width, K), (6,))


def prepared(width: int = 8):
    """(model, rule, [W_l at init]) with independent init and feedback seeds."""
    torch.manual_seed(INIT_SEED)
    model = tiny_net(width)
    weights = [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.Linear)]
    rule = discover()["kp"]()
    return rule.prepare(model, K, torch.Generator().manual_seed(FEEDBACK_SEED)), rule, weights


def batch(n: int = 16):
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(8)), torch.arange(n) % K


def test_kp_b_is_drawn_from_the_feedback_generator_independent_of_w():
    model, _, weights = prepared()
    g = torch.Generator().manual_seed(FEEDBACK_SEED)
    for (_, layer), w in zip(feedback_layers(model), weights):
        expected = (torch.rand(w.shape, generator=g) * 2 - 1) * math.sqrt(3) * w.std()
        assert torch.allclose(layer.kp_B, expected)
        cosine = F.cosine_similarity(layer.kp_B.flatten(), w.flatten(), dim=0)
        assert abs(cosine) < 0.5  # random, not W


def test_kp_grads_equal_hand_computed_and_b_grad_is_w_grad():
    model, rule, _ = prepared()
    x, y = batch()
    rule.step(model, x, y)
    (_, l1), (_, l2), (_, l3) = feedback_layers(model)
    # Forward by hand, then the error down through each B instead of W.
    z1 = x @ l1.weight.T + l1.bias
    h1 = torch.relu(z1)
    z2 = h1 @ l2.weight.T + l2.bias
    h2 = torch.relu(z2)
    logits = h2 @ l3.weight.T + l3.bias
    d3 = (torch.softmax(logits, 1) - F.one_hot(y, K).float()) / len(y)
    d2 = (d3 @ l3.kp_B) * (z2 > 0)
    d1 = (d2 @ l2.kp_B) * (z1 > 0)
    for layer, delta, inp in [(l3, d3, h2), (l2, d2, h1), (l1, d1, x)]:
        dw = delta.T @ inp
        assert dw.norm() > 1e-3  # a live signal: not a comparison of zeros
        assert torch.allclose(layer.weight.grad, dw.detach(), rtol=1e-4, atol=1e-7)
        assert torch.allclose(layer.bias.grad, delta.sum(0).detach(), rtol=1e-4, atol=1e-7)
        assert torch.equal(layer.kp_B.grad, layer.weight.grad)
        assert (
            layer.kp_B.grad.data_ptr() != layer.weight.grad.data_ptr()
        )  # a copy: clipping one spares the other
    # Through W (BP) the first layer's gradient would differ: the backward really runs through B.
    d1_bp = (((d3 @ l3.weight) * (z2 > 0)) @ l2.weight) * (z1 > 0)
    assert not torch.allclose(l1.weight.grad, (d1_bp.T @ x).detach(), rtol=1e-2, atol=1e-4)


def test_kp_b_is_learned_feedback_not_a_trainable_parameter():
    model, _, _ = prepared()
    torch.manual_seed(INIT_SEED)
    plain = tiny_net()
    names = {f"{name}.kp_B" for name, _ in feedback_layers(model)}
    params = dict(model.named_parameters())
    assert all(
        isinstance(params[n], nn.Parameter) for n in names
    )  # in parameters(): the optimizer updates it
    assert names <= set(feedback_tensors(model)) and names <= set(model.state_dict())
    assert not names & {n for n, _ in network_parameters(model)}
    counts, plain_counts = param_counts(model), param_counts(plain)
    assert counts["trainable_params"] == plain_counts["trainable_params"]
    assert counts["inference_params"] == plain_counts["inference_params"]
    assert counts["feedback_params"] == sum(
        layer.weight.numel() for _, layer in feedback_layers(model)
    )


def _train(optimizer: str, steps: int, lr: float, weight_decay: float, momentum: float = 0.0):
    """[(||W - B||, ||W||) per layer] before and after `steps` optimizer steps on a teacher task."""
    model, rule, _ = prepared(width=16)
    params = model.parameters()  # as the trainer: every parameter, learned feedback included
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    layers = [layer for _, layer in feedback_layers(model)]

    def gaps():
        with torch.no_grad():
            return [((l.weight - l.kp_B).norm().item(), l.weight.norm().item()) for l in layers]

    before = gaps()
    g = torch.Generator().manual_seed(9)
    teacher = torch.randn(
        6, K, generator=g
    )  # a learnable task: W keeps its size while W - B decays
    for _ in range(steps):
        x = torch.randn(32, 6, generator=g)
        y = (x @ teacher).argmax(1)
        opt.zero_grad(set_to_none=False)
        stats = rule.step(model, x, y)
        opt.step()
    assert math.isfinite(stats["loss"].item())
    return before, gaps()


@pytest.mark.parametrize("optimizer, lr, weight_decay", [("sgd", 0.1, 0.1), ("adamw", 1e-3, 10.0)])
def test_kp_gap_decays_exactly_by_the_weight_decay_factor(optimizer, lr, weight_decay):
    """Equal gradients and equal decay: W_t - B_t = (1 - lr wd)^t (W_0 - B_0) (SGD's and AdamW's decay alike)."""
    steps = 100
    before, after = _train(optimizer, steps, lr, weight_decay)
    factor = (1 - lr * weight_decay) ** steps
    assert factor < 0.6
    for (gap0, _), (gap1, _) in zip(before, after):
        assert gap1 == pytest.approx(gap0 * factor, rel=1e-3)


def test_kp_gap_shrinks_with_momentum_sgd_and_weight_decay():
    """The trainer's SGD (momentum 0.9): ||W - B|| / ||W|| falls while W learns the task."""
    before, after = _train("sgd", 100, lr=0.05, weight_decay=0.02, momentum=0.9)
    for (gap0, w0), (gap1, w1) in zip(before, after):
        assert gap1 / w1 < 0.5 * gap0 / w0


def test_kp_gap_stays_without_weight_decay():
    """The control: without decay W and B take identical steps, so W - B is what it was at init."""
    before, after = _train("sgd", 50, lr=0.05, weight_decay=0.0, momentum=0.9)
    for (gap0, _), (gap1, _) in zip(before, after):
        assert gap1 == pytest.approx(gap0, rel=1e-4)
