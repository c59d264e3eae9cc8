"""`perf step` and the speed paths it measures: the table's columns, the SVD layers' two forms, the
closed-form L_orth gradient, SSA's broadcast cosine, and the trainer's speed options with compile fallback."""

import argparse
import csv
import functools
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cli import main as cli
from bench.config.spec import make_spec
from bench.layers import (
    SVDConv2d,
    SVDLinear,
    convert_to_svd,
    factor_penalties,
    hoyer,
    orthogonality_loss,
)
from bench.layers.svd.factored import is_channels_last
from bench.layout import REPO
from bench.local import in_layout_of
from bench.method import get_method
from bench.models import build
from bench.perf import step as perf_step
from bench.run.speed import Speed
from methods.ssa import broadcast_cosine


def _run(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    perf_step.add_arguments(parser)
    out = tmp_path / "step.csv"
    args = parser.parse_args(
        [
            "--device",
            "cpu",
            "--arch",
            "smallconv",
            "--batch-size",
            "8",
            "--image-size",
            "16",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--peak-size",
            "128",
            "--out",
            str(out),
            *extra,
        ]
    )
    assert perf_step.main(args) == 0
    with open(out) as f:
        return list(csv.DictReader(f))


def test_perf_step_puts_bp_first_at_ratio_one_and_counts_fewer_flops_for_local_and_low_rank(
    tmp_path,
):
    rows = _run(tmp_path, "--methods", "dfa", "ssa-r0.25", "ssa:rank_ratio=0.5,lambda_orth=0")
    assert [r["method"] for r in rows] == [
        "bp",
        "dfa",
        "ssa-r0.25",
        "ssa:rank_ratio=0.5,lambda_orth=0",
    ]
    flops = {r["method"]: float(r["gflop_per_step"]) for r in rows}
    assert float(rows[0]["ratio_to_bp"]) == 1.0
    for r in rows:
        assert float(r["ratio_to_bp"]) == pytest.approx(
            float(r["median_ms"]) / float(rows[0]["median_ms"])
        )
        assert float(r["saved_mb"]) > 0 and 0 < float(r["peak_share"])
    # DFA skips the input gradient at every cut block input; rank 0.25 runs factored layers.
    assert flops["dfa"] < flops["bp"] and flops["ssa-r0.25"] < flops["bp"]


def test_perf_step_counts_auxiliary_bytes_and_memory_ratio_and_draws_the_ratio_figure(tmp_path):
    """A local-loss rule's auxiliary nets (parameters, gradients, AdamW state) show in their own column,
    none for BP or DFA; `memory_ratio` is (saved + auxiliary) over BP's; blockwise holds fewer saved
    activations than graph mode; --plot-ratios writes the figure."""
    figure = tmp_path / "ratios.png"
    rows = _run(
        tmp_path,
        "--methods",
        "dfa",
        "dgl:aux=linear",
        "dgl:aux=linear,locality=blockwise",
        "--plot-ratios",
        str(figure),
    )
    by = {
        r["method"]: {k: float(v) for k, v in r.items() if k not in ("arch", "method", "device")}
        for r in rows
    }
    assert by["bp"]["auxiliary_mb"] == 0 == by["dfa"]["auxiliary_mb"]
    assert by["bp"]["memory_ratio"] == 1.0
    graph, blockwise = by["dgl:aux=linear"], by["dgl:aux=linear,locality=blockwise"]
    # aux=linear on smallconv: one pool + linear head per local module; weights, grads, 2 AdamW moments
    assert graph["auxiliary_mb"] > 0 and graph["auxiliary_mb"] == blockwise["auxiliary_mb"]
    for row in (graph, blockwise, by["dfa"]):
        expected = (row["saved_mb"] + row["auxiliary_mb"]) / (by["bp"]["saved_mb"])
        assert row["memory_ratio"] == pytest.approx(expected)
    assert blockwise["saved_mb"] < graph["saved_mb"]
    assert figure.stat().st_size > 10_000


def test_perf_step_bad_input_exits_2_naming_what_is_accepted(capsys):
    assert cli(["perf", "step", "--device", "cpu", "--arch", "vggg"]) == 2
    assert "unknown arch 'vggg'" in capsys.readouterr().err
    assert cli(["perf", "step", "--device", "cpu", "--set", "autocast=maybe"]) == 2
    assert "autocast" in capsys.readouterr().err
    assert cli(["perf", "step", "--device", "cpu", "--set", "lr=1"]) == 2
    assert "unknown --set key 'lr'" in capsys.readouterr().err
    assert (
        cli(["perf", "step", "--device", "cpu", "--arch", "mlp3", "--methods", "ssa:rank=3"]) == 2
    )
    assert "unknown option 'rank'" in capsys.readouterr().err


def test_perf_step_times_the_sweep_points_of_its_config_files():
    files = [REPO / "config" / "config.yaml", REPO / "config" / "sweep_ssa.yaml"]
    variants = perf_step.step_variants(files)
    assert "ssa-no_align" in variants and "ssa-r0.25" in variants  # the file's own, the extra row
    point = variants["ssa_design-rank_ratio_0p5"]  # a sweep point of the second file
    assert point == {"impl": "ssa", "rank_epochs": [1], "feedback": "broadcast", "rank_ratio": 0.5}
    spec = make_spec("synthetic", "smallconv", "ssa_design-rank_ratio_0p5", 0, {}, variants)
    assert spec.impl == "ssa" and spec.options["rank_ratio"] == 0.5
    assert "ssa_design-base" not in perf_step.step_variants(
        None
    )  # config/config.yaml has no sweeps


def _forms_agree(layer, x):
    """Output and factor gradients of `layer` on x under both forms; asserts they agree."""
    results = []
    for form in ("factored", "composed"):
        layer.form = form
        layer.zero_grad()
        y = layer(x)
        y.pow(2).sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in (layer.U, layer.s, layer.V)]))
    layer.form = "auto"
    (y1, g1), (y2, g2) = results
    assert torch.allclose(y1, y2, atol=1e-4, rtol=1e-4)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("decomposition", ["channel", "spatial"])
