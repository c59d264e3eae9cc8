"""The block-structured families (vgg13, resnets, mobilenetv1, lenet): shapes, counts, every rule runs."""

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.layers import svd_layers
from bench.layers.svd.factored import convert_to_svd
from bench.method import discover
from bench.models import build
from bench.models.mobilenet import mobilenetv1
from bench.models.resnet import BasicBlock, PadShortcut

NEW = ["mobilenetv1", "resnet18", "resnet32", "vgg13", "lenet", "resnet20"]
DEEP = ["resnet56"]  # 55 convs: tested on small inputs only
# Blocks per arch: vgg13 one per conv; resnets stem + residual blocks; mobilenetv1 stem + 13 separable;
# lenet one per hidden conv or FC.
BLOCKS = {
    "vgg13": 10,
    "resnet32": 1 + 15,
    "resnet18": 1 + 8,
    "mobilenetv1": 1 + 13,
    "lenet": 4,
    "resnet20": 1 + 9,
    "resnet56": 1 + 27,
}


def _params(model):
    return sum(p.numel() for p in model.parameters())


SHAPE_CASES = [(a, s) for a in NEW for s in [(1, 8, 8), (3, 16, 16), (3, 32, 32)]] + [
    (a, (1, 8, 8)) for a in DEEP
]


@pytest.mark.parametrize(
    ("arch", "in_shape"), SHAPE_CASES, ids=[f"{a}-{'x'.join(map(str, s))}" for a, s in SHAPE_CASES]
)
def test_arch_gives_logits_and_block_shapes_match_forward(arch, in_shape):
    torch.manual_seed(0)
    model = build(arch, in_shape, 7)
    assert len(model.blocks) == BLOCKS[arch]
    x = torch.randn(3, *in_shape)
    model.eval()  # BN in eval mode so the two forwards are comparable
    logits = model(x)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    outputs, cut_logits = model.forward_blocks(x, cut=True)
    assert [tuple(h.shape[1:]) for h in outputs] == model.block_output_shapes()
    assert torch.allclose(cut_logits, logits)


def test_parameter_counts_match_the_published_networks():
    # He et al. 2016: ResNet-32 has 0.46M (option A); the two 1x1 projections add 2,752.
    assert _params(build("resnet32", (3, 32, 32), 10)) == 464_154 + 16 * 32 + 32 * 64 + 2 * (
        32 + 64
    )
    # torchvision resnet18 and the ImageNet MobileNetV1 1.0 (trainable) with 1000 classes.
    assert _params(build("resnet18", (3, 224, 224), 1000)) == 11_689_512
    assert _params(build("mobilenetv1", (3, 224, 224), 1000)) == 4_231_976


def _biotorch_resnet_params(n: int, num_classes: int = 10) -> int:
    """Parameters of BioTorch's CIFAR ResNet-(6n+2) (jsalbert/biotorch `biotorch/models/small_resnet.py`)
    counted from its layer list: bias-free 3x3 convs, BatchNorm (weight, bias) after each, option-A
    shortcuts (no parameters), Linear(64, K)."""
    conv, bn = (lambda c_in, c_out: 9 * c_in * c_out), (lambda c: 2 * c)
    stage = lambda c_in, c: (
        conv(c_in, c) + conv(c, c) + 2 * bn(c) + (n - 1) * (2 * conv(c, c) + 2 * bn(c))
    )
    return (
        conv(3, 16)
        + bn(16)
        + stage(16, 16)
        + stage(16, 32)
        + stage(32, 64)
        + 64 * num_classes
        + num_classes
    )


def test_biotorch_cifar_nets_have_biotorch_parameter_counts():
    # The hand count reproduces the option-A ResNet-32 figure above (He et al. 2016: 0.46M) ...
    assert _biotorch_resnet_params(5) == 464_154
    # ... and gives BioTorch's ResNet-20 and ResNet-56 (its small_resnet.py docstring: 0.27M and 0.85M).
    assert _params(build("resnet20", (3, 32, 32), 10)) == _biotorch_resnet_params(3) == 269_722
    assert _params(build("resnet56", (3, 32, 32), 10)) == _biotorch_resnet_params(9) == 853_018
    # BioTorch's LeNetCIFAR (`biotorch/models/le_net.py`): convs 3x3 with bias 3->32, 32->64, 64->128,
    # Linear 128->256, Linear 256->10.
    lenet = (
        9 * 3 * 32 + 32 + 9 * 32 * 64 + 64 + 9 * 64 * 128 + 128 + 128 * 256 + 256 + 256 * 10 + 10
    )
    assert _params(build("lenet", (3, 32, 32), 10)) == lenet == 128_842


