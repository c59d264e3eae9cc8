"""BioTorch's recipe (issue 29 item 2): weight_init's scope, the Xavier feedback of fa, dfa and the sign
rules, dfa's three feedback forms, and config/biotorch_cifar10.yaml's keys and citations."""

import math

import pytest
import torch
import yaml
from torch import nn

from bench.config.files import load_config
from bench.layers import xavier_std
from bench.layers.direct import Reader, find_readers, reader_signal
from bench.layout import REPO
from bench.local import output_error
from bench.method import discover
from bench.models import build
from bench.models.blocknet import BlockNet
from bench.models.init import initialise

CIFAR = (3, 32, 32)
K = 10


def _prepared(arch, method, in_shape=CIFAR, seed=0, **options):
    torch.manual_seed(seed)
    model = build(arch, in_shape, K)
    rule = discover()[method](**options)
    model = rule.prepare(model, K, torch.Generator().manual_seed(100 + seed))
    rule.generator.manual_seed(200 + seed)
    return model, rule


def _fans(shape):
    area = math.prod(shape[2:])
    return shape[1] * area, shape[0] * area


# --- weight_init_scope ----------------------------------------------------------------------------


def test_weight_init_scope_all_redraws_the_head_too_and_hidden_keeps_it():
    torch.manual_seed(1)
    plain = build("lenet", CIFAR, K)
    torch.manual_seed(1)
    hidden = build("lenet", CIFAR, K, weight_init="xavier_uniform")
    torch.manual_seed(1)
    every = build("lenet", CIFAR, K, weight_init="xavier_uniform", weight_init_scope="all")
    assert torch.equal(hidden.head.weight, plain.head.weight)
    assert not torch.equal(every.head.weight, plain.head.weight)
    bound = math.sqrt(6 / (256 + K))  # BioTorch's xavier_uniform_ on fc2 (256 -> 10), bias zero
    assert every.head.weight.abs().max().item() <= bound
    assert every.head.weight.abs().max().item() > 0.9 * bound
    assert torch.count_nonzero(every.head.bias) == 0
    assert torch.count_nonzero(plain.head.bias) > 0
    for a, b in zip(hidden.blocks.parameters(), every.blocks.parameters()):
        assert torch.equal(a, b)  # the same draws in the blocks: the head's come after them


def test_weight_init_scope_bad_value_names_the_key():
    with pytest.raises(ValueError, match="'weight_init_scope'; accepted: one of hidden, all"):
        initialise(build("mlp3", (1, 8, 8), K), "xavier_uniform", "head")


# --- Xavier feedback of fa and the sign rules -----------------------------------------------------


def test_fa_xavier_feedback_is_xavier_uniform_for_each_weight_shape_whatever_the_weights_init():
    model, _ = _prepared("lenet", "fa", init="xavier")
    layers = [m for m in model.modules() if hasattr(m, "fa_B")]
    assert len(layers) == 5
    for layer in layers:
        B = layer.fa_B
        std = xavier_std(tuple(B.shape))
        assert std == pytest.approx(math.sqrt(2 / sum(_fans(B.shape))))
        assert B.abs().max().item() <= math.sqrt(3) * std
        if B.numel() > 2000:  # enough entries for the statistics
            assert B.std().item() == pytest.approx(std, rel=0.08)
            # PyTorch's default init of W has std 1/sqrt(3 fan_in): B is not drawn at W's scale
            assert layer.weight.std().item() != pytest.approx(std, rel=0.2)


@pytest.mark.parametrize("method", ["usf", "brsf", "frsf"])
def test_sign_rules_xavier_scale_is_the_xavier_std_of_each_weight_shape(method):
    model, rule = _prepared("lenet", method, init="xavier")
    measured, _ = _prepared("lenet", method)
    for layer, other in zip(
        (m for m in model.modules() if hasattr(m, "sign_scale")),
        (m for m in measured.modules() if hasattr(m, "sign_scale")),
    ):
        sigma = math.sqrt(2 / sum(_fans(layer.weight.shape)))
        assert layer.sign_scale.item() == pytest.approx(sigma, rel=1e-6)
        assert other.sign_scale.item() == pytest.approx(other.weight.std().item(), rel=1e-6)
        if method != "usf":  # |xavier_uniform_|: U(0, sqrt(3) sigma)
            magnitude = layer.sign_magnitude
            assert magnitude.min().item() >= 0
            assert magnitude.max().item() <= math.sqrt(3) * sigma * (1 + 1e-6)


def test_feedback_init_bad_value_names_the_option():
    with pytest.raises(ValueError, match="'init'.*measured, xavier"):
        _prepared("mlp3", "usf", in_shape=(1, 8, 8), init="gaussian")


# --- dfa's feedback forms -------------------------------------------------------------------------


