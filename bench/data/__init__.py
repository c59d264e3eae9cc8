"""Datasets by name: `load(name, device, data_dir, options)` returns a TensorData (or a StreamData) on `device`.

Names: the registered ones below, and any image folder under the data directory by its folder name
(`cifar10-jpeg` -> DATA_DIR/cifar10-jpeg/{train,test|val}/<class>/<image>; see imagefolder.py), spelled
as FOLDER_NAME allows: a folder named otherwise is refused with that rule, not called missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from bench.data.augment import Augment, AugmentedData
from bench.data.cifar import CIFAR10, CIFAR100, load_cifar
from bench.data.embedded import digits, mnist5k
from bench.data.ffcv_loader import load_imagenet
from bench.data.imagefolder import load_imagefolder
from bench.data.mnist import FASHION_MNIST, MNIST, load_mnist
from bench.data.options import BetonSpec, DataOptions
from bench.data.stream import StreamData
from bench.data.tensors import TensorData

# One line per dataset: name -> loader(data_dir, options) -> TensorData or StreamData (on the CPU).
DATASETS: dict[str, Callable[[Path | None, DataOptions], TensorData | StreamData]] = {
    "cifar10": lambda data_dir, options: load_cifar(CIFAR10, data_dir, options.augment),
    "cifar100": lambda data_dir, options: load_cifar(CIFAR100, data_dir, options.augment),
    "digits": lambda data_dir, options: digits(),
    "fashion_mnist": lambda data_dir, options: load_mnist(
        FASHION_MNIST, data_dir, options.image_size
    ),
    "imagenet": lambda data_dir, options: load_imagenet(data_dir, options),
    "mnist": lambda data_dir, options: load_mnist(MNIST, data_dir, options.image_size),
    "mnist5k": lambda data_dir, options: mnist5k(),
}
# The registered datasets that serve `image_size` (image folders do too); the others refuse it.
RESIZABLE = ("fashion_mnist", "imagenet", "mnist")
# An image folder's dataset name: as the run folders, the tables and the pipeline's patterns spell it,
# and short enough that its cache file (name + ~30 characters) stays within a file name's 255 bytes.
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
NAME_RULE = "ASCII letters, digits, '_', '.' and '-', starting with a letter or digit, at most 100 characters"


def is_image_folder(name: str, data_dir: Path | str | None) -> bool:
    """Whether `name` is an image-folder dataset: an unregistered folder name with DATA_DIR/name/train."""
    return (
        name not in DATASETS
        and data_dir is not None
        and FOLDER_NAME.fullmatch(name) is not None
        and (Path(data_dir) / name / "train").is_dir()
    )


def check_name(name: str, data_dir: Path | str | None = None) -> None:
    """Raise ValueError unless `name` is a registered dataset or an image folder under `data_dir`.

    The error says which: a name outside FOLDER_NAME is refused with the rule (the run folders, the
    tables and the pipeline's patterns spell datasets so), even when its folder exists; a folder that
    is there but holds no train/ is named with what it lacks; only a folder that is not there is missing.
    """
    if name in DATASETS or is_image_folder(name, data_dir):
        return
    known = f"{', '.join(sorted(DATASETS))}, or an image folder's name"
    folder = Path(data_dir) / name if data_dir is not None else None
    if FOLDER_NAME.fullmatch(name) is None:
        there = (
            f"; {folder} exists: rename it"
            if folder and "/" not in name and _exists(folder)
            else ""
        )
        raise ValueError(f"bad dataset name {name!r}; accepted: {known}, of {NAME_RULE}{there}")
    if folder is None or not folder.exists():
        where = f"DATA_DIR/{name}/train" if folder is None else str(folder / "train")
        raise ValueError(f"unknown dataset {name!r}; known: {known} ({where} not found)")
    what = "a folder" if folder.is_dir() else "a file"
    raise ValueError(
        f"dataset {name!r}: {folder} is {what} without a train/ folder; an image folder holds "
        f"train/<class>/<image> and test/<class>/<image> (or val/)"
    )


def _exists(path: Path) -> bool:
    """Whether `path` exists; a name the file system cannot take (too long, a NUL byte) does not."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def image_folders(data_dir: Path | str | None) -> list[str]:
    """The image-folder datasets under `data_dir` (folders with a train/ subfolder), sorted."""
    if data_dir is None or not Path(data_dir).is_dir():
        return []
    return sorted(p.name for p in Path(data_dir).iterdir() if is_image_folder(p.name, data_dir))


def load(
    name: str,
    device: torch.device | str = "cpu",
    data_dir: Path | str | None = None,
    options: DataOptions | None = None,
) -> TensorData | StreamData:
    """Dataset `name`, its tensors moved to `device`; data_dir is where on-disk datasets live."""
    check_name(name, data_dir)
    options = options or DataOptions()
    data_dir = Path(data_dir) if data_dir else None
    if options.image_size is not None and name in DATASETS and name not in RESIZABLE:
        raise ValueError(
            f"bad value {options.image_size} for 'image_size' with dataset {name!r}, which is served "
            f"as stored; accepted: 0 here, or a dataset that resizes ({', '.join(RESIZABLE)}, "
            "an image folder)"
        )
    if name in DATASETS:
        return DATASETS[name](data_dir, options).to(device)
    return load_imagefolder(name, data_dir, options).to(device)


def set_normalisation(data: TensorData | StreamData, mean: list[float], std: list[float]) -> None:
    """Normalise `data`'s batches with constant per-channel `mean` and `std` (in [0, 1] units) instead of
    the statistics of its training split (the recipe keys norm_mean and norm_std); in place."""
    channels = data.in_shape[0]
    for key, values in (("norm_mean", mean), ("norm_std", std)):
        if len(values) != channels:
            raise ValueError(
                f"bad value {values!r} for {key!r}; accepted: {channels} numbers, one per channel "
                f"of {data.name}"
            )
    device = data.mean.device
    data.mean = torch.tensor(mean, dtype=torch.float32, device=device)
    data.std = torch.tensor(std, dtype=torch.float32, device=device)


__all__ = [
    "DATASETS",
    "Augment",
    "AugmentedData",
    "BetonSpec",
    "DataOptions",
    "StreamData",
    "TensorData",
    "check_name",
    "image_folders",
    "is_image_folder",
    "load",
    "set_normalisation",
]