def test_option_a_shortcut_subsamples_and_zero_pads_the_channels():
    x = torch.randn(2, 16, 5, 5)
    out = PadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 3, 3)
    assert torch.equal(
        out[:, 8:24], x[:, :, ::2, ::2]
    )  # BioTorch's IdentityPadding: planes // 4 each side
    assert not out[:, :8].any() and not out[:, 24:].any()
    with pytest.raises(ValueError, match="unknown shortcut 'c'; known: projection, pad"):
        BasicBlock(16, 32, 2, shortcut="c")


def test_biotorch_resnets_pad_where_the_width_doubles_and_keep_resnet32_projections():
    r20 = build("resnet20", (3, 32, 32), 10)
    assert [
        i for i, b in enumerate(r20.blocks) if isinstance(getattr(b, "shortcut", None), PadShortcut)
    ] == [4, 7]
    assert not any(m.kernel_size == (1, 1) for m in r20.modules() if isinstance(m, nn.Conv2d))
    assert r20.block_output_shapes() == [(16, 32, 32)] * 4 + [(32, 16, 16)] * 3 + [(64, 8, 8)] * 3
    r56 = build("resnet56", (3, 32, 32), 10)
    assert [
        i for i, b in enumerate(r56.blocks) if isinstance(getattr(b, "shortcut", None), PadShortcut)
    ] == [10, 19]
    r32 = build("resnet32", (3, 32, 32), 10)
    assert not any(isinstance(m, PadShortcut) for m in r32.modules())


def test_lenet_is_biotorchs_unpadded_net_on_cifar_and_pads_small_inputs():
    def paddings(model):
        return [m.padding for m in model.modules() if isinstance(m, nn.Conv2d)]

    cifar = build("lenet", (3, 32, 32), 10)
    # BioTorch's map sides: 32 -> conv 30 -> pool 15 -> conv 13 -> pool 6 -> conv 4 -> global average pool.
    assert paddings(cifar) == [(0, 0)] * 3
    assert cifar.block_output_shapes() == [(32, 15, 15), (64, 6, 6), (128, 1, 1), (256,)]
    assert paddings(build("lenet", (3, 18, 18), 10)) == [(0, 0)] * 3  # the smallest side they fit
    assert build("lenet", (3, 18, 18), 10).block_output_shapes()[1] == (64, 3, 3)
    side17, digits = build("lenet", (1, 17, 17), 10), build("lenet", (1, 8, 8), 10)
    assert paddings(side17) == paddings(digits) == [(1, 1)] * 3
    assert digits.block_output_shapes() == [(32, 4, 4), (64, 2, 2), (128, 1, 1), (256,)]


def test_shapes_on_cifar_follow_the_reference_downsampling():
    assert build("vgg13", (3, 32, 32), 10).block_output_shapes()[1::2] == [
        (64, 16, 16),
        (128, 8, 8),
        (256, 4, 4),
        (512, 2, 2),
        (512, 1, 1),
    ]
    r32 = build("resnet32", (3, 32, 32), 10).block_output_shapes()
    assert (
        r32[0] == (16, 32, 32)
        and r32[5] == (16, 32, 32)
        and r32[6] == (32, 16, 16)
        and r32[-1] == (64, 8, 8)
    )
    assert build("resnet18", (3, 64, 64), 10).block_output_shapes()[0::2] == [
        (64, 16, 16),
        (64, 16, 16),
        (128, 8, 8),
        (256, 4, 4),
        (512, 2, 2),
    ]
    assert build("mobilenetv1", (3, 32, 32), 10).block_output_shapes()[-1] == (1024, 2, 2)


def test_vgg13_skips_pools_on_tiny_inputs():
    shapes = build("vgg13", (1, 8, 8), 10).block_output_shapes()
    assert [s[1] for s in shapes] == [8, 4, 4, 2, 2, 1, 1, 1, 1, 1]


def test_mobilenetv1_width_scales_every_channel_count():
    full = build("mobilenetv1", (3, 16, 16), 10).block_output_shapes()
    half = mobilenetv1((3, 16, 16), 10, width=0.5).block_output_shapes()
    assert [h[0] * 2 for h in half] == [f[0] for f in full]
    with pytest.raises(ValueError, match="bad width 0"):
        mobilenetv1((3, 16, 16), 10, width=0)


