"""BioTorch's options as recipe keys: `optimizer: rmsprop`, `grad_clip` and `constrain_weights`
(bench/run/optim.py, bench/run/layer_options.py), checked against hand-computed values."""

import warnings

import pytest
import torch
from torch import nn

from bench.config.files import load_config
from bench.config.recipe import RECIPE
from bench.config.spec import make_spec
from bench.run import layer_options
from bench.run.optim import make_optimizer
from bench.run.train import run

DEFAULTS = {key: option.default for key, option in RECIPE.items()}


def recipe(**overrides):
    return {**DEFAULTS, **overrides}


def test_rmsprop_is_biotorchs_torch_rmsprop_and_steps_as_its_formula():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = make_optimizer([w], recipe(optimizer="rmsprop", lr=0.01, momentum=0.9, weight_decay=0.1))
    assert isinstance(opt, torch.optim.RMSprop)
    assert (
        opt.defaults["alpha"] == 0.99 and opt.defaults["eps"] == 1e-8
    )  # torch's: BioTorch passes neither
    assert not opt.defaults["centered"]
    w.grad = torch.tensor([0.5, 0.25])
    opt.step()
    g = torch.tensor([0.5, 0.25]) + 0.1 * torch.tensor([1.0, -2.0])  # L2 weight decay
    v = 0.01 * g**2  # (1 - alpha) g^2 from a zero square average
    expected = torch.tensor([1.0, -2.0]) - 0.01 * g / (
        v.sqrt() + 1e-8
    )  # momentum buffer starts at 0
    torch.testing.assert_close(w.detach(), expected)


def _two_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    return layer_options.apply(model, recipe(grad_clip=1.0))


def test_grad_clip_clamps_weight_bias_and_the_error_passed_down_as_biotorch():
    model = _two_layers()
    first, second = model
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    (1000 * model(x)).sum().backward()
    layer_options.clip_gradients(model)
    # By hand, BioTorch's hook order: each layer's backward output clamped to [-1, 1] elementwise.
    g2 = torch.full((5, 2), 1000.0)
    h1 = first(x).detach()
    dh1 = (g2 @ second.weight.detach()).clamp(-1, 1)  # the error the second layer passes down
    torch.testing.assert_close(second.weight.grad, (g2.T @ h1).clamp(-1, 1))
    torch.testing.assert_close(second.bias.grad, g2.sum(0).clamp(-1, 1))
    torch.testing.assert_close(first.weight.grad, (dh1.T @ x).clamp(-1, 1))
    torch.testing.assert_close(first.bias.grad, dh1.sum(0).clamp(-1, 1))
    assert first.bias.grad.abs().max() < 5.0 < dh1.abs().sum()  # the clamped error reached layer 1


def test_grad_clip_leaves_a_shortcut_gradient_alone():
    """Only the layer's own contribution to its input's gradient is clamped, not a residual path's."""
    layer = layer_options.apply(nn.Linear(3, 3), recipe(grad_clip=0.5))
    x = torch.randn(2, 3, requires_grad=True)
    (100 * (layer(x) + x)).sum().backward()
    through_layer = (torch.full((2, 3), 100.0) @ layer.weight.detach()).clamp(-0.5, 0.5)
    torch.testing.assert_close(x.grad, through_layer + 100.0)


def test_grad_clip_zero_changes_nothing():
    torch.manual_seed(0)
    plain = nn.Linear(3, 2)
    hooked = layer_options.apply(nn.Linear(3, 2), recipe())
    hooked.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, requires_grad=True)
    (1000 * plain(x)).sum().backward()
    plain_dx, x.grad = x.grad, None
    (1000 * hooked(x)).sum().backward()
    assert torch.equal(plain_dx, x.grad) and torch.equal(plain.weight.grad, hooked.weight.grad)
    assert plain.weight.grad.abs().max() > 1  # so a clamp would have shown


def test_constrain_weights_restores_the_initial_norm_after_each_step_and_keeps_training():
    torch.manual_seed(0)
    model = layer_options.apply(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)),
        recipe(constrain_weights=True),
    )
    initial = [m.weight.detach().clone() for m in (model[0], model[2])]
    opt = make_optimizer(
        model.parameters(), recipe(optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0)
    )
    x = torch.randn(4, 1, 8, 8)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
        after_step = float(torch.linalg.norm(model[2].weight.detach()))
        layer_options.after_step(model)  # as the trainer does after every optimizer step
    # the step moved it off the sphere; the rescale brought it back (what every forward then sees)
    assert after_step != pytest.approx(float(torch.linalg.norm(initial[1])), rel=1e-3)
    for layer, w0 in zip((model[0], model[2]), initial):
        assert float(torch.linalg.norm(layer.weight.detach())) == pytest.approx(
            float(torch.linalg.norm(w0)), rel=1e-6
        )
        assert not torch.allclose(layer.weight, w0)  # the optimizer still moves the (same) weight
    assert opt.param_groups[0]["params"][0] is model[0].weight


