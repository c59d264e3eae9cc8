"""pepita's math (methods/pepita.py): one step's .grad is the hand-computed PEPITA update (first, hidden
and last layer, biases, a conv block), F is fixed and seeded, BatchNorm statistics move once per step."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.grad import conv2d_weight

import bench.run.train as trainer
from bench.config.files import load_config
from bench.config.spec import make_spec
from bench.method import discover
from bench.models import build
from bench.models.blocknet import BlockNet
from tests.conftest import make


def _softmax_error(logits, y):
    p = logits.exp() / logits.exp().sum(1, keepdim=True)
    return p - torch.eye(logits.shape[1])[y]


def _two_layer():
    """A 4 -> 3 -> 2 ReLU net with hand-set weights and F, and a batch of 3 inputs."""
    model = BlockNet(
        [nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())], nn.Linear(3, 2), (4,)
    )
    rule = discover()["pepita"]()
    model = rule.prepare(model, 2, torch.Generator().manual_seed(0), (4,))
    with torch.no_grad():
        model.blocks[0][1].weight.copy_(
            torch.tensor([[0.5, -0.2, 0.1, 0.3], [-0.4, 0.6, 0.2, -0.1], [0.2, 0.1, -0.5, 0.4]])
        )
        model.blocks[0][1].bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
        model.head.weight.copy_(torch.tensor([[0.3, -0.6, 0.2], [-0.1, 0.4, 0.5]]))
        model.head.bias.copy_(torch.tensor([0.2, -0.1]))
        model.feedback.pepita.copy_(
            torch.tensor([[0.9, -0.8], [-0.7, 1.1], [0.6, 0.5], [-1.2, 0.4]])  # F: D x K
        )
    x = torch.tensor([[1.0, 0.5, -0.3, 0.2], [-0.4, 1.2, 0.8, -0.6], [0.3, -0.9, 0.4, 1.0]])
    return model, rule, x, torch.tensor([0, 1, 1])


def test_one_step_on_a_two_layer_net_is_the_hand_computed_pepita_update():
    model, rule, x, y = _two_layer()
    W1, b1 = model.blocks[0][1].weight.detach().clone(), model.blocks[0][1].bias.detach().clone()
    W2, b2 = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    Fm, n = model.feedback.pepita.clone(), len(x)
    stats = rule.step(model, x, y)
    # the standard pass, the error, the modulated input and the modulated pass
    h1 = (x @ W1.T + b1).clamp(min=0)
    logits = h1 @ W2.T + b2
    e = _softmax_error(logits, y)
    x_mod = x + e @ Fm.T
    h1_mod = (x_mod @ W1.T + b1).clamp(min=0)
    e_mod = _softmax_error(h1_mod @ W2.T + b2, y)
    expected = {
        "W1": (h1 - h1_mod).T @ x_mod / n,  # first layer: the modulated input
        "b1": (h1 - h1_mod).sum(0) / n,
        "W2": e_mod.T @ h1_mod / n,  # last layer: the modulated pass's error
        "b2": e_mod.sum(0) / n,
    }
    got = {
        "W1": model.blocks[0][1].weight.grad,
        "b1": model.blocks[0][1].bias.grad,
        "W2": model.head.weight.grad,
        "b2": model.head.bias.grad,
    }
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-7), name
    # no ReLU derivative gates h - h_mod: a unit on in the first pass and off in the second still learns
    assert ((h1 > 0) & (h1_mod == 0)).any() and expected["b1"].abs().min() > 0
    assert torch.isclose(stats["loss"], -logits.log_softmax(1)[torch.arange(n), y].mean())


def test_hidden_layers_learn_from_the_activation_difference_times_the_modulated_input_below(batch):
    model, rule = make("mlp3", "pepita")
    x, y = batch
    layers = [
        model.blocks[i][-2] for i in range(3)
    ]  # Flatten-Linear-ReLU, Linear-ReLU, Linear-ReLU
    W = [(m.weight.detach().clone(), m.bias.detach().clone()) for m in layers]
    Wh, bh = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    Fm, n = model.feedback.pepita.clone(), len(x)
    rule.step(model, x, y)

    def forward(a):
        hs = []
        for w, b in W:
            a = (a @ w.T + b).clamp(min=0)
            hs.append(a)
        return hs, a @ Wh.T + bh

    hs, logits = forward(x.flatten(1))
    x_mod = x.flatten(1) + _softmax_error(logits, y) @ Fm.T
    hs_mod, _ = forward(x_mod)
    inputs = [x_mod, *hs_mod[:-1]]
    for i, layer in enumerate(layers):
        assert torch.allclose(layer.weight.grad, (hs[i] - hs_mod[i]).T @ inputs[i] / n, atol=1e-7)
    assert all(m.weight.grad.abs().sum() > 0 for m in layers)  # the test above can fail
    signals = rule.block_signals(
        model, model.forward_blocks(x, at="preactivation")[0], logits, y, x
    )
    assert all(torch.allclose(s, (h - hm) / n) for s, h, hm in zip(signals, hs, hs_mod))


def test_a_conv_block_learns_from_the_difference_averaged_over_positions(batch):
    model, rule = make("smallconv", "pepita")
    x, y = batch
    conv = model.blocks[0][0]
    state = copy.deepcopy(model.state_dict())
    rule.step(model, x, y)
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model(x)
        e = _softmax_error(logits, y)
        x_mod = x + (e @ model.feedback.pepita.T).view_as(x)
        diff = conv(x).clamp(min=0) - conv(x_mod).clamp(min=0)  # N x 32 x 8 x 8, before the pool
    expected = conv2d_weight(x_mod, conv.weight.shape, diff / (len(x) * 64), padding=1)
    assert torch.allclose(conv.weight.grad, expected, atol=1e-8)
    assert torch.allclose(conv.bias.grad, diff.sum((0, 2, 3)) / (len(x) * 64), atol=1e-8)


def test_f_is_seeded_feedback_fixed_across_steps(batch):
    model, rule = make("mlp3", "pepita")
    f = model.feedback.pepita.clone()
    assert f.shape == (64, 10) and f.abs().max() <= 0.05 * (6 / 64) ** 0.5
    assert "feedback.pepita" in dict(model.named_buffers())
    assert all(p is not model.feedback.pepita for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        model.zero_grad()
        rule.step(model, *batch)
        optimizer.step()
    assert torch.equal(model.feedback.pepita, f)
    assert torch.equal(make("mlp3", "pepita")[0].feedback.pepita, f)
    assert not torch.equal(make("mlp3", "pepita", seed=1)[0].feedback.pepita, f)
    scaled = make("mlp3", "pepita", scale=0.1)[0].feedback.pepita
    assert torch.allclose(scaled, 2 * f)


def test_batchnorm_statistics_move_once_per_step(batch):
    torch.manual_seed(0)
    model = build("mlp3", (1, 8, 8), 10, batchnorm=True)
    rule = discover()["pepita"]()
    model = rule.prepare(model, 10, torch.Generator().manual_seed(0), (1, 8, 8))
    twin = copy.deepcopy(model)
    rule.step(model, *batch)
    with torch.no_grad():
        twin(batch[0])  # one training-mode forward on the batch: the statistics' one move
    norms = [(n, b) for n, b in model.named_buffers() if "running" in n or "num_batches" in n]
    assert len(norms) == 9
    twins = dict(twin.named_buffers())
    for name, buffer in norms:
        assert torch.equal(buffer, twins[name]), name
    assert int(model.blocks[0][2].num_batches_tracked) == 1


# smallconv without BatchNorm diverges to chance (docs/methods.md); with it, it learns. The BatchNorm
# run also measures signal alignment through the eval-mode graph (block_signals leaves it intact).
@pytest.mark.parametrize("arch,batchnorm", [("mlp3", False), ("smallconv", True)])
def test_a_two_epoch_digits_run_learns_above_chance(arch, batchnorm, tmp_path):
    recipe = {"epochs": 2, "batch_size": 64, "probe_size": 32, "device": "cpu", "attack_subset": 0}
    recipe["batchnorm"] = batchnorm
    variants = load_config(check_data=False).variants
    spec = make_spec("digits", arch, "pepita", 0, recipe, variants)
    record = trainer.run(spec, tmp_path / arch)
    assert record.status == "ok" and record.test_acc > 20  # 10 classes: chance is 10 %
    assert record.feedback_params == 64 * 10 and record.measures["auxiliary_params"] == 0
    assert all(-1 <= a <= 1 for a in record.history[-1].alignment)  # block signals are measured