def test_dfa_forms_have_their_shapes():
    shared, _ = _prepared("lenet", "dfa")
    dense, _ = _prepared("lenet", "dfa", form="dense")
    kernel, _ = _prepared("lenet", "dfa", form="kernel")
    sizes = [math.prod(s) for s in shared.block_output_shapes()]
    assert sizes == [32 * 15 * 15, 64 * 6 * 6, 128, 256]
    assert [tuple(b.shape) for b in shared.feedback.buffers()] == [(K, max(sizes))]
    assert [tuple(b.shape) for b in dense.feedback.buffers()] == [(K, s) for s in sizes]
    # BioTorch's: conv2's and conv3's kernels, fc1's and fc2's matrices (K x in_features)
    assert [tuple(b.shape) for b in kernel.feedback.buffers()] == [
        (K, 32, 3, 3),
        (K, 64, 3, 3),
        (K, 128),
        (K, 256),
    ]


def test_dfa_dense_blocks_are_independent_where_shared_ones_share_their_columns():
    shared, rule = _prepared("mlp3", "dfa", in_shape=(1, 8, 8))
    dense, _ = _prepared("mlp3", "dfa", in_shape=(1, 8, 8), form="dense")
    logits, y = torch.zeros(K, K), torch.arange(K)
    maps = [rule.block_signal(shared, i, torch.zeros(K, 512), logits, y) for i in range(3)]
    # the shared form's blocks of equal size get the same map; the dense form's do not correlate
    assert torch.equal(maps[0], maps[1])
    a, b = dense.feedback.dfa_0.flatten(), dense.feedback.dfa_1.flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.05
    again, _ = _prepared("mlp3", "dfa", in_shape=(1, 8, 8), form="dense")
    other, _ = _prepared("mlp3", "dfa", in_shape=(1, 8, 8), form="dense", seed=1)
    assert torch.equal(again.feedback.dfa_2, dense.feedback.dfa_2)
    assert not torch.equal(other.feedback.dfa_2, dense.feedback.dfa_2)


def test_dfa_xavier_draws_each_matrix_and_kernel_xavier_uniform():
    model, _ = _prepared("lenet", "dfa", form="kernel", init="xavier")
    for buffer in model.feedback.buffers():
        std = xavier_std(tuple(buffer.shape))
        assert buffer.abs().max().item() <= math.sqrt(3) * std
        assert buffer.std().item() == pytest.approx(std, rel=0.1)
    # BioTorch's per-block maps on LeNet (issue 29): Frobenius norms about 51.6, 16.5, 4.3, 4.4; a
    # K x n Xavier matrix has E||B||^2 = 2 K n / (K + n)
    readers = find_readers(model)
    every_class = torch.eye(K)  # the error of each class alone: its signal is the map's row
    norms = [
        reader_signal(every_class, b, r).norm().item()
        for b, r in zip(model.feedback.buffers(), readers)
    ]
    assert norms[2] == pytest.approx(math.sqrt(2 * K * 128 / (K + 128)), rel=0.1)
    assert norms[3] == pytest.approx(math.sqrt(2 * K * 256 / (K + 256)), rel=0.1)
    assert norms[0] == pytest.approx(51.6, rel=0.15) and norms[1] == pytest.approx(16.5, rel=0.15)


def test_dfa_kernel_signal_is_the_transposed_conv_of_the_spread_error():
    """Block 0 of lenet is read by conv2 (3x3, no padding): its signal is conv2d_input of e spread over
    conv2's 13 x 13 output with the kernel, BioTorch's dfa_backward_hook; the gradient of block 0's
    weight is that of <signal, h_0>."""
    model, rule = _prepared("lenet", "dfa", form="kernel")
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, *CIFAR, generator=g), torch.arange(6) % K
    rule.step(model, x, y)
    got = model.blocks[0][0].weight.grad.clone()
    logits = model(x)
    e = output_error(logits, y) / len(y)
    spread = e[:, :, None, None].expand(6, K, 13, 13)
    signal = torch.nn.grad.conv2d_input((6, 32, 15, 15), model.feedback.dfa_0, spread)
    model.zero_grad()
    (model.blocks[0](x) * signal).sum().backward()
    expected = model.blocks[0][0].weight.grad
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()  # float32 rounding
    # the head: its true gradient; the last block: e times fc2's feedback (K x 256)
    outputs, _ = model.forward_blocks(x, cut=True)
    last = rule.block_signals(model, outputs, logits.detach(), y)[3]
    assert torch.allclose(last, e @ model.feedback.dfa_3, atol=1e-7)


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation,side",
    [
        ((3, 3), (1, 1), (0, 0), (1, 1), 15),
        ((3, 5), (2, 1), (1, 2), (1, 1), 11),
        ((3, 3), (2, 2), (2, 2), (2, 2), 9),
        ((1, 1), (2, 2), (0, 0), (1, 1), 8),
    ],
)
def test_dfa_kernel_signal_equals_the_transposed_conv_of_the_spread_error_at_any_geometry(
    kernel, stride, padding, dilation, side
):
    """reader_signal never builds the spread error (N x K x H_out x W_out), yet gives its transposed
    convolution with the kernel, whatever the reader's stride, padding, dilation and kernel shape."""
    conv = nn.Conv2d(4, 6, kernel, stride, padding, dilation)
    out_hw = tuple(conv(torch.zeros(1, 4, side, side + 1)).shape[2:])
    reader = Reader(
        in_shape=(4, side, side + 1), out_hw=out_hw, conv=(kernel, stride, padding, dilation)
    )
    g = torch.Generator().manual_seed(3)
    feedback, e = torch.randn(K, 4, *kernel, generator=g), torch.randn(5, K, generator=g)
    spread = e[:, :, None, None].expand(5, K, *out_hw)
    expected = torch.nn.grad.conv2d_input(
        (5, 4, side, side + 1), feedback, spread, stride, padding, dilation
    )
    got = reader_signal(e, feedback, reader)
    assert got.shape == (5, 4 * side * (side + 1))
    assert (got - expected.reshape(5, -1)).abs().max() <= 1e-5 * expected.abs().max()


