"""TensorData: a dataset held as uint8 tensors on the training device, served in normalised batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from bench import distributed


@dataclass
class TensorData:
    """A whole dataset as uint8 images (N x C x H x W) and int64 labels, train and test.

    Kept as uint8 on the device (the airbench way): a batch is indexed, cast and normalised
    there, so loading never waits on the host.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    def __post_init__(self):
        # Normalisation statistics come from the training split only.
        pixels = self.train_x.float().div_(255)
        self.mean = pixels.mean(dim=(0, 2, 3))
        self.std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> TensorData:
        for key in ("train_x", "train_y", "test_x", "test_y", "mean", "std"):
            setattr(self, key, getattr(self, key).to(device))
        return self

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W -> float, scaled to [0, 1] and standardised per channel."""
        return (x.float().div_(255) - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, keep_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled training batches from `generator`; the last partial batch is dropped [suite] unless
        `keep_last` (see `batch_bounds`)."""
        order = torch.randperm(len(self.train_y), generator=generator).to(self.train_y.device)
        for start, stop in batch_bounds(len(order), batch_size, keep_last):
            index = order[start:stop]
            yield self.normalise(self.train_x[index]), self.train_y[index]

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test split in order, every image once."""
        for start in range(0, len(self.test_y), batch_size):
            yield (
                self.normalise(self.test_x[start : start + batch_size]),
                self.test_y[start : start + batch_size],
            )

    def probe_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch of n training images (normalised) and labels for the alignment probe.

        Drawn with a fixed seed (0) from the whole training split: the split is sorted by class, so
        its first n images would all be one class.
        """
        index = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(0))[:n]
        index = index.sort().values.to(self.train_y.device)
        return self.normalise(self.train_x[index]), self.train_y[index]


def batch_bounds(n: int, batch_size: int, keep_last: bool = False) -> list[tuple[int, int]]:
    """(start, stop) of each training batch of an epoch over `n` shuffled images: the full batches, then
    with `keep_last` the remainder, when it holds at least 2 images per process (BatchNorm has no batch
    statistics from one image; under torchrun every process needs its share).
    """
    bounds = [(start, start + batch_size) for start in range(0, n - batch_size + 1, batch_size)]
    rest = n % batch_size
    if keep_last and rest >= 2 * distributed.world_size():
        bounds.append((n - rest, n))
    return bounds


def stratified_split(
    labels: torch.Tensor, test_per_class: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_index, test_index): `test_per_class` random images of every class go to test.

    [suite] The split seed is fixed (0), independent of the run seed, so every run of every
    method is scored on the same test images.
    """
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique(sorted=True):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        test.append(members[:test_per_class])
        train.append(members[test_per_class:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def hold_out(data: TensorData, n: int, seed: int = 0) -> tuple[TensorData, TensorData]:
    """(train, validation): `n` training images held out of `data` (BioTorch holds 5,000 of CIFAR-10's 50,000).

    [suite] The held-out images are a random draw with a fixed seed (0), independent of the run seed,
    so every run of every method is selected on the same images. Both parts normalise with the
    statistics of the remaining training images; validation serves the held-out images as its test
    split (`test_batches`), so the trainer evaluates it as it evaluates the test set.
    """
    if not 0 < n < len(data.train_y):
        raise ValueError(
            f"bad value {n!r} for 'val_split'; accepted: 0 (no validation split) or fewer than the "
            f"{len(data.train_y)} training images of {data.name}"
        )
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed)).to(
        data.train_y.device
    )
    held, kept = order[:n].sort().values, order[n:].sort().values
    train = replace(data, train_x=data.train_x[kept], train_y=data.train_y[kept])
    validation = replace(train, test_x=data.train_x[held], test_y=data.train_y[held])
    return train, validation
