"""Architectures: shapes for any input size, the block structure, clear errors."""

import pytest
import torch

from bench.models import ARCHS, BlockNet, build, convolutional

# resnet1202 (601 blocks) only at 8x8: at 32x32 this test alone takes a minute on two cores; its builder
# is resnet20's, checked at every shape (tests/test_archs_biotorch.py counts its parameters).
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
CASES = [(a, s) for a in sorted(ARCHS) for s in SHAPES if a != "resnet1202" or s == SHAPES[0]]


@pytest.mark.parametrize(("arch", "in_shape"), CASES)
def test_build_gives_blocknet_with_logits_per_class(arch, in_shape):
    model = build(arch, in_shape, 7)
    assert isinstance(model, BlockNet) and len(model.blocks) >= 3
    logits = model(torch.zeros(2, *in_shape))
    assert logits.shape == (2, 7)
    shapes = model.block_output_shapes()
    outputs, cut_logits = model.forward_blocks(torch.zeros(2, *in_shape), cut=True)
    assert [tuple(h.shape[1:]) for h in outputs] == shapes
    assert torch.equal(cut_logits, logits)
    assert convolutional(arch) == any(
        isinstance(m, torch.nn.Conv2d) for m in model.modules()
    )  # the declared fact


def test_smallconv_is_the_reference_network():
    model = build("smallconv", (3, 32, 32), 10)
    assert model.block_output_shapes() == [(32, 16, 16), (64, 8, 8), (128, 2, 2), (512,)]
    assert model.head.in_features == 512 and model.head.out_features == 10


def test_mlp3_has_three_hidden_layers():
    model = build("mlp3", (1, 28, 28), 10)
    linears = [m for m in model.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and linears[0].in_features == 784


def test_cut_forward_stops_gradient_between_blocks():
    model = build("mlp3", (1, 8, 8), 10)
    outputs, _ = model.forward_blocks(torch.randn(4, 1, 8, 8), cut=True)
    outputs[-1].sum().backward()
    assert model.blocks[0][1].weight.grad is None
    assert model.blocks[-1][0].weight.grad is not None


def test_unknown_arch_names_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown arch 'resnet9'; known: " + ", ".join(sorted(ARCHS))
    ):
        build("resnet9", (1, 8, 8), 10)
