"""Auxiliary modules, the shared `modules` option, hooks that gained an argument and the forward that
leaves normalisation statistics alone (bench/local.py, issue 28 item 1)."""

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.local import (
    MODULES,
    auxiliary_parameters,
    frozen_statistics,
    module_groups,
    register_auxiliary,
)
from bench.measure import declare
from bench.measure.memory import memory_breakdown, tensor_bytes
from bench.measure.network import network_parameters, param_counts, update_alignment
from bench.method import Method, call_hook
from bench.models import build
from bench.run.optim import make_optimizer
from tests.conftest import make

RECIPE = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}


def _with_head(arch="mlp3"):
    torch.manual_seed(0)
    model = build(arch, (1, 8, 8), 10)
    head = register_auxiliary(model, "probe", nn.Sequential(nn.Linear(512, 7), nn.BatchNorm1d(7)))
    return model, head


def test_a_model_without_auxiliary_modules_is_left_as_it_was():
    torch.manual_seed(0)
    model = build("mlp3", (1, 8, 8), 10)
    keys = set(model.state_dict())
    model, _ = make("mlp3", "bp")
    assert not hasattr(model, "auxiliary") and set(model.state_dict()) == keys
    assert auxiliary_parameters(model) == []


def test_registered_modules_sit_in_one_module_dict_and_reach_the_state_dict():
    model, head = _with_head()
    assert model.auxiliary["probe"] is head
    assert {"auxiliary.probe.0.weight", "auxiliary.probe.1.running_mean"} <= set(model.state_dict())
    with pytest.raises(ValueError, match="'probe' is registered twice"):
        register_auxiliary(model, "probe", nn.Linear(2, 2))


def test_an_auxiliary_module_with_a_buffer_of_its_own_is_refused():
    odd = nn.Linear(2, 2)
    odd.register_buffer("mask", torch.ones(2))
    with pytest.raises(ValueError, match=r"'odd' holds buffers \['mask'\]; accepted: parameters"):
        register_auxiliary(build("mlp3", (1, 8, 8), 10), "odd", odd)


def test_the_optimizer_trains_them_with_the_recipes_weight_decay():
    model, head = _with_head()
    optimizer = make_optimizer(model.parameters(), RECIPE)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in head.parameters()} <= optimized
    before = head[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # no gradient: only weight decay moves a weight, by lr * wd * w
    assert torch.allclose(head[0].weight, before * (1 - 0.1 * 0.01))


def test_they_move_with_the_model():
    model, head = _with_head()
    model.to(torch.float64)  # what .to(device) does, on the one device every machine has
    assert head[0].weight.dtype == torch.float64 and head[1].running_mean.dtype == torch.float64
    if torch.cuda.is_available():
        assert model.cuda().auxiliary["probe"][0].weight.is_cuda


def test_they_are_counted_apart_from_the_network_feedback_and_inference():
    plain, _ = make("mlp3", "bp")
    model, head = _with_head()
    aux = sum(p.numel() for p in head.parameters())
    assert param_counts(model) == param_counts(plain)
    assert not any(n.startswith("auxiliary.") for n, _ in network_parameters(model))
    measure = declare.declared()["auxiliary_params"]
    assert declare.value(measure, model, None, None) == aux == 7 * 512 + 7 + 2 * 7
    assert declare.value(measure, plain, None, None) == 0


def test_memory_holds_their_parameters_gradients_and_optimizer_state_apart():
    model, head = _with_head()
    optimizer = make_optimizer(model.parameters(), RECIPE)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # SGD with momentum: one buffer per parameter
    memory = memory_breakdown(model, optimizer, 0, torch.device("cpu"))
    own = tensor_bytes(head.parameters())
    network = tensor_bytes(p for _, p in network_parameters(model))
    assert memory["auxiliary"] == 3 * own  # the parameters, their gradients, their momentum
    assert memory["params"] == memory["grads"] == network
    assert memory["optimizer_state"] == network


def test_update_alignment_is_over_the_network_layers_only(batch):
    model, rule = make("smallconv", "dgl")
    alignment = update_alignment(model, rule, *batch)
    assert alignment and not any(name.startswith("auxiliary") for name in alignment)
    assert set(alignment) >= {"blocks.0.0", "head"}


@pytest.mark.parametrize(
    "blocks,modules,groups",
    [
        (3, 0, [[0], [1], [2]]),
        (3, 1, [[0, 1, 2]]),
        (3, 2, [[0], [1, 2]]),
        (4, 4, [[0], [1], [2], [3]]),
    ],
)
def test_module_groups_are_contiguous_and_cover_every_block_once(blocks, modules, groups):
    model = nn.Module()
    model.blocks = nn.ModuleList(nn.Identity() for _ in range(blocks))
    assert [list(r) for r in module_groups(model, modules)] == groups


@pytest.mark.parametrize("modules", [4, 9])
def test_more_modules_than_blocks_is_a_value_error_naming_modules(modules):
    with pytest.raises(ValueError, match=rf"bad value {modules} for 'modules'; accepted: 1 to 3"):
        module_groups(build("mlp3", (1, 8, 8), 10), modules)
    with pytest.raises(ValueError, match="'modules'"):
        MODULES.parse("modules", -1)


def test_the_cli_refuses_a_bad_modules_in_one_line_with_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--arch", "mlp3", "--method", "dgl", "--out", str(out)]
    assert main([*argv, "--set", "modules=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad value 5 for 'modules'; accepted: 1 to 3" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_hook_gets_a_new_argument_only_where_its_signature_names_it():
    seen = {}

    class Old(Method):
        def prepare(self, model, num_classes, generator):
            seen["old"] = num_classes
            return model

        def block_signals(self, model, outputs, logits, y):
            return ["old"]

    class New(Method):
        def prepare(self, model, num_classes, generator, in_shape):
            seen["new"] = in_shape
            return model

        def block_signals(self, model, outputs, logits, y, x):
            return [x]

    for rule in (Old(), New()):
        call_hook(rule.prepare, "model", 10, None, in_shape=(1, 8, 8))
    assert seen == {"old": 10, "new": (1, 8, 8)}
    assert call_hook(Old().block_signals, None, [], None, None, x="batch") == ["old"]
    assert call_hook(New().block_signals, None, [], None, None, x="batch") == ["batch"]


def test_a_forward_in_frozen_statistics_leaves_batchnorm_estimates_and_trains_as_any():
    torch.manual_seed(0)
    model = build("smallconv", (3, 8, 8), 10, batchnorm=True).train()
    x = torch.randn(8, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_statistics(model):
        model(x).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.blocks[0][0].weight.grad is not None
    model(x)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert "blocks.0.1.running_mean" in changed  # outside it, the forward moves them as always


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_graph_built_in_frozen_statistics_backpropagates_after_it(mode):
    """Put back by swapping, not by writing in place: a backward after the block (or, in eval mode, of
    a graph that read the estimates) still runs."""
    torch.manual_seed(0)
    model = build("smallconv", (3, 8, 8), 10, batchnorm=True).train(mode == "train")
    x = torch.randn(8, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outside = model(x).sum()
    with frozen_statistics(model):
        inside = model(x).sum()
    (inside + outside).backward()
    assert model.blocks[0][0].weight.grad is not None
    running = model.blocks[0][1].running_mean
    assert torch.equal(running, before["blocks.0.1.running_mean"]) == (mode == "eval")
