"""Sign-concordant feedback (usf, brsf, frsf; bench/layers/sign.py): hand-computed gradients, magnitudes, scale."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.layers import feedback_layers, feedback_tensors
from bench.measure.network import network_parameters, param_counts
from bench.method import discover
from bench.models import BlockNet, build

SIGN_RULES = ("usf", "brsf", "frsf")
INIT_SEED, FEEDBACK_SEED, METHOD_SEED = (
    0,
    101,
    202,
)  # distinct: a feedback stream equal to W's would copy W
K = 5  # classes of the hand-built nets


def linear_net() -> BlockNet:
    """6 -> 8 -> 8 -> 5: two Linear-ReLU blocks and a Linear head."""
    blocks = [
        nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU()),
        nn.Sequential(nn.Linear(8, 8), nn.ReLU()),
    ]
    return BlockNet(blocks, nn.Linear(8, K), (6,))


def conv_net() -> BlockNet:
    """1x4x4 -> conv3x3 3 -> conv3x3 2 -> flatten -> Linear K (each conv followed by ReLU)."""
    blocks = [
        nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten()),
    ]
    return BlockNet(blocks, nn.Linear(2 * 4 * 4, K), (1, 4, 4))


def prepared(build_net, method: str):
    """(model, rule, [std of each layer's W at init]) with independent init, feedback and method seeds."""
    torch.manual_seed(INIT_SEED)
    model = build_net()
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    stds = [layer.weight.detach().std() for layer in layers]
    rule = discover()[method]()
    model = rule.prepare(model, K, torch.Generator().manual_seed(FEEDBACK_SEED))
    rule.generator = torch.Generator().manual_seed(METHOD_SEED)
    return model, rule, stds


def expected_magnitudes(method: str, layers, stds) -> list[torch.Tensor]:
    """M_l by hand: sigma_l (usf), or U(0, sqrt(3) sigma_l) drawn layer by layer from the seed the rule uses."""
    if method == "usf":
        return list(stds)
    g = torch.Generator().manual_seed(FEEDBACK_SEED if method == "frsf" else METHOD_SEED)
    return [
        torch.rand(layer.weight.shape, generator=g) * math.sqrt(3) * std
        for layer, std in zip(layers, stds)
    ]


def hand_grads(layers, x, y, feedback) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(dW, db) per layer of a chain layer-ReLU-...-layer (a Linear flattens its input), the error passed
    down through feedback[l] in place of W_l: delta_{l-1} = (B_l^T delta_l) * relu'(z_{l-1})."""
    inputs, pre = [], []
    h = x
    for i, layer in enumerate(layers):
        h = h.flatten(1) if isinstance(layer, nn.Linear) else h
        inputs.append(h)
        z = (
            F.linear(h, layer.weight, layer.bias)
            if isinstance(layer, nn.Linear)
            else F.conv2d(h, layer.weight, layer.bias, padding=layer.padding)
        )
        pre.append(z)
        h = z if i == len(layers) - 1 else torch.relu(z)
    delta = (torch.softmax(h, 1) - F.one_hot(y, h.shape[1]).float()) / len(
        y
    )  # dL/dlogits of the mean CE
    grads = [None] * len(layers)
    for i in reversed(range(len(layers))):
        layer, inp, B = layers[i], inputs[i], feedback[i]
        if isinstance(layer, nn.Linear):
            grads[i] = (delta.T @ inp, delta.sum(0))
            down = delta @ B
        else:
            grads[i] = (
                torch.nn.grad.conv2d_weight(inp, layer.weight.shape, delta, padding=layer.padding),
                delta.sum((0, 2, 3)),
            )
            down = torch.nn.grad.conv2d_input(inp.shape, B, delta, padding=layer.padding)
        if i:
            delta = down.reshape(pre[i - 1].shape) * (pre[i - 1] > 0)
    return grads


@pytest.mark.parametrize("method", SIGN_RULES)
@pytest.mark.parametrize("build_net, in_shape", [(linear_net, (6,)), (conv_net, (1, 4, 4))])
def test_sign_rule_grads_equal_hand_computed(method, build_net, in_shape):
    model, rule, stds = prepared(build_net, method)
    layers = [layer for _, layer in feedback_layers(model)]
    with (
        torch.no_grad()
    ):  # new weights: the sign must come from the current W, not the one at prepare
        g = torch.Generator().manual_seed(7)
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.5)
    x = torch.randn(16, *in_shape, generator=torch.Generator().manual_seed(8))
    y = torch.arange(16) % K
    rule.step(model, x, y)

    feedback = [
        torch.sign(layer.weight.detach()) * m
        for layer, m in zip(layers, expected_magnitudes(method, layers, stds))
    ]
    expected = hand_grads(layers, x, y, feedback)
    for layer, (dw, db) in zip(layers, expected):
        assert dw.norm() > 1e-3  # a live signal reaches every layer: the comparison is not 0 == 0
        assert torch.allclose(layer.weight.grad, dw, rtol=1e-4, atol=1e-7)
        assert torch.allclose(layer.bias.grad, db, rtol=1e-4, atol=1e-7)
    # The feedback path matters: with W itself (BP) the first layer's gradient is a different one.
    bp = hand_grads(layers, x, y, [layer.weight.detach() for layer in layers])
    assert not torch.allclose(layers[0].weight.grad, bp[0][0], rtol=1e-2, atol=1e-4)


def test_usf_sigma_is_the_std_of_w_at_init():
    model, _, stds = prepared(linear_net, "usf")
    assert [layer.sign_scale.item() for _, layer in feedback_layers(model)] == pytest.approx(
        [s.item() for s in stds]
    )


@pytest.mark.parametrize("method", ["brsf", "frsf"])
def test_random_magnitudes_are_uniform_up_to_sqrt3_sigma(method):
    torch.manual_seed(INIT_SEED)
    model = BlockNet([nn.Sequential(nn.Linear(256, 256), nn.ReLU())], nn.Linear(256, 10), (256,))
    rule = discover()[method]()
    model = rule.prepare(model, 10, torch.Generator().manual_seed(FEEDBACK_SEED))
    rule.step(model, torch.randn(4, 256), torch.arange(4))
    layer = model.blocks[0][0]
    m, sigma = layer.sign_magnitude, layer.sign_scale
    assert m.min() >= 0 and m.max() <= math.sqrt(3) * sigma
    assert (m.mean() / (math.sqrt(3) * sigma)).item() == pytest.approx(0.5, abs=0.01)
    assert (m.pow(2).mean().sqrt() / sigma).item() == pytest.approx(
        1.0, abs=0.02
    )  # E[M^2] = sigma^2, as usf


def _brsf_run(seed: int, steps: int = 2):
    model, rule, _ = prepared(linear_net, "brsf")
    rule.generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(3)), torch.arange(16) % K
    draws, grads = [], []
    for _ in range(steps):
        model.zero_grad()
        rule.step(model, x, y)
        draws.append([layer.sign_magnitude.clone() for _, layer in feedback_layers(model)])
        grads.append([p.grad.clone() for p in model.parameters()])
    return draws, grads


