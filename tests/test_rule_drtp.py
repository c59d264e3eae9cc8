"""drtp computes what method.md defines: -onehot(y) B_i / N at each block, the true gradient at the head."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.measure import network as measure
from tests.conftest import make

ARCHS = ["mlp3", "smallconv"]


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _target_signal(model, y, size, scale=1.0):
    """-onehot(y) B_i / N for a block of `size` outputs, from the stored buffer (N x size)."""
    feedback = model.feedback.drtp[:, :size] * scale / math.sqrt(size)
    return -F.one_hot(y, feedback.shape[0]).float() @ feedback / len(y)


def _local_gradients(model, x, y, at_preactivation=False, scale=1.0):
    """Per block parameter: grad of <-onehot(y) B_i / N, t_i> with t_i the block's output (or the input
    of its last ReLU), computed inside the block from its detached input."""
    expected = {}
    h = x
    for i, block in enumerate(model.blocks):
        modules = list(block)
        last_relu = max(j for j, m in enumerate(modules) if isinstance(m, nn.ReLU))
        inside = nn.Sequential(*modules[:last_relu]) if at_preactivation else block
        point = inside(h.detach())
        g = _target_signal(model, y, point[0].numel(), scale).view_as(point)
        grads = torch.autograd.grad((g * point).sum(), list(inside.parameters()))
        expected.update(
            {
                f"blocks.{i}.{name}": grad
                for (name, _), grad in zip(inside.named_parameters(), grads)
            }
        )
        h = block(h.detach())
    return expected


@pytest.mark.parametrize("arch", ARCHS)
def test_drtp_hidden_gradients_are_local_target_projections(arch, batch):
    x, y = batch
    model, rule = make(arch, "drtp")
    rule.step(model, x, y)
    got = _grads(model)
    bp_model, bp = make(arch, "bp")
    bp.step(bp_model, x, y)
    bp_grads = _grads(bp_model)
    expected = _local_gradients(model, x, y)
    assert set(expected) == {n for n in got if n.startswith("blocks.")}
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-7), name
        assert not torch.allclose(got[name], bp_grads[name], atol=1e-4), (
            f"{name}: drtp is silently doing BP"
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_drtp_head_gets_the_bp_gradient(arch, batch):
    model, rule = make(arch, "drtp")
    stats = rule.step(model, *batch)
    bp_model, bp = make(arch, "bp")
    bp.step(bp_model, *batch)
    for name in ("head.weight", "head.bias"):
        assert torch.allclose(
            model.get_parameter(name).grad, bp_model.get_parameter(name).grad, atol=1e-7
        ), name
    assert stats["loss"].item() == pytest.approx(
        F.cross_entropy(bp_model(batch[0]), batch[1]).item(), rel=1e-6
    )
    assert stats["correct"].item() == (bp_model(batch[0]).argmax(1) == batch[1]).sum().item()


@pytest.mark.parametrize("arch", ARCHS)
def test_drtp_signal_does_not_depend_on_the_logits(arch, batch):
    x, y = batch
    model, rule = make(arch, "drtp")
    rule.step(model, x, y)
    before = _grads(model)
    with torch.no_grad():  # a different head: different logits, different error
        model.head.weight.mul_(-3.0).add_(0.5)
    model.zero_grad(set_to_none=True)
    rule.step(model, x, y)
    after = _grads(model)
    for name in before:
        if name.startswith("blocks."):
            assert torch.equal(before[name], after[name]), name
    assert not torch.allclose(before["head.weight"], after["head.weight"])
    outputs, logits = model.forward_blocks(x, cut=True)
    a = rule.block_signals(model, outputs, logits.detach(), y)
    b = rule.block_signals(model, outputs, torch.randn_like(logits), y)
    assert all(torch.equal(s, t) for s, t in zip(a, b))


@pytest.mark.parametrize("arch", ARCHS)
def test_drtp_block_signals_are_the_scaled_target_rows(arch, batch):
    x, y = batch
    model, rule = make(arch, "drtp", scale=2.5)
    outputs, logits = model.forward_blocks(x, cut=True)
    signals = rule.block_signals(model, outputs, logits.detach(), y)
    for h, s in zip(outputs, signals):
        assert s.shape == h.shape
        expected = _target_signal(model, y, h[0].numel(), scale=2.5).view_as(h)
        assert torch.allclose(s, expected, atol=1e-8)
    # Two samples of one class get the same signal; the sign is the target's: <s, B row of y> < 0.
    same = (y == y[0]).nonzero().flatten()
    assert len(same) >= 2 and torch.equal(signals[0][same[0]], signals[0][same[1]])
    row = model.feedback.drtp[y[0], : outputs[0][0].numel()]
    assert (signals[0][0].flatten() @ row).item() < 0


@pytest.mark.parametrize("arch", ARCHS)
def test_drtp_preactivation_signal_skips_the_relu(arch, batch):
    x, y = batch
    model, rule = make(arch, "drtp", signal_at="preactivation")
    rule.step(model, x, y)
    got = _grads(model)
    for name, grad in _local_gradients(model, x, y, at_preactivation=True).items():
        assert torch.allclose(got[name], grad, atol=1e-7), name
    output_model, output_rule = make(arch, "drtp")
    output_rule.step(output_model, x, y)
    first = next(n for n in got if n.startswith("blocks.0.") and n.endswith("weight"))
    assert not torch.allclose(got[first], _grads(output_model)[first])  # the ReLU's gate is gone


def test_drtp_scale_and_init_options_act_on_the_feedback(batch):
    x, y = batch
    base, rule = make("mlp3", "drtp")
    rule.step(base, x, y)
    doubled, rule = make("mlp3", "drtp", scale=2.0)
    rule.step(doubled, x, y)
    a, b = _grads(base), _grads(doubled)
    assert torch.allclose(b["blocks.1.0.weight"], 2 * a["blocks.1.0.weight"], atol=1e-7)
    assert torch.equal(b["head.weight"], a["head.weight"])  # the head never sees the feedback
    gaussian, _ = make("mlp3", "drtp", init="gaussian")
    assert (
        gaussian.feedback.drtp.min() < -1 or gaussian.feedback.drtp.max() > 1
    )  # not uniform in [-1, 1)
    assert base.feedback.drtp.abs().max() <= 1
    with pytest.raises(ValueError, match="init"):
        make("mlp3", "drtp", init="prior")


def test_drtp_feedback_is_one_seeded_buffer_in_the_state_dict():
    a, _ = make("smallconv", "drtp", seed=3)
    b, _ = make("smallconv", "drtp", seed=3)
    c, _ = make("smallconv", "drtp", seed=4)
    assert "feedback.drtp" in a.state_dict()
    assert not any(p is a.feedback.drtp for p in a.parameters())
    assert a.feedback.drtp.shape == (10, max(math.prod(s) for s in a.block_output_shapes()))
    assert torch.equal(a.feedback.drtp, b.feedback.drtp)
    assert not torch.equal(a.feedback.drtp, c.feedback.drtp)


def test_drtp_channels_last_gives_the_same_gradients(batch):
    x, y = batch
    model, rule = make("smallconv", "drtp")
    rule.step(model, x, y)
    nhwc, rule = make("smallconv", "drtp")
    nhwc = nhwc.to(memory_format=torch.channels_last)
    rule.step(nhwc, x.contiguous(memory_format=torch.channels_last), y)
    for name, grad in _grads(model).items():
        assert torch.allclose(nhwc.get_parameter(name).grad, grad, atol=1e-6), name


def test_drtp_signal_and_update_alignment_are_measured(batch):
    x, y = batch
    model, rule = make("smallconv", "drtp")
    signal = measure.alignment_with_bp(model, rule, x, y)
    assert len(signal) == len(model.blocks) and all(
        -1 <= c <= 1 for c in signal
    )  # NaN would fail both
    update = measure.update_alignment(model, rule, x, y)
    assert update["head"] == pytest.approx(1.0)  # the head's true local gradient is BP's
    assert all(-1 <= c <= 1 for c in update.values())
    assert any(abs(c) < 0.99 for name, c in update.items() if name != "head")