def test_svd_conversion_leaves_depthwise_convs_dense():
    model = build("mobilenetv1", (3, 16, 16), 10)
    converted, dense = convert_to_svd(model.blocks, 1.0)
    assert len(dense) == 13 and len(converted) == 1 + 13  # stem + every pointwise conv
    depthwise = [m for m in model.blocks.modules() if isinstance(m, nn.Conv2d)]
    assert len(depthwise) == 13 and all(m.groups == m.in_channels > 1 for m in depthwise)


def test_svd_conversion_covers_resnet_projection_shortcuts():
    model = build("resnet32", (3, 16, 16), 10)
    converted, dense = convert_to_svd(model.blocks, 1.0)
    assert dense == [] and sum(name.endswith("shortcut.0") for name in converted) == 2
    assert not any(type(m) is nn.Conv2d for m in model.blocks.modules())


def test_ssa_aligns_the_residual_branch_output_conv():
    model = build("resnet32", (3, 16, 16), 10)
    rule = discover()["ssa"]()
    rule.prepare(model, 10, torch.Generator().manual_seed(0))
    assert rule.out_layers[0] is model.blocks[0][0]
    assert all(rule.out_layers[i] is model.blocks[i].conv2 for i in range(1, len(model.blocks)))


@pytest.mark.parametrize("method", ["bp", "dfa", "ssa", "svd_bp"])
@pytest.mark.parametrize("arch", NEW + DEEP)
def test_every_rule_fills_a_finite_gradient_for_every_parameter(arch, method):
    torch.manual_seed(0)
    in_shape = (1, 8, 8) if arch in DEEP else (3, 16, 16)
    model = build(arch, in_shape, 5)
    rule = discover()[method]()
    model = rule.prepare(model, 5, torch.Generator().manual_seed(0))
    x, y = torch.randn(4, *in_shape), torch.tensor([0, 1, 2, 3])
    stats = rule.step(model, x, y)
    assert torch.isfinite(stats["loss"])
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{arch}/{method}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"{arch}/{method}: non-finite gradient for {name}"
    if method in ("ssa", "svd_bp"):  # every groups=1 conv and Linear was factorised
        assert not any(
            type(m) in (nn.Linear, nn.Conv2d) and getattr(m, "groups", 1) == 1
            for m in model.blocks.modules()
        )
        assert len(svd_layers(model.blocks)) > 0


# BioTorch's networks at shapes they run cheaply on (resnet56: 55 convs, so 8x8).
BIOTORCH_SHAPES = {"lenet": (3, 32, 32), "resnet20": (3, 16, 16), "resnet56": (1, 8, 8)}


@pytest.mark.parametrize("method", sorted(discover()))
@pytest.mark.parametrize("arch", sorted(BIOTORCH_SHAPES))
def test_every_discovered_rule_fills_a_finite_gradient_on_biotorchs_networks(arch, method):
    torch.manual_seed(0)
    in_shape = BIOTORCH_SHAPES[arch]
    rule = discover()[method]()
    model = rule.prepare(build(arch, in_shape, 5), 5, torch.Generator().manual_seed(0))
    stats = rule.step(model, torch.randn(4, *in_shape), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(stats["loss"])
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{arch}/{method}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"{arch}/{method}: non-finite gradient for {name}"


def test_resnet32_ssa_trains_one_epoch_on_digits(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--arch", "resnet32", "--method", "ssa", "--seed", "0"]
    assert main([*args, "--out", str(out), "--set", "epochs=1"]) == 0
    assert (out / "record.json").is_file()


@pytest.mark.parametrize("arch", ["mlp3", "smallconv", "lenet"])
def test_batchnorm_option_adds_one_norm_before_each_hidden_relu(arch):
    plain, normed = build(arch, (3, 32, 32), 10), build(arch, (3, 32, 32), 10, batchnorm=True)
    norms = [
        m for m in normed.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
    ]
    assert len(norms) == len(normed.blocks) and not any(
        "BatchNorm" in type(m).__name__ for m in plain.modules()
    )
    for block in normed.blocks:
        names = [type(m).__name__ for m in block]
        assert names[names.index("ReLU") - 1].startswith("BatchNorm")
    assert plain.block_output_shapes() == normed.block_output_shapes()


def test_batchnorm_option_leaves_an_arch_that_has_it_as_it_is():
    plain, asked = build("vgg13", (3, 32, 32), 10), build("vgg13", (3, 32, 32), 10, batchnorm=True)
    assert [type(m) for m in asked.modules()] == [type(m) for m in plain.modules()]
