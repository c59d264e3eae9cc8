"""The local-loss papers' architectures (issue 28, item 3): Nøkland & Eidnes's `vgg8b` and InfoPro's and
AugLocal's `resnet110`: parameter counts by hand and against the published figures, block structure, shapes,
gradient isolation per block, and their place in the arch table."""

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.method import discover
from bench.models import ARCHS, build
from bench.models.resnet import PadShortcut, _cifar_resnet


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv(c_in: int, c_out: int, k: int = 3, bias: bool = False) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def _vgg8b_params(channels: int, side: int, classes: int) -> int:
    """VGG8b counted from anokland/local-loss train.py's layers: convs with bias, BatchNorm (weight and
    bias) after each; 7x7 first conv above 64 px (stride 2); FC 1024 (bias, BatchNorm1d); Linear(1024, K)."""
    first = 7 if side > 64 else 3
    side = (side + 1) // 2 if side > 64 else side
    widths = [(channels, 128, first), (128, 256, 3), (256, 256, 3), (256, 512, 3), (512, 512, 3)]
    widths.append((512, 512, 3))
    convs = sum(_conv(a, b, k, bias=True) + 2 * b for a, b, k in widths)
    flat = 512 * (side // 16) ** 2  # four 2x2 pools, each rounding down
    return convs + flat * 1024 + 1024 + 2 * 1024 + 1024 * classes + classes


def _cifar_resnet_params(n: int, classes: int, projection: bool) -> int:
    """CIFAR ResNet-(6n+2) counted from its layers: bias-free 3x3 convs with BatchNorm, 1x1 conv + BN
    projections where the width doubles (16 -> 32, 32 -> 64) when `projection`, Linear(64, K)."""
    stage = lambda c_in, c: (  # noqa: E731
        _conv(c_in, c) + _conv(c, c) + 4 * c + (n - 1) * (2 * _conv(c, c) + 4 * c)
    )
    shortcuts = (_conv(16, 32, 1) + 2 * 32 + _conv(32, 64, 1) + 2 * 64) if projection else 0
    body = _conv(3, 16) + 2 * 16 + stage(16, 16) + stage(16, 32) + stage(32, 64)
    return body + shortcuts + 64 * classes + classes


@pytest.fixture(scope="module")
def vgg8b_cifar():
    """VGG8b for CIFAR-10, built once (8.9M parameters)."""
    torch.manual_seed(0)
    return build("vgg8b", (3, 32, 32), 10)


def test_vgg8b_has_the_published_parameter_counts(vgg8b_cifar):
    # By hand, CIFAR-10: convs 3456 + 294,912 + 589,824 + 1,179,648 + 2 x 2,359,296 weights, 2176
    # biases, 2 x 2176 BatchNorm; FC 2048 x 1024 + 1024 + BatchNorm1d 2 x 1024; head 1024 x 10 + 10.
    hand = 6_786_432 + 2_176 + 4_352 + 2_097_152 + 1_024 + 2_048 + 10_250
    assert _params(vgg8b_cifar) == hand == _vgg8b_params(3, 32, 10) == 8_903_434
    # The #Params column of Nøkland & Eidnes's tables (anokland/local-loss README), in millions:
    # MNIST 7.3, CIFAR-10 8.9, CIFAR-100 9.0, STL-10 (96 px) 11.5.
    published = {((1, 28, 28), 10): 7.3, ((3, 32, 32), 100): 9.0, ((3, 96, 96), 10): 11.5}
    assert round(_params(vgg8b_cifar) / 1e6, 1) == 8.9
    for (shape, classes), millions in published.items():
        count = _params(build("vgg8b", shape, classes))
        assert count == _vgg8b_params(shape[0], shape[1], classes)
        assert round(count / 1e6, 1) == millions, (shape, classes, count)


def test_resnet110_has_infopros_projection_shortcuts_and_he_et_als_size():
    model = build("resnet110", (3, 32, 32), 10)
    assert _params(model) == _cifar_resnet_params(18, 10, projection=True) == 1_730_714
    # Option A (parameter-free shortcuts) saves the two projections' 2,752 parameters; both are the
    # 1.7M of He et al. 2016's table 6.
    option_a = _params(_cifar_resnet((3, 32, 32), 10, 18, "pad"))
    assert option_a == _cifar_resnet_params(18, 10, projection=False) == 1_730_714 - 2_752
    assert round(_params(model) / 1e6, 1) == round(option_a / 1e6, 1) == 1.7
    # The hand count agrees with the suite's other CIFAR ResNets (resnet32: projection, resnet56: pad).
    assert _params(build("resnet32", (3, 32, 32), 10)) == _cifar_resnet_params(5, 10, True)
    assert _params(build("resnet56", (3, 32, 32), 10)) == _cifar_resnet_params(9, 10, False)
    # InfoPro's and AugLocal's `_make_layer`: a 1x1 conv + BN where stage 2 and stage 3 begin.
    projected = [
        i
        for i, b in enumerate(model.blocks)
        if isinstance(getattr(b, "shortcut", None), nn.Sequential)
    ]
    assert projected == [1 + 18, 1 + 36]
    assert not any(isinstance(m, PadShortcut) for m in model.modules())


def test_vgg8b_blocks_end_on_the_unpooled_conv_maps(vgg8b_cifar):
    model = vgg8b_cifar
    assert len(model.blocks) == 7  # six convs, one FC 1024
    shapes = model.block_output_shapes()
    assert shapes == [
        (128, 32, 32),
        (256, 32, 32),
        (256, 16, 16),
        (512, 16, 16),
        (512, 8, 8),
        (512, 4, 4),
        (1024,),
    ]
    # A pool opens the block after its conv: blocks 2, 4, 5 and the FC block; each conv block ends on
    # its ReLU, so its output is where Nøkland & Eidnes compute the layer's local loss.
    opens = [i for i, b in enumerate(model.blocks) if isinstance(b[0], nn.MaxPool2d)]
    assert opens == [2, 4, 5, 6]
    assert all(isinstance(b[-1], nn.ReLU) for b in model.blocks)
    assert model.block_output_shapes(at="preactivation") == shapes
    assert model.blocks[-1][2].in_features == 512 * 2 * 2 and model.head.in_features == 1024
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    outputs, logits = model.forward_blocks(x, cut=True)
    assert [tuple(h.shape[1:]) for h in outputs] == shapes and logits.shape == (2, 10)
    assert torch.allclose(logits, model(x))


@pytest.mark.parametrize(
    ("arch", "in_shape", "sides"),
    [
        ("vgg8b", (1, 8, 8), [8, 8, 4, 4, 2, 1]),  # the fourth pool would leave 0 px: skipped
        ("vgg8b", (1, 28, 28), [28, 28, 14, 14, 7, 3]),  # MNIST, as their input_dim // 16 = 1
        ("vgg8b", (3, 96, 96), [48, 48, 24, 24, 12, 6]),  # STL-10: the 7x7 stride-2 first conv
        ("resnet110", (1, 8, 8), [8] * 19 + [4] * 18 + [2] * 18),
        ("resnet110", (3, 16, 16), [16] * 19 + [8] * 18 + [4] * 18),
    ],
)
def test_shapes_follow_the_input_size(arch, in_shape, sides):
    model = build(arch, in_shape, 7)
    shapes = model.block_output_shapes()
    assert [s[1] for s in shapes if len(s) == 3] == sides
    assert len(model.blocks) == {"vgg8b": 7, "resnet110": 1 + 54}[arch]
    assert model(torch.zeros(2, *in_shape)).shape == (2, 7)


@pytest.mark.parametrize(("arch", "index"), [("vgg8b", 3), ("resnet110", 20)])
def test_a_blocks_local_loss_reaches_that_block_alone(arch, index):
    # Each block is one gradient-isolated unit: under the cut forward, a loss on block `index`'s output
    # fills gradients in that block only (its residual shortcut and its BatchNorm included).
    torch.manual_seed(0)
    model = build(arch, (1, 8, 8), 10)
    outputs, _ = model.forward_blocks(torch.randn(4, 1, 8, 8), cut=True)
    outputs[index].square().mean().backward()
    for i, block in enumerate(model.blocks):
        grads = [p.grad for p in block.parameters()]
        if i == index:
            # (a conv bias before BatchNorm gets a zero gradient in training mode: not None is the test)
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads), f"{arch}: block {i} got a gradient"
    assert all(p.grad is None for p in model.head.parameters())


