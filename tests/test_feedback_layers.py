"""Feedback layers (bench/layers/feedback.py) and fa: the input gradient goes through B, W gets its own."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.layers import (
    exact_backward,
    feedback_layers,
    feedback_tensors,
    register_feedback,
    swap_layers,
)
from bench.measure.network import param_counts, update_alignment
from bench.models.blocknet import BlockNet
from tests.conftest import make


def _feedback_of(layer):
    return layer.B


def _attach(generator):
    def attach(layer):
        register_feedback(layer, "B", torch.randn(layer.weight.shape, generator=generator))

    return attach


def test_linear_backward_sends_the_input_gradient_through_b_and_gives_w_its_true_gradient():
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(5, 3)
    weight = layer.weight
    swap_layers(layer, _feedback_of, _attach(g))
    assert layer.weight is weight  # the same parameter object: init and references kept
    x = torch.randn(4, 5, requires_grad=True)
    upstream = torch.randn(4, 3)
    layer(x).backward(upstream)
    assert torch.allclose(x.grad, upstream @ layer.B)  # B in place of W
    assert torch.allclose(layer.weight.grad, upstream.T @ x.detach())
    assert torch.allclose(layer.bias.grad, upstream.sum(0))
    assert not torch.allclose(x.grad, upstream @ layer.weight.detach())


@pytest.mark.parametrize(
    "stride, padding, groups, dilation, bias, channels_last",
    [
        (1, 1, 1, 1, True, False),
        (2, 0, 1, 1, True, False),
        (1, 1, 2, 1, True, False),
        (1, 2, 1, 2, False, False),
        (2, 1, 1, 1, False, True),
        (1, "same", 1, 1, True, False),
        (1, "valid", 2, 1, True, True),
    ],
)
def test_conv_backward_is_the_transposed_convolution_with_bs_kernel(
    stride, padding, groups, dilation, bias, channels_last
):
    g = torch.Generator().manual_seed(1)
    layer = nn.Conv2d(
        4, 6, 3, stride=stride, padding=padding, groups=groups, dilation=dilation, bias=bias
    )
    swap_layers(layer, _feedback_of, _attach(g))
    x = torch.randn(2, 4, 9, 9)
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = layer(x)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    # Reference: autograd of a plain conv that uses B's kernel gives the input gradient, W's the weight's.
    pad = {"same": dilation, "valid": 0}.get(padding, padding)
    xb = x.detach().clone().requires_grad_()
    F.conv2d(xb, layer.B, None, stride, pad, dilation, groups).backward(upstream)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_() if bias else None
    F.conv2d(x.detach(), w, b, stride, pad, dilation, groups).backward(upstream)
    assert torch.allclose(x.grad, xb.grad, atol=1e-5)
    assert torch.allclose(layer.weight.grad, w.grad, atol=1e-5)
    assert (layer.bias is None) == (not bias) and (
        not bias or torch.allclose(layer.bias.grad, b.grad, atol=1e-5)
    )


def test_a_layer_the_swap_cannot_give_a_feedback_backward_is_refused_never_left_as_bp():
    attach = _attach(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"padding_mode 'reflect' has no feedback backward"):
        swap_layers(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), _feedback_of, attach)
    with pytest.raises(ValueError, match=r"padding 'same' with an even kernel"):
        swap_layers(nn.Conv2d(2, 3, 2, padding="same"), _feedback_of, attach)
    net = nn.Sequential(nn.Linear(4, 4), nn.Conv1d(4, 4, 3), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"only nn.Linear and nn.Conv2d\): 1 \(Conv1d\)$"):
        swap_layers(
            net, _feedback_of, attach
        )  # the BatchNorm is fine: it learns from what reaches it


def test_no_input_gradient_is_computed_where_autograd_would_skip_it():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Masks(TorchDispatchMode):  # records the output mask of every convolution_backward call
        masks: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution_backward.default:
                self.masks.append(list(args[-1]))
            return func(*args, **(kwargs or {}))

    layer = nn.Conv2d(3, 4, 3, padding=1)
    swap_layers(layer, _feedback_of, _attach(torch.Generator().manual_seed(0)))
    for needs_input in (False, True):
        x = torch.randn(2, 3, 5, 5, requires_grad=needs_input)  # the stem's input needs none
        out = layer(x)
        with Masks() as masks:
            out.sum().backward()
        assert masks.masks[-1] == [needs_input, True, True]


def test_exact_backward_restores_the_true_gradient_of_the_same_weights():
    g = torch.Generator().manual_seed(2)
    layer = nn.Linear(5, 3)
    swap_layers(layer, _feedback_of, _attach(g))
    x = torch.randn(4, 5, requires_grad=True)
    with exact_backward():
        layer(x).sum().backward()
    assert torch.allclose(x.grad, torch.ones(4, 3) @ layer.weight.detach())


def test_fa_gradients_equal_a_hand_computed_feedback_alignment_pass():
    torch.manual_seed(0)
    net = BlockNet([nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU())], nn.Linear(5, 3), (6,))
    from bench.method import discover

    rule = discover()["fa"]()
    rule.prepare(net, 3, torch.Generator().manual_seed(0))
    hidden, head = net.blocks[0][1], net.head
    x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    rule.step(net, x, y)
    # By hand: delta_2 = (softmax - onehot) / N; delta_1 = (delta_2 B_head) * relu'(z_1).
    z1 = x @ hidden.weight.detach().T + hidden.bias.detach()
    h1 = z1.clamp_min(0)
    logits = h1 @ head.weight.detach().T + head.bias.detach()
    delta2 = (torch.softmax(logits, 1) - F.one_hot(y, 3).float()) / len(y)
    delta1 = (delta2 @ head.fa_B) * (z1 > 0).float()
    assert torch.allclose(head.weight.grad, delta2.T @ h1, atol=1e-6)
    assert torch.allclose(hidden.weight.grad, delta1.T @ x, atol=1e-6)
    assert torch.allclose(hidden.bias.grad, delta1.sum(0), atol=1e-6)
    assert not torch.allclose(
        hidden.weight.grad, ((delta2 @ head.weight.detach()) * (z1 > 0)).T @ x, atol=1e-4
    )


def test_fa_feedback_is_seeded_counted_as_feedback_and_scaled_like_w():
    a, _ = make("smallconv", "fa", seed=3)
    b, _ = make("smallconv", "fa", seed=3)
    c, _ = make("smallconv", "fa", seed=4)
    names = sorted(feedback_tensors(a))
    assert names == sorted(f"{n}.fa_B" for n, _ in feedback_layers(a)) and "head.fa_B" in names
    assert all(torch.equal(feedback_tensors(a)[n], feedback_tensors(b)[n]) for n in names)
    assert not torch.equal(feedback_tensors(a)["head.fa_B"], feedback_tensors(c)["head.fa_B"])
    counts = param_counts(a)
    assert counts["feedback_params"] == sum(layer.weight.numel() for _, layer in feedback_layers(a))
    for _, layer in feedback_layers(a):
        assert layer.fa_B.std() == pytest.approx(layer.weight.detach().std(), rel=0.25)


def test_update_alignment_is_exactly_one_for_bp_and_between_0_and_1_for_fa(batch):
    bp_model, bp = make("mlp3", "bp")
    assert set(update_alignment(bp_model, bp, *batch).values()) == {1.0}
    fa_model, fa = make("mlp3", "fa")
    before = {k: v.clone() for k, v in fa_model.state_dict().items()}
    alignment = update_alignment(fa_model, fa, *batch)
    assert alignment["head"] == 1.0  # the head's update is its true gradient
    hidden = [v for k, v in alignment.items() if k != "head"]
    assert all(0.01 < abs(v) < 0.999 for v in hidden)  # neither BP's direction nor orthogonal to it
    assert all(
        torch.equal(before[k], v) for k, v in fa_model.state_dict().items()
    )  # measuring changed nothing
    assert all(p.grad is None for p in fa_model.parameters())


def test_records_on_digits_fa_between_0_and_1_bp_exactly_1_and_no_signals_is_nan(tmp_path):
    import json

    from bench.config.files import load_config
    from bench.config.spec import make_spec
    from bench.record import read
    from bench.report.records import final_update_alignment
    from bench.run.train import run

    recipe = {"epochs": 1, "batch_size": 64, "probe_size": 64, "device": "cpu"}
    records = {}
    for method in ("bp", "fa"):
        run(
            make_spec("digits", "mlp3", method, 0, recipe, load_config(check_data=False).variants),
            tmp_path / method,
        )
        records[method] = json.loads((tmp_path / method / "record.json").read_text())
    assert set(records["bp"]["history"][0]["update_alignment"].values()) == {1.0}
    typed = {method: read(tmp_path / method / "record.json") for method in records}
    assert final_update_alignment(typed["bp"]) == 1.0
    assert 0 < final_update_alignment(typed["fa"]) < 1
    for (
        record
    ) in records.values():  # neither defines block signals: undefined, written as null, never 1.0
        assert record["history"][0]["alignment"] == [None, None, None]
