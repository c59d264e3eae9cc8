"""StreamData: a dataset too large for the device, streamed in uint8 batches with TensorData's interface.

Batches come from an iterable loader (a torchvision DataLoader here, FFCV in ffcv_loader.py), are
moved to the device and normalised there. Every epoch's loader is seeded from the run's generator,
and its iterator is closed when the epoch ends or is abandoned, so no worker outlives its epoch.

Under torchrun both loaders here read only this rank's share of each global training batch (see
bench/distributed.py): the global order is cut into full global batches and rank r decodes the slice
[B*r//W, B*(r+1)//W) of each, the slice one process would keep of the same batch (`rank_share`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from bench import distributed
from bench.data.folder import Split, load_rgb, open_rgb

log = logging.getLogger("bench.data")

CROP_RATIO = (
    224 / 256
)  # evaluation: resize to size / CROP_RATIO, centre crop `size` (the ImageNet recipe)
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class _Head:
    """`data.train_x[:n]` for a stream: the first n training images, decoded the evaluation way."""

    def __init__(self, probe: Callable[[int], torch.Tensor], device):
        self.probe, self.device = probe, device

    def __getitem__(self, index: slice) -> torch.Tensor:
        if (
            not isinstance(index, slice)
            or index.start not in (None, 0)
            or index.step not in (None, 1)
        ):
            raise ValueError(f"a streamed dataset's train_x supports only [:n]; got {index!r}")
        return self.probe(index.stop).to(self.device)


class StreamData:
    """A streamed dataset: name, classes, int64 labels, C x H x W input shape, per-channel mean/std in [0, 1].

    train_loader(batch_size, seed) and test_loader(batch_size) return iterables of (uint8 N x C x H x W,
    int64 N) batches; probe(n) returns the first n training images (uint8, no augmentation).

    rank_share: the train loader serves this rank's share of every global batch of `batch_size`
    (`distributed.bounds(batch_size)` images; all of it in one process) and only full global batches, so
    the trainer takes the batches as they are and `batch_size` as the global size. False: it serves
    whole global batches, and every rank slices its share (`distributed.shard`).
    """

    def __init__(
        self,
        name: str,
        classes: list[str],
        train_y: torch.Tensor,
        test_y: torch.Tensor,
        in_shape: tuple[int, int, int],
        mean: torch.Tensor,
        std: torch.Tensor,
        train_loader: Callable[[int, int], Batches],
        test_loader: Callable[[int], Batches],
        probe: Callable[[int], torch.Tensor],
        rank_share: bool = False,
    ):
        self.rank_share = rank_share
        self.name, self.classes, self.train_y, self.test_y = name, classes, train_y, test_y
        self._in_shape, self.mean, self.std = tuple(in_shape), mean, std
        self._train_loader, self._test_loader, self._probe = train_loader, test_loader, probe
        self.device = torch.device("cpu")

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self._in_shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def probe_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The alignment probe: the first n training images (normalised) and labels.

        Streams decode files in folder order, so this batch may cover few classes.
        """
        return self.normalise(self.train_x[:n]), self.train_y[:n]

    @property
    def train_x(self) -> _Head:
        return _Head(self._probe, self.device)

    def to(self, device: torch.device | str) -> StreamData:
        self.device = torch.device(device)
        for key in ("train_y", "test_y", "mean", "std"):
            setattr(self, key, getattr(self, key).to(self.device))
        return self

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W -> float, scaled to [0, 1] and standardised per channel."""
        return (x.float().div_(255) - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, keep_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented, normalised training batches; order seeded from `generator`, remainder dropped
        (`keep_last` is refused: a stream's loaders serve full global batches only).

        With `rank_share`, under torchrun: this rank's share of each global batch of `batch_size`."""
        if keep_last:
            raise ValueError(
                f"'keep_last_batch' needs a dataset held on the device; {self.name} streams "
                "its full batches only"
            )
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        yield from self._serve(self._train_loader(batch_size, seed))

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation split in order, every image once."""
        yield from self._serve(self._test_loader(batch_size))

    def _serve(self, loader: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        iterator = iter(loader)
        try:
            for x, y in iterator:
                x = x.to(self.device, non_blocking=True)
                yield self.normalise(x), y.to(self.device, non_blocking=True).long().view(-1)
        finally:
            close(iterator)


def close(iterator) -> None:
    """Stop a loader iterator's workers or threads now (FFCV's EpochIterator, torch's multiprocess iterator)."""
    if hasattr(iterator, "close"):
        iterator.close()
    elif hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