def test_constrain_weights_refuses_a_layer_that_starts_at_zero():
    layer = nn.Linear(2, 2)
    nn.init.zeros_(layer.weight)
    with pytest.raises(
        ValueError, match=r"'constrain_weights'.*layer '' starts with weight norm 0"
    ):
        layer_options.apply(layer, recipe(constrain_weights=True))


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("grad_clip", -1.0, "bad value -1.0 for 'grad_clip'; accepted: float >= 0.0"),
        ("grad_clip", float("nan"), "'grad_clip'"),
        ("constrain_weights", 3, "'constrain_weights'; accepted: bool"),
        ("optimizer", "rms", "accepted: one of sgd, adam, adamw, rmsprop"),
    ],
)
def test_bad_option_values_are_refused_naming_the_key(key, value, message):
    variants = load_config(check_data=False).variants
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make_spec("digits", "mlp3", "fa", 0, {key: value}, variants)


def test_a_run_with_every_option_trains_and_records_them(tmp_path):
    sets = {"epochs": 1, "batch_size": 128, "probe_size": 32, "device": "cpu", "attack_subset": 0}
    options = {"optimizer": "rmsprop", "lr": 1e-4, "grad_clip": 1.0, "constrain_weights": True}
    variants = load_config(check_data=False).variants
    record = run(make_spec("digits", "mlp3", "fa", 0, {**sets, **options}, variants), tmp_path)
    record = record.to_json()
    assert record["status"] == "ok" and record["test_acc"] > 20  # 10 classes: above chance
    assert {k: record["recipe"][k] for k in options} == options


def _run(tmp_path, method, **options):
    sets = {"epochs": 1, "batch_size": 128, "probe_size": 32, "device": "cpu", "attack_subset": 0}
    variants = load_config(check_data=False).variants
    return run(make_spec("digits", "mlp3", method, 0, {**sets, **options}, variants), tmp_path)


@pytest.mark.parametrize("method", ["pepita", "predsim", "dgl"])
def test_the_options_train_every_rule_and_leave_its_auxiliary_nets_alone(tmp_path, method):
    """pepita runs two forwards before its backward (a rescale inside a forward broke its graph);
    predsim's decoder starts at zero (a constrained auxiliary layer was refused): the options reach
    the network's layers only."""
    options = {"constrain_weights": True, "grad_clip": 1.0}
    record = _run(tmp_path, method, **options).to_json()
    assert record["status"] == "ok" and record["test_acc"] > 20, record.get("error")


def test_the_options_reach_the_network_not_the_auxiliary_heads():
    torch.manual_seed(0)
    network = nn.ModuleDict({"first": nn.Linear(3, 4), "second": nn.Linear(4, 2)})
    layers = layer_options.network_layers(network)
    network["auxiliary"] = nn.Linear(4, 2)  # added by a rule's prepare, as dgl's heads
    # zero at the start, as predsim's decoder: constrained, it would be refused
    nn.init.zeros_(network["auxiliary"].weight)
    layer_options.apply(network, recipe(grad_clip=1e-3, constrain_weights=True), layers)
    h = network["first"](torch.randn(5, 3))
    (100 * (network["second"](h).sum() + network["auxiliary"](h).sum())).backward()
    layer_options.clip_gradients(network)
    assert network["second"].weight.grad.abs().max() <= 1e-3
    assert network["auxiliary"].weight.grad.abs().max() > 1e-3  # not the network's: not clipped


@pytest.mark.parametrize("method", ["ssa", "svd_bp"])
@pytest.mark.parametrize("key,value", [("grad_clip", 1.0), ("constrain_weights", True)])
def test_a_rule_that_replaces_the_networks_layers_is_refused_naming_the_key(
    tmp_path, method, key, value
):
    """ssa and svd_bp factorise every block layer: the options would reach the head alone. They say so
    (keeps_layers = False), so the config check refuses them before any job is planned."""
    variants = load_config(check_data=False).variants
    with pytest.raises(ValueError, match=rf"'{key}': method '{method}' replaces the network's"):
        make_spec("digits", "mlp3", method, 0, {key: value}, variants)


def test_an_undeclared_rule_that_replaces_a_layer_is_refused_when_it_is_built():
    network = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    layers = layer_options.network_layers(network)
    network[0] = nn.Bilinear(3, 3, 4)  # what a rule's prepare might swap in without declaring it
    with pytest.raises(
        ValueError, match=r"'grad_clip': the rule replaced the network's layer '0' \(now Bilinear\)"
    ):
        layer_options.apply(network, recipe(grad_clip=1.0), layers)


def test_grad_clip_over_several_processes_is_refused(monkeypatch):
    monkeypatch.setattr(layer_options.distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match=r"'grad_clip' with 2 processes.*accepted: grad_clip 0"):
        layer_options.apply(nn.Linear(2, 2), recipe(grad_clip=1.0))
    layer_options.apply(nn.Linear(2, 2), recipe(constrain_weights=True))  # not affected


