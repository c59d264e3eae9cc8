"""BioTorch's networks added in issue 29: the CIFAR ResNets 44 and 1202 (He et al. 2016's 6n+2) and LeNet for
MNIST; parameter counts pinned, forwards checked against a reference (BioTorch's own where it imports)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.models import build
from bench.models.resnet import PadShortcut


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "n", "params", "published"),
    [("resnet44", 7, 658_586, 0.66e6), ("resnet1202", 200, 19_421_274, 19.4e6)],
)
def test_cifar_resnets_are_6n_plus_2_with_option_a_shortcuts_and_he_et_als_counts(
    arch, n, params, published
):
    model = build(arch, (3, 32, 32), 10)
    assert _params(model) == params
    assert round(params / 1e6, 2 if published < 1e6 else 1) == published / 1e6  # He et al. table 6
    assert len(model.blocks) == 1 + 3 * n  # the stem, then n residual blocks a stage
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 6 * n + 2  # 6n+2 weighted layers: the convs and the head
    # Option A where the width doubles (BioTorch's IdentityPadding): two parameter-free shortcuts.
    assert sum(isinstance(m, PadShortcut) for m in model.modules()) == 2
    assert all(conv.kernel_size == (3, 3) for conv in convs)


def _lenet5_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LeNet-5 as BioTorch's LeNetMNIST computes it on a 32 px frame, from `model`'s weights."""
    c1, c2, c3 = (m for m in model.modules() if isinstance(m, nn.Conv2d))
    f1, head = model.blocks[3][1], model.head
    pad = (32 - x.shape[-1]) // 2
    h = F.max_pool2d(F.relu(F.conv2d(F.pad(x, (pad,) * 4), c1.weight, c1.bias)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, c2.weight, c2.bias)), 2)
    h = F.relu(F.conv2d(h, c3.weight, c3.bias)).flatten(1)
    return F.linear(F.relu(F.linear(h, f1.weight, f1.bias)), head.weight, head.bias)


@pytest.mark.parametrize("side", [28, 32])
def test_lenet_on_gray_mnist_sized_input_is_lenet5_on_its_32px_frame(side):
    torch.manual_seed(0)
    model = build("lenet", (1, side, side), 10)
    assert _params(model) == 61_706  # BioTorch's LeNetMNIST
    assert model.block_output_shapes() == [(6, 14, 14), (16, 5, 5), (120, 1, 1), (84,)]
    x = torch.randn(3, 1, side, side)
    torch.testing.assert_close(model(x), _lenet5_reference(model, x))


def test_lenet_stays_lenetcifar_on_colour_and_on_small_gray_input():
    assert _params(build("lenet", (3, 32, 32), 10)) == 128_842  # LeNetCIFAR
    assert build("lenet", (3, 28, 28), 10).block_output_shapes()[-1] == (256,)
    assert build("lenet", (1, 27, 27), 10).block_output_shapes()[-1] == (256,)  # under 28 px
    assert build("lenet", (1, 8, 8), 10).block_output_shapes()[-1] == (256,)  # digits


def test_lenet_on_larger_gray_input_keeps_the_whole_map():
    model = build("lenet", (1, 64, 48), 5)
    assert model.block_output_shapes()[2] == (120, 9, 5)
    assert model.blocks[3][1].in_features == 120 * 9 * 5
    assert model(torch.zeros(2, 1, 64, 48)).shape == (2, 5)


def test_lenet_mnist_takes_the_structure_keys():
    model = build("lenet", (1, 28, 28), 10, batchnorm=True, batchnorm_fc=False, conv_bias=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


# --- the real BioTorch, where it is installed (pip install --no-deps biotorch) -----------------------


@pytest.mark.parametrize("arch", ["resnet20", "resnet44", "resnet56", "resnet1202"])
def test_cifar_resnet_parameter_counts_equal_biotorchs(arch):
    small_resnet = pytest.importorskip(
        "biotorch.models.small_resnet", reason="biotorch is not installed"
    )
    assert _params(build(arch, (3, 32, 32), 10)) == _params(getattr(small_resnet, arch)())


def test_lenet_on_28px_equals_biotorchs_lenet_mnist_on_the_padded_image():
    le_net = pytest.importorskip("biotorch.models.le_net", reason="biotorch is not installed")
    torch.manual_seed(0)
    theirs = le_net.le_net_mnist()
    ours = build("lenet", (1, 28, 28), 10)
    layers = lambda m: [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]  # noqa: E731
    for mine, their in zip(layers(ours), layers(theirs), strict=True):
        mine.load_state_dict(their.state_dict())
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(ours(x), theirs(F.pad(x, (2, 2, 2, 2))))