def test_svd_conv_forms_agree_and_auto_picks_by_cost(decomposition):
    torch.manual_seed(0)
    layer = SVDConv2d(
        nn.Conv2d(32, 64, 3, stride=2, padding=1), rank=16, decomposition=decomposition
    )
    _forms_agree(layer, torch.randn(4, 32, 9, 9))
    # 16 x (m + n) per position against m x n (+ composing), m x n = 64 x 288 or 192 x 96: factored
    assert layer.runs_factored(128 * 256)
    thin = SVDConv2d(nn.Conv2d(16, 16, 3, padding=1), rank=4)
    assert not thin.runs_factored(
        128 * 1024
    )  # 4 middle channels: slower than the dense conv, measured


def test_svd_conv_on_channels_last_input_runs_factored_up_to_a_higher_flop_share():
    torch.manual_seed(0)
    layer = SVDConv2d(
        nn.Conv2d(64, 128, 3, padding=1), rank=64
    )  # factored at 0.61 of the dense FLOPs
    positions = 128 * 8 * 8
    assert not layer.runs_factored(positions) and layer.runs_factored(positions, channels_last=True)
    x = torch.randn(2, 64, 8, 8)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(layer(nhwc), layer(x), atol=1e-4)  # the form changes, the numbers do not
    _forms_agree(layer, nhwc)


