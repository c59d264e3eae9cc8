"""The `imagenet` dataset: FFCV .beton files streamed by ffcv's Loader, else the image folder through torchvision.

Training: random-resized-crop (scale 0.08-1, ratio 3/4-4/3) and horizontal flip, decoded straight to
size x size; evaluation: centre crop of 224/256 of the shorter side, resized to size x size.
Reproducibility [suite]: the batch order is drawn from the run's generator, but ffcv's augmentation
draws from numpy inside its numba worker threads, which is not reproducible across workers or runs
(ffcv upstream issue 392): the same seed gives the same batches' images, not the same crops.
When ffcv is not installed, the torchvision ImageFolder path serves the same splits (warned once).

Under torchrun each rank's training loader decodes only its share of every global batch: the slice
[B*r//W, B*(r+1)//W) of the global batch one process would see (RankShareOrder). ffcv's own
`distributed=True` is not used; see RankShareOrder for what it does in ffcv 0.0.3rc1 and why.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch

from bench import distributed
from bench.data.beton.read import iter_closing, read_labels
from bench.data.beton.write import beton_path, import_ffcv
from bench.data.folder import read_tree, split_dirs
from bench.data.options import DataOptions
from bench.data.stream import CROP_RATIO, StreamData, folder_stream

log = logging.getLogger("bench.data")

DEFAULT_SIZE = 224
IMAGENET_MEAN = (
    0.485,
    0.456,
    0.406,
)  # [published] torchvision's ImageNet statistics, as ffcv-imagenet uses
IMAGENET_STD = (0.229, 0.224, 0.225)


def ffcv_available() -> bool:
    try:
        import_ffcv()
    except ImportError:
        return False
    return True


@functools.cache
def _warn_fallback(name: str) -> None:
    log.warning(
        "ffcv is not installed: %s streams from its image folder through torchvision (slower); "
        "run scripts/install_system_deps.sh for the FFCV path",
        name,
    )


def load_imagenet(
    data_dir: Path | None, options: DataOptions, name: str = "imagenet"
) -> StreamData:
    """Dataset `name` from DATA_DIR/ffcv/<name>/*.beton through FFCV, or from DATA_DIR/<name> without ffcv."""
    if data_dir is None:
        raise ValueError(
            f"dataset {name!r} needs a data directory (--data-dir DIR or the config's data_dir) "
            f"holding DIR/{name}/train and val/, and its .beton files in DIR/ffcv/{name}/"
        )
    size = options.image_size or DEFAULT_SIZE
    if not ffcv_available():
        _warn_fallback(name)
        train, test = read_tree(Path(data_dir) / name)
        return folder_stream(name, train, test, size, options.workers)
    paths = {
        split: beton_path(data_dir, name, split, options.beton)
        for split in ("train", "val", "test")
    }
    eval_split = "val" if paths["val"].is_file() or not paths["test"].is_file() else "test"
    for split in ("train", eval_split):
        if not paths[split].is_file():
            raise FileNotFoundError(
                f"{paths[split]} not found; write it from {Path(data_dir) / name / split} with "
                f"`python -m bench beton --dataset {name} --split {split} --data-dir {data_dir}` "
                "(the pipeline's beton rule does this)"
            )
    return beton_stream(
        name,
        paths["train"],
        paths[eval_split],
        size,
        options.workers,
        _class_names(Path(data_dir) / name),
    )


def _class_names(tree: Path) -> list[str] | None:
    """Class folder names of the source tree when it is present (a .beton stores labels only)."""
    try:
        return sorted(
            p.name
            for p in split_dirs(tree)[0].iterdir()
            if p.is_dir() and not p.name.startswith(".")
        )
    except FileNotFoundError:
        return None


def beton_stream(
    name: str,
    train_path: Path,
    test_path: Path,
    size: int,
    workers: int,
    classes: list[str] | None = None,
) -> StreamData:
    """StreamData over two .beton files (fields image, label) at `size` x `size`, `workers` ffcv threads."""
    train_y, test_y = read_labels(train_path), read_labels(test_path)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    if classes is None or len(classes) != num_classes:
        classes = [str(i) for i in range(num_classes)]
    train_loaders, test_loaders = {}, {}

    def train_loader(batch_size: int, seed: int):
        key = batch_size, distributed.rank(), distributed.world_size()
        if key not in train_loaders:
            train_loaders[key] = make_loader(
                train_path, batch_size, size, workers, train=True, rank=key[1], world=key[2]
            )
        loader = train_loaders[key]
        # The run's generator decides the order: it permutes with seed + epoch, so pin its epoch to 0.
        loader.seed = loader.traversal_order.seed = seed
        loader.next_epoch = 0
        return iter_closing(loader)

    def test_loader(batch_size: int):
        if batch_size not in test_loaders:
            test_loaders[batch_size] = make_loader(
                test_path, batch_size, size, workers, train=False
            )
        return iter_closing(test_loaders[batch_size])

    def probe(n: int) -> torch.Tensor:
        # Loaders are kept: each holds numba-compiled code, which numba's finalizer mishandles when freed.
        if ("probe", n) not in test_loaders:
            test_loaders["probe", n] = make_loader(
                train_path, n, size, workers, train=False, indices=np.arange(min(n, len(train_y)))
            )
        batches = iter_closing(test_loaders["probe", n])
        try:
            return next(batches)[0].clone()
        finally:
            batches.close()

    return StreamData(
        name,
        classes,
        train_y,
        test_y,
        (3, size, size),
        torch.tensor(IMAGENET_MEAN),
        torch.tensor(IMAGENET_STD),
        train_loader,
        test_loader,
        probe,
        rank_share=True,
    )


class RankShareOrder:
    """The training order of rank `rank` of `world`: ffcv's RANDOM order (numpy's default_rng(seed +
    epoch) permutation of the loader's indices, as one process walks it) cut into full global batches of
    `batch_size`, and of each the contiguous slice [B*r//W, B*(r+1)//W) (`distributed.share_of_batches`).
    The loader reads it in batches of that slice's size, so rank r decodes exactly what
    `distributed.shard` would keep of the global batch, and one process (world 1) walks ffcv's order.

    Why not ffcv's `distributed=True` (checked in ffcv 0.0.3rc1, traversal_order/random.py): it wraps
    torch's DistributedSampler(indices, shuffle=True, seed=<the loader's seed at construction>,
    drop_last=False), which (1) permutes with torch.randperm(n, seed + epoch), not the numpy permutation
    of one process; (2) pads the permutation with its first samples to a multiple of W and gives rank r
    positions r, r + W, r + 2W, ...: a strided, not contiguous, share; (3) needs one batch size per rank,
    so B a multiple of W, and its drop_last counts per rank: floor(ceil(n / W) / (B / W)) steps, which can
    exceed one process's floor(n / B) and then repeat padded images; (4) keeps its own copy of the seed,
    so pinning `loader.seed` / `traversal_order.seed` (how the run's generator decides each epoch's
    order, with next_epoch pinned to 0) no longer changes anything: every epoch would replay one order.
    """

    def __init__(self, loader, batch_size: int, rank: int, world: int):
        self.loader, self.indices, self.seed = loader, loader.indices, loader.seed
        self.batch_size, self.rank, self.world = batch_size, rank, world

    def sample_order(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng(self.seed + epoch).permutation(self.indices)
        return distributed.share_of_batches(order, self.batch_size, self.rank, self.world)


def make_loader(
    path: Path,
    batch_size: int,
    size: int,
    workers: int,
    train: bool,
    indices=None,
    rank: int = 0,
    world: int = 1,
):
    """An ffcv Loader over `path`: (uint8 N x 3 x size x size, int64 N) batches, augmented when `train`.

    When `train`, batch_size is the global batch and the loader serves rank `rank`'s share of each full
    global batch (RankShareOrder): `distributed.bounds(batch_size, rank, world)` images a batch.
    """
    import_ffcv()
    from ffcv.fields.decoders import (
        CenterCropRGBImageDecoder,
        IntDecoder,
        RandomResizedCropRGBImageDecoder,
    )
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, Squeeze, ToTensor, ToTorchImage

    if train:
        image = [
            RandomResizedCropRGBImageDecoder((size, size)),
            RandomHorizontalFlip(),
            ToTensor(),
            ToTorchImage(),
        ]
    else:
        image = [
            CenterCropRGBImageDecoder((size, size), ratio=CROP_RATIO),
            ToTensor(),
            ToTorchImage(),
        ]
    label = [IntDecoder(), ToTensor(), Squeeze(1)]
    share = len(range(*distributed.bounds(batch_size, rank, world))) if train else batch_size
    if train and batch_size < world:  # some rank's share would be empty
        raise ValueError(
            f"bad value {batch_size} for 'batch_size'; accepted: at least the {world} processes"
        )
    loader = Loader(
        str(path),
        batch_size=share,
        num_workers=max(1, workers),
        indices=indices,
        order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
        drop_last=train,
        os_cache=True,
        pipelines={"image": image, "label": label},
    )
    if train:
        loader.traversal_order = RankShareOrder(loader, batch_size, rank, world)
        loader.first_traversal_order = (
            loader.next_traversal_order()
        )  # len(loader) counts its batches
    return loader