def test_dfa_kernel_form_through_a_pool_carries_the_signal_back_with_its_derivative():
    """resnet20's head pools then flattens before fc: the last block's signal is e B spread over the
    8 x 8 map divided by 64 (the average pool's derivative)."""
    model, rule = _prepared("resnet20", "dfa", form="kernel")
    x, y = torch.randn(2, *CIFAR), torch.tensor([1, 7])
    outputs, logits = model.forward_blocks(x, cut=True)
    signal = rule.block_signals(model, outputs, logits, y)[-1]
    e = output_error(logits, y) / 2
    expected = (e @ model.feedback.dfa_9)[:, :, None, None].expand(2, 64, 8, 8) / 64
    assert torch.allclose(signal, expected, atol=1e-8)
    # a stride-2 block is read by its strided conv1: a kernel of 16 input channels
    assert tuple(model.feedback.dfa_3.shape) == (K, 16, 3, 3)


def test_dfa_kernel_form_refuses_what_it_cannot_shape():
    with pytest.raises(ValueError, match="'signal_at' with form 'kernel'.*accepted: output"):
        _prepared("lenet", "dfa", form="kernel", signal_at="preactivation")
    with pytest.raises(ValueError, match="groups 32.*accepted forms here: shared, dense"):
        _prepared("mobilenetv1", "dfa", form="kernel")
    # a block read through a layer with parameters (BatchNorm) before its first conv
    blocks = [
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.ReLU()),
    ]
    model = BlockNet(blocks, nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, K)), (1, 8, 8))
    with pytest.raises(ValueError, match="block 0's output .* parameter-free modules alone"):
        discover()["dfa"](form="kernel").prepare(model, K, torch.Generator())


# --- config/biotorch_cifar10.yaml -----------------------------------------------------------------


def test_biotorch_config_sets_every_choice_of_biotorchs_configs(tmp_path):
    path = REPO / "config" / "biotorch_cifar10.yaml"
    config = load_config([path], {"data_dir": str(tmp_path)}, check_data=False)
    cifar = config.grids["cifar10"]
    recipe = cifar.recipe
    assert {
        k: recipe[k] for k in ("weight_init", "weight_init_scope", "optimizer", "schedule")
    } == {
        "weight_init": "xavier_uniform",
        "weight_init_scope": "all",
        "optimizer": "adam",
        "schedule": "multistep",
    }
    assert (recipe["lr"], recipe["weight_decay"], recipe["epochs"], recipe["batch_size"]) == (
        0.001,
        0.0001,
        250,
        128,
    )
    assert recipe["milestones"] == [100, 150, 200] and recipe["gamma"] == 0.1
    assert recipe["val_split"] == 5000 and recipe["keep_last_batch"] is False
    assert recipe["norm_mean"] == [0.4914, 0.4821, 0.4465]
    assert recipe["norm_std"] == [0.2470, 0.2435, 0.2616]
    assert (recipe["crop_pad"], recipe["flip"], recipe["cutout"]) == (4, True, 0)
    variants = config.variants
    assert variants["dfa"] == {"impl": "dfa", "init": "xavier", "form": "kernel"}
    assert all(variants[m]["init"] == "xavier" for m in ("fa", "usf", "brsf", "frsf"))
    # every choice cites where it comes from
    raw = yaml.safe_load(path.read_text())
    lines = path.read_text().splitlines()
    for key in raw["datasets"]["cifar10"]["recipe"]:
        (line,) = [line for line in lines if line.strip().startswith(f"{key}:")]
        assert any(tag in line for tag in ("# [A]", "# [D]", "# [BioTorch]")), line
    for name in raw["variants"]:
        (line,) = [line for line in lines if line.strip().startswith(f"{name}: {{impl")]
        assert "# [A]" in line, line
