"""dgl's math (methods/dgl.py): each module's gradient is that of its own auxiliary cross-entropy, the
last module's that of the head's, nothing crosses a module boundary; its auxiliary nets; its record."""

import math

import pytest
import torch
import torch.nn.functional as F

import bench.run.train as trainer
from bench.config.files import load_config
from bench.config.spec import make_spec
from bench.local import run_module
from tests.conftest import make


def _grads(params):
    return [p.grad.clone() for p in params]


def _by_hand(model, ranges, index, x, y):
    """The gradient of module `index`'s own loss (its auxiliary CE, or the head's for the last module)
    with respect to its blocks' and its auxiliary net's parameters, on a graph built here, apart."""
    with torch.no_grad():
        h = x
        for blocks in ranges[:index]:
            h = run_module(model, blocks, h)
    out = run_module(model, ranges[index], h)
    last = index == len(ranges) - 1
    top = model.head if last else model.auxiliary[f"module{index + 1}"]
    params = [p for i in ranges[index] for p in model.blocks[i].parameters()] + list(
        top.parameters()
    )
    return params, torch.autograd.grad(F.cross_entropy(top(out), y), params)


@pytest.mark.parametrize(
    "arch,modules", [("smallconv", 0), ("smallconv", 2), ("smallconv", 1), ("mlp3", 0)]
)
def test_each_modules_gradient_is_that_of_its_own_local_loss(arch, modules, batch):
    model, rule = make(arch, "dgl", modules=modules)
    x, y = batch
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stats = rule.step(model, x, y)
    ranges = rule.module_ranges(model)
    assert len(ranges) == (modules or len(model.blocks))
    model.load_state_dict(state)  # the hand computation's forward sees the step's BatchNorm inputs
    for index in range(len(ranges)):
        params, expected = _by_hand(model, ranges, index, x, y)
        for p, g in zip(params, expected):
            assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7), f"module {index}"
    assert math.isclose(stats["loss"].item(), F.cross_entropy(model(x), y).item(), rel_tol=1e-5)
    assert set(stats) == {"loss", "correct"} | {f"module{i + 1}" for i in range(len(ranges) - 1)}


def test_no_gradient_reaches_a_module_from_the_loss_of_the_module_above(batch):
    model, rule = make("smallconv", "dgl")
    rule.step(model, *batch)
    first = _grads(model.blocks[0].parameters())
    # Module 2's auxiliary net and every block above module 1, changed: module 1's update is the same.
    twin, twin_rule = make("smallconv", "dgl")
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if not name.startswith(("blocks.0.", "auxiliary.module1.")):
                p.add_(torch.randn_like(p))
    twin_rule.step(twin, *batch)
    assert all(torch.equal(a, b) for a, b in zip(first, _grads(twin.blocks[0].parameters())))
    # Without the cut module 2's loss would reach module 1: the test above can fail.
    model.zero_grad()
    h = model.blocks[0](batch[0])
    F.cross_entropy(model.auxiliary.module2(model.blocks[1](h)), batch[1]).backward()
    assert any(p.grad.abs().sum() > 0 for p in model.blocks[0].parameters())


def test_the_auxiliary_nets_are_dgls_mlp_sr_or_a_pooled_linear_head():
    model, _ = make(
        "smallconv", "dgl"
    )  # 8x8 inputs: block outputs 32 x 4 x 4, 64 x 2 x 2, 128 x 2 x 2
    for name, width in (("module1", 32), ("module2", 64), ("module3", 128)):
        convs = 3 * (width * width + 2 * width)  # 1x1 convs without bias, each with its BatchNorm
        mlp = 3 * (
            16 * width * width + 4 * width + 2 * 4 * width
        )  # Linear + BatchNorm1d of 4 x width
        counted = sum(p.numel() for p in model.auxiliary[name].parameters())
        assert counted == convs + mlp + 4 * width * 10 + 10, name
    linear, _ = make("smallconv", "dgl", aux="linear")
    assert sum(p.numel() for p in linear.auxiliary.parameters()) == (32 + 64 + 128) * 10 + 3 * 10
    assert "module4" not in linear.auxiliary  # the last module learns through the network's head


def _record(method, tmp_path):
    recipe = {"epochs": 1, "batch_size": 64, "probe_size": 32, "device": "cpu", "attack_subset": 0}
    variants = load_config(check_data=False).variants
    return trainer.run(make_spec("digits", "mlp3", method, 0, recipe, variants), tmp_path / method)


def test_a_dgl_record_counts_its_auxiliary_nets_apart_from_bps_network_counts(tmp_path):
    dgl, bp = _record("dgl", tmp_path), _record("bp", tmp_path)
    assert dgl.status == "ok" and dgl.test_acc > 50
    assert dgl.measures["auxiliary_params"] > 0 and bp.measures["auxiliary_params"] == 0
    assert (dgl.trainable_params, dgl.feedback_params) == (bp.trainable_params, bp.feedback_params)
    assert dgl.inference_params == bp.inference_params
    # float32 parameters, their gradients and Adam's two moments, and Adam's step count per tensor
    tensors = len(list(make("mlp3", "dgl")[0].auxiliary.parameters()))
    assert dgl.memory.auxiliary == 4 * 4 * dgl.measures["auxiliary_params"] + 4 * tensors
    assert bp.memory.auxiliary == 0 and dgl.memory.params == bp.memory.params
    assert set(dgl.history[0].terms) == {"module1", "module2"}