def test_factor_penalties_equal_the_per_layer_sums_with_their_autograd_gradients():
    torch.manual_seed(0)
    # Repeated small shapes share a batched Gram, the 600 x 40 factor goes alone; 0-weight terms are logged.
    model = nn.Sequential(
        nn.Linear(10, 12), nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(600, 80)
    )
    convert_to_svd(model, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    layers = list(model)
    penalty, terms = factor_penalties(model, 0.3, 0.0)
    penalty.backward()
    fast = [(layer.U.grad.clone(), layer.V.grad.clone()) for layer in layers]
    assert all(
        layer.s.grad is None for layer in layers
    )  # lambda_sparse 0: measured without a graph
    model.zero_grad()
    eye = torch.eye
    plain = sum(
        ((l.U.T @ l.U - eye(l.rank)).pow(2).sum() + (l.V.T @ l.V - eye(l.rank)).pow(2).sum())
        / l.rank**2
        for l in layers
    )
    (0.3 * plain).backward()
    assert penalty.item() == pytest.approx(0.3 * plain.item(), rel=1e-6)
    assert terms["orth"].item() == pytest.approx(plain.item() / 4, rel=1e-6)
    assert terms["sparse"].item() == pytest.approx(
        sum(hoyer(l).item() for l in layers) / 4, rel=1e-6
    )
    for (u, v), layer in zip(fast, layers):
        assert torch.allclose(u, layer.U.grad, atol=1e-6) and torch.allclose(
            v, layer.V.grad, atol=1e-6
        )
    model.zero_grad()
    penalty, _ = factor_penalties(model, 0.0, 0.5)
    penalty.backward()
    sparse = [layer.s.grad.clone() for layer in layers]
    model.zero_grad()
    (0.5 * sum(hoyer(l) for l in layers)).backward()
    assert all(
        torch.allclose(a, l.s.grad, atol=1e-6) and l.U.grad is None for a, l in zip(sparse, layers)
    )


def test_svd_linear_full_rank_runs_factored_when_composing_w_costs_more():
    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(64, 64), rank=64)
    _forms_agree(layer, torch.randn(5, 64))
    assert layer.runs_factored(8)  # composing W (64^3) dwarfs 8 rows
    assert not layer.runs_factored(100_000)


def test_orthogonality_loss_gradient_equals_autograd_of_the_formula():
    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(12, 9), 6)
    with torch.no_grad():
        layer.U.add_(0.3 * torch.randn_like(layer.U))
        layer.V.mul_(1.7)
    orthogonality_loss(layer).backward()
    fast = layer.U.grad.clone(), layer.V.grad.clone()
    U, V = layer.U.detach().requires_grad_(), layer.V.detach().requires_grad_()
    eye = torch.eye(6)
    plain = ((U.T @ U - eye).pow(2).sum() + (V.T @ V - eye).pow(2).sum()) / 36
    plain.backward()
    assert orthogonality_loss(layer).item() == pytest.approx(plain.item(), rel=1e-6)
    assert torch.allclose(fast[0], U.grad, atol=1e-6) and torch.allclose(fast[1], V.grad, atol=1e-6)


def test_broadcast_cosine_equals_cosine_with_the_broadcast_signal():
    torch.manual_seed(0)
    h, g = torch.randn(5, 3, 4, 6), torch.randn(5, 3)
    expected = F.cosine_similarity(h.flatten(1), g[:, :, None, None].expand_as(h).flatten(1), dim=1)
    assert torch.allclose(broadcast_cosine(h, g), expected, atol=1e-6)
    assert torch.allclose(
        broadcast_cosine(h[:, :, 0, 0], g), F.cosine_similarity(h[:, :, 0, 0], g, dim=1)
    )


def test_speed_options_auto_means_cuda_only_but_channels_last_everywhere():
    auto = {
        "channels_last": "auto",
        "autocast": "auto",
        "cudnn_benchmark": "auto",
        "compile": "auto",
    }
    assert Speed.from_recipe(auto, torch.device("cpu")) == Speed(channels_last=True)
    assert Speed.from_recipe({**auto, "channels_last": "off"}, torch.device("cpu")) == Speed()
    assert Speed.from_recipe(auto, torch.device("cuda")) == Speed(True, True, True, True)
    forced = Speed.from_recipe(
        {**auto, "channels_last": "on", "compile": "off"}, torch.device("cuda")
    )
    assert forced == Speed(channels_last=True, autocast=True, cudnn_benchmark=True, compile=False)


