"""Embedded datasets load the real data, split it reproducibly, and serve normalised seeded batches."""

import pytest
import torch

from bench.data import load


@pytest.fixture(scope="module")
def mnist():
    return load("mnist5k")


def test_mnist5k_is_the_real_sample_split_4000_1000_stratified(mnist):
    assert mnist.train_x.shape == (4000, 1, 28, 28) and mnist.test_x.shape == (1000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.uint8 and mnist.train_y.dtype == torch.int64
    assert torch.bincount(mnist.train_y).tolist() == [400] * 10
    assert torch.bincount(mnist.test_y).tolist() == [100] * 10
    # real MNIST: mean pixel about 0.13, dark borders
    assert 0.10 < mnist.mean.item() < 0.16
    assert mnist.train_x[:, :, 0, :].float().mean() < 1
    assert mnist.classes == [str(i) for i in range(10)] and mnist.in_shape == (1, 28, 28)


def test_split_is_fixed_across_loads(mnist):
    again = load("mnist5k")
    assert torch.equal(again.test_x, mnist.test_x) and torch.equal(again.train_y, mnist.train_y)


def test_digits_loads_scaled_to_bytes():
    digits = load("digits")
    assert digits.train_x.shape[1:] == (1, 8, 8) and len(digits.test_y) == 360
    assert digits.train_x.max() == 255 and len(digits.train_y) + len(digits.test_y) == 1797


def test_train_batches_are_seeded_normalised_and_drop_the_remainder(mnist):
    first = list(mnist.train_batches(512, torch.Generator().manual_seed(1)))
    again = list(mnist.train_batches(512, torch.Generator().manual_seed(1)))
    other = list(mnist.train_batches(512, torch.Generator().manual_seed(2)))
    assert len(first) == 7 and all(len(y) == 512 for _, y in first)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][1], other[0][1])
    x = torch.cat([b[0] for b in first])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_test_batches_cover_the_test_split_in_order(mnist):
    ys = torch.cat([y for _, y in mnist.test_batches(300)])
    assert torch.equal(ys, mnist.test_y)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(
        ValueError,
        match="unknown dataset 'mnist7'; known: cifar10, cifar100, digits, fashion_mnist, imagenet, mnist, mnist5k",
    ):
        load("mnist7")