def test_brsf_redraws_per_batch_reproducibly_from_its_generator():
    draws, grads = _brsf_run(METHOD_SEED)
    assert all(not torch.equal(a, b) for a, b in zip(*draws))  # a new magnitude every batch
    assert not torch.equal(
        grads[0][0], grads[1][0]
    )  # same batch, same weights: only the draw changed
    again, grads_again = _brsf_run(METHOD_SEED)
    assert all(
        torch.equal(a, b)
        for step, step_again in zip(draws, again)
        for a, b in zip(step, step_again)
    )
    assert all(
        torch.equal(a, b)
        for step, step_again in zip(grads, grads_again)
        for a, b in zip(step, step_again)
    )
    other, _ = _brsf_run(METHOD_SEED + 1)
    assert not torch.equal(draws[0][0], other[0][0])


def test_frsf_magnitudes_fixed_saved_and_counted_as_feedback():
    model, rule, stds = prepared(linear_net, "frsf")
    layers = [(name, layer) for name, layer in feedback_layers(model)]
    before = [layer.sign_magnitude.clone() for _, layer in layers]
    drawn = expected_magnitudes("frsf", [layer for _, layer in layers], stds)
    assert all(torch.allclose(a, b) for a, b in zip(before, drawn))  # from the prepare generator
    x, y = torch.randn(16, 6), torch.arange(16) % K
    for _ in range(3):
        rule.step(model, x, y)
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    assert all(torch.equal(a, layer.sign_magnitude) for a, (_, layer) in zip(before, layers))

    names = {f"{name}.sign_magnitude" for name, _ in layers}
    assert names <= set(model.state_dict()) and names <= set(feedback_tensors(model))
    assert not names & {n for n, _ in network_parameters(model)}
    assert not names & {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("method", SIGN_RULES)
def test_sign_rule_param_counts(method):
    model, _, _ = prepared(linear_net, method)
    torch.manual_seed(INIT_SEED)
    plain = linear_net()
    counts, plain_counts = param_counts(model), param_counts(plain)
    weights = sum(layer.weight.numel() for _, layer in feedback_layers(model))
    assert counts["trainable_params"] == plain_counts["trainable_params"]
    assert counts["inference_params"] == plain_counts["inference_params"]
    # One sigma per layer; the random forms also hold a W-shaped magnitude.
    assert counts["feedback_params"] == 3 + (0 if method == "usf" else weights)


DEEP = ("resnet32", "vgg13", "mobilenetv1")


def _step_on_cifar_shape(arch: str, method: str, literal_sign: bool = False):
    torch.manual_seed(INIT_SEED)
    model = build(arch, (3, 32, 32), 10)
    rule = discover()[method]()
    model = rule.prepare(model, 10, torch.Generator().manual_seed(FEEDBACK_SEED))
    rule.generator = torch.Generator().manual_seed(METHOD_SEED)
    if literal_sign:  # usf with sigma = 1: B = sign(W), the unscaled backward
        for _, layer in feedback_layers(model):
            layer.sign_scale.fill_(1.0)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    stats = rule.step(model, x, torch.arange(4))
    return stats["loss"], [p.grad for p in model.parameters()]


@functools.lru_cache(maxsize=None)
def _bp_grad_norm(arch: str) -> float:
    _, grads = _step_on_cifar_shape(arch, "bp")
    return torch.cat([g.flatten() for g in grads]).norm().item()


@pytest.mark.parametrize("arch", DEEP)
@pytest.mark.parametrize("method", SIGN_RULES)
def test_sign_rule_finite_at_init_on_deep_archs(arch, method):
    loss, grads = _step_on_cifar_shape(arch, method)
    assert torch.isfinite(loss)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # sigma-scaled feedback has the forward's scale: the whole gradient within 10x of BP's.
    norm = torch.cat([g.flatten() for g in grads]).norm().item()
    assert 0.1 < norm / _bp_grad_norm(arch) < 10


def test_literal_sign_backward_overflows_on_resnet32():
    """The reason for sigma: B = sign(W) (+-1) multiplies the error by ~sqrt(3 fan_in) per layer."""
    loss, grads = _step_on_cifar_shape("resnet32", "usf", literal_sign=True)
    assert torch.isfinite(loss)
    assert not all(torch.isfinite(g).all() for g in grads)