def test_the_alignment_measures_take_bp_unclipped_and_the_update_clipped():
    """The true-BP reference (exact_backward) passes the error down unclamped; the measured update of
    bp under a tight grad_clip is the clamped one that trains, so it leaves BP's direction."""
    from bench.layers import exact_backward
    from bench.measure.network import update_alignment
    from bench.method import discover
    from bench.models import build

    layer = layer_options.apply(nn.Linear(3, 3), recipe(grad_clip=0.5))
    x = torch.randn(2, 3, requires_grad=True)
    with exact_backward():
        (100 * layer(x)).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((2, 3), 100.0) @ layer.weight.detach())
    torch.manual_seed(0)
    model = build("mlp3", (1, 8, 8), 10)
    layers = layer_options.network_layers(model)
    bp = discover()["bp"]()
    model = bp.prepare(model, 10, torch.Generator().manual_seed(0))
    layer_options.apply(model, recipe(grad_clip=1e-4), layers)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 10
    unclipped = update_alignment(model, bp, x, y)
    clipped = update_alignment(model, bp, x, y, on_gradients=layer_options.clip_gradients)
    # the head's update: no clamped error reaches it, only the clamp of its own gradient
    assert unclipped["head"] == pytest.approx(1.0) and clipped["head"] < 0.99


# --- against the real BioTorch, where it is installed (pip install --no-deps biotorch) ---------------


def _biotorch_fa_linear(**options):
    fa_linear = pytest.importorskip(
        "biotorch.layers.fa_constructor.linear", reason="biotorch is not installed"
    )
    config = {"type": "fa", "options": {"constrain_weights": False, "gradient_clip": False}}
    config["options"] |= {"init": "xavier", **options}
    return fa_linear.Linear(4, 3, True, config)


def test_grad_clip_equals_biotorchs_gradient_clip():
    torch.manual_seed(0)
    theirs = _biotorch_fa_linear(gradient_clip=True)
    with (
        torch.no_grad()
    ):  # its feedback = its weight: FA's gradients are BP's, so only the clip differs
        theirs.weight_backward.copy_(theirs.weight)
    ours = layer_options.apply(nn.Linear(4, 3), recipe(grad_clip=1.0))
    ours.load_state_dict({"weight": theirs.weight, "bias": theirs.bias})
    x = torch.randn(6, 4) * 30
    grads = []
    for layer in (theirs, ours):
        xi = x.clone().requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BioTorch's deprecated register_backward_hook warns
            (200 * layer(xi)).sum().backward()
        if layer is ours:  # BioTorch's hook clamps the weight and bias gradients in its backward
            layer_options.clip_gradients(layer)
        grads.append((xi.grad, layer.weight.grad, layer.bias.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert grads[1][0].abs().max() == 1.0  # the clamp was reached


def test_constrain_weights_equals_biotorchs_on_the_same_weight():
    torch.manual_seed(0)
    theirs = _biotorch_fa_linear(constrain_weights=True)
    ours = nn.Linear(4, 3)
    ours.load_state_dict({"weight": theirs.weight, "bias": theirs.bias})
    layer_options.apply(ours, recipe(constrain_weights=True))
    x = torch.randn(5, 4)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)  # its first forward rescales too
    with torch.no_grad():  # one optimizer step's worth of change, the same on both
        for layer in (theirs, ours):
            layer.weight.mul_(1.7).add_(0.05)
    layer_options.after_step(ours)  # the trainer's rescale after a step; BioTorch's, in its forward
    x = torch.randn(5, 4)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)


def test_perf_times_the_step_with_the_layer_options_as_the_trainer_runs_it():
    """`bench perf step` times what trains: the clamp and the rescale are in its step too."""
    from bench.perf.step.timing import Contender
    from bench.run.speed import Speed

    variants = load_config(check_data=False).variants
    options = {"grad_clip": 1e-6, "constrain_weights": True, "device": "cpu", "lr": 0.1}
    spec = make_spec("digits", "mlp3", "fa", 0, options, variants)
    device = torch.device("cpu")
    speed = Speed.from_recipe(spec.recipe, device)
    contender = Contender("fa", spec, (1, 8, 8), 10, 16, device, speed)
    layers = [m for m in contender.model.modules() if isinstance(m, nn.Linear)]
    norms = [float(torch.linalg.norm(m.weight)) for m in layers]
    before = [m.weight.detach().clone() for m in layers]
    contender.step()
    assert max(p.grad.abs().max().item() for p in contender.model.parameters()) <= 1e-6
    for layer, norm, w0 in zip(layers, norms, before):
        assert not torch.equal(
            layer.weight, w0
        )  # it stepped (Adam moves by about lr whatever the grad)
        assert float(torch.linalg.norm(layer.weight)) == pytest.approx(norm, rel=1e-5)