def _dfa_model():
    torch.manual_seed(0)
    model = build("smallconv", (1, 8, 8), 4)
    rule = get_method("dfa")()
    return rule.prepare(model, 4, torch.Generator().manual_seed(1)), rule


def test_compile_failure_warns_and_leaves_the_model_eager_and_unchanged(monkeypatch, caplog):
    model, _ = _dfa_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def broken(fn):
        def run(*args, **kwargs):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="bench.run.train"):
        assert Speed(compile=True).compile_model(model, torch.randn(6, 1, 8, 8)) is False
    assert "torch.compile failed" in caplog.text and "no compiler here" in caplog.text
    assert "forward" not in vars(model) and "forward_blocks" not in vars(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_compiled_local_step_gives_the_eager_gradients(monkeypatch):
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    grads = []
    monkeypatch.setattr(
        torch._dynamo.config, "suppress_errors", False
    )  # compile_model sets it; restore after
    for compiled in (False, True):
        model, rule = _dfa_model()
        if compiled:  # dynamo's graph capture with the graph cuts, without a C++ compiler's minutes
            monkeypatch.setattr(
                torch, "compile", functools.partial(torch.compile, backend="aot_eager")
            )
            assert Speed(compile=True).compile_model(model, x)
            assert "forward_blocks" in vars(model)
        rule.step(model, x, y)
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_channels_last_and_bf16_autocast_step_fills_every_gradient():
    model, rule = _dfa_model()
    speed = Speed(channels_last=True, autocast=True)
    model = speed.prepare(model)
    assert model.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    with speed.context(torch.device("cpu")):
        stats = rule.step(
            model, speed.batch(torch.randn(6, 1, 8, 8)), torch.tensor([0, 1, 2, 3, 0, 1])
        )
    assert torch.isfinite(stats["loss"])
    assert all(
        p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
        for p in model.parameters()
    )


def test_signals_reach_a_channels_last_graph_in_its_layout(monkeypatch):
    """An NCHW signal fed to NHWC block outputs made every backward kernel convert it (DFA's CPU step
    was slower than BP's); deliver hands each signal over in its block output's layout."""
    model, rule = _dfa_model()
    speed = Speed(channels_last=True)
    model = speed.prepare(model)
    handed = []
    real_backward = torch.autograd.backward
    monkeypatch.setattr(
        torch.autograd,
        "backward",
        lambda tensors, grads: handed.extend(grads) or real_backward(tensors, grads),
    )
    rule.step(model, speed.batch(torch.randn(6, 1, 8, 8)), torch.tensor([0, 1, 2, 3, 0, 1]))
    images = [g for g in handed if g.dim() == 4]
    assert images and all(is_channels_last(g) for g in images)
    nchw = torch.randn(2, 3, 4, 5)
    assert in_layout_of(nchw, nchw) is nchw  # NCHW outputs: the signal as it is, no copy


@pytest.mark.parametrize("variant", [{"impl": "dfa"}, {"impl": "ssa", "rank_ratio": 0.5}])
def test_channels_last_step_gives_the_nchw_gradients(variant):
    """Layout is speed only: a local step in NHWC (where SVD convs may pick the other form) fills the
    gradients of the NCHW step, up to float rounding."""
    impl, options = variant["impl"], {k: v for k, v in variant.items() if k != "impl"}
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    grads = []
    for speed in (Speed(), Speed(channels_last=True)):
        torch.manual_seed(0)
        model = build("smallconv", (3, 16, 16), 4)
        rule = get_method(impl)(**options)
        model = speed.prepare(rule.prepare(model, 4, torch.Generator().manual_seed(1)))
        rule.step(model, speed.batch(x), y)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-4, atol=1e-6), name