def test_vgg8b_structure_keys_take_exactly_the_biases_and_the_fc_norm(vgg8b_cifar):
    no_bias = build("vgg8b", (3, 32, 32), 10, conv_bias=False)
    assert _params(vgg8b_cifar) - _params(no_bias) == 128 + 256 + 256 + 512 + 512 + 512
    no_fc_norm = build("vgg8b", (3, 32, 32), 10, batchnorm_fc=False)
    assert _params(vgg8b_cifar) - _params(no_fc_norm) == 2 * 1024
    assert not any(isinstance(m, nn.BatchNorm1d) for m in no_fc_norm.modules())


@pytest.mark.parametrize("method", ["bp", "dfa"])
@pytest.mark.parametrize("arch", ["vgg8b", "resnet110"])
def test_rules_fill_a_finite_gradient_for_every_parameter(arch, method):
    torch.manual_seed(0)
    rule = discover()[method]()
    model = rule.prepare(build(arch, (1, 8, 8), 5), 5, torch.Generator().manual_seed(0))
    stats = rule.step(model, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(stats["loss"])
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{arch}/{method}: {name}"


def test_both_are_in_the_arch_table_and_in_bench_list(capsys):
    # In ARCHS, every test parametrized over sorted(ARCHS) (tests/test_models.py, test_recipe_keys.py,
    # test_contract.py) covers them with no other edit.
    assert {"vgg8b", "resnet110"} <= set(ARCHS)
    assert main(["list"]) == 0
    archs = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("archs:"))
    assert {"vgg8b", "resnet110"} <= {name.strip() for name in archs.split(":", 1)[1].split(",")}