class FileImages(torch.utils.data.Dataset):
    """Images of one Split through a torchvision transform: (uint8 C x H x W, label); errors name the file.

    Item `index`, or `(seed, index)`: the transform's randomness then comes from a generator seeded by
    (seed, index) alone, so an image's crop and flip depend neither on the worker that decodes it nor
    on the number of workers or ranks.
    """

    def __init__(self, split: Split, transform):
        self.paths, self.labels, self.transform = split.paths, split.labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        if not isinstance(item, tuple):
            return self.transform(open_rgb(self.paths[item])), self.labels[item]
        seed, index = item
        image = open_rgb(self.paths[index])
        with torch.random.fork_rng(
            devices=[]
        ):  # torchvision's transforms draw from torch's global generator
            torch.manual_seed(
                int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])
            )
            return self.transform(image), self.labels[index]


class ShareSampler(torch.utils.data.Sampler):
    """A batch sampler of one training epoch: the global order `torch.randperm(n)` seeded by `seed`, cut
    into full global batches of `batch_size` (remainder dropped); yields this rank's contiguous share of
    each (`distributed.share_of_batches`) as (seed, index) items for FileImages."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.share = len(range(*distributed.bounds(batch_size, rank, world)))
        if batch_size < world:  # some rank's share would be empty
            raise ValueError(
                f"bad value {batch_size} for 'batch_size'; accepted: at least the {world} processes"
            )

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed))
        mine = distributed.share_of_batches(order, self.batch_size, self.rank, self.world).tolist()
        for start in range(0, len(mine), self.share):
            yield [(self.seed, index) for index in mine[start : start + self.share]]


def worker_start_method(workers: int) -> str | None:
    """How DataLoader workers start: `forkserver` under torchrun, else torch's default (fork on Linux).

    A rank runs gloo's communication threads; a worker forked from it can inherit a lock one of them
    held and hang before its first batch (seen in CI: a rank waiting in evaluation for a worker stuck
    in a futex right after fork). The fork server is a clean process to fork workers from.
    """
    return "forkserver" if workers > 0 and distributed.world_size() > 1 else None


def folder_transforms(size: int):
    """(train, eval) transforms to uint8 `size` x `size`: random-resized-crop + flip; resize + centre crop."""
    from torchvision import transforms as T

    train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()])
    test = T.Compose([T.Resize(round(size / CROP_RATIO)), T.CenterCrop(size), T.PILToTensor()])
    return train, test


def folder_stream(name: str, train: Split, test: Split, size: int, workers: int) -> StreamData:
    """An image folder streamed through DataLoaders (`workers` processes), at `size` x `size`.

    Training batches are this rank's share of each global batch (ShareSampler; `rank_share`)."""
    train_tf, test_tf = folder_transforms(size)
    train_set, test_set = FileImages(train, train_tf), FileImages(test, test_tf)

    def train_loader(batch_size: int, seed: int):
        # Every rank draws the same global order and reads its share of each global batch; each image's
        # augmentation is seeded by (seed, index). The generator keeps worker seeding off torch's global one.
        sampler = ShareSampler(
            len(train_set), batch_size, seed, distributed.rank(), distributed.world_size()
        )
        return torch.utils.data.DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=workers,
            generator=torch.Generator().manual_seed(seed),
            multiprocessing_context=worker_start_method(workers),
        )

    def test_loader(batch_size: int):
        return torch.utils.data.DataLoader(
            test_set,
            batch_size,
            num_workers=workers,
            multiprocessing_context=worker_start_method(workers),
        )

    def probe(n: int) -> torch.Tensor:
        return torch.stack([test_tf(open_rgb(path)) for path in train.paths[:n]])

    mean, std = sample_stats(train, size)
    return StreamData(
        name,
        list(train.classes),
        torch.tensor(train.labels),
        torch.tensor(test.labels),
        (3, size, size),
        mean,
        std,
        train_loader,
        test_loader,
        probe,
        rank_share=True,
    )


def sample_stats(split: Split, size: int, count: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) in [0, 1] estimated on `count` training images drawn with a fixed seed (0)."""
    pick = torch.randperm(len(split.files), generator=torch.Generator().manual_seed(0))[:count]
    pixels = torch.stack(
        [torch.from_numpy(np.array(load_rgb(split.paths[i], size))) for i in pick.tolist()]
    )
    pixels = pixels.permute(3, 0, 1, 2).reshape(3, -1).double().div_(255)
    return pixels.mean(dim=1).float(), pixels.std(dim=1).float().clamp_min(1e-6)
