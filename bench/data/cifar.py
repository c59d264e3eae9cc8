"""CIFAR-10 and CIFAR-100 from torchvision's on-disk format under the data directory, as AugmentedData.

Layout (what `torchvision.datasets.CIFAR10/100(root, download=True)` leaves in `root`):
    cifar-10-batches-py/  data_batch_1 .. data_batch_5, test_batch, batches.meta ('label_names')
    cifar-100-python/     train, test, meta ('fine_label_names'; batches hold 'fine_labels')
Each batch is a pickled dict: 'data' uint8 N x 3072 (1024 red, 1024 green, 1024 blue, row-major),
labels a list of N ints. torchvision checks every file's md5, which files written by a test fail,
so the suite reads the batches itself and uses torchvision only to download when they are absent.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data.augment import Augment, AugmentedData

log = logging.getLogger("bench.data")


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant's files are and which keys hold its labels and class names."""

    name: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    labels: str
    names: str
    num_classes: int


CIFAR10 = CifarLayout(
    "cifar10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
    "labels",
    "label_names",
    10,
)
CIFAR100 = CifarLayout(
    "cifar100",
    "cifar-100-python",
    ("train",),
    "test",
    "meta",
    "fine_labels",
    "fine_label_names",
    100,
)


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and plain containers and refuses any other class."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """One CIFAR pickle as a dict with str keys (Python 2 pickles decode as latin1, like torchvision)."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file {path} not found")
    try:
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a CIFAR pickle: {error}") from None
    if not isinstance(entry, dict):
        raise ValueError(
            f"{path} is not a CIFAR pickle: holds a {type(entry).__name__}, expected a dict"
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def read_batches(
    paths: list[Path], labels_key: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N x 3 x 32 x 32 images, int64 N labels) from CIFAR batch files, in file order."""
    images, labels = [], []
    for path in paths:
        entry = read_pickle(path)
        if "data" not in entry or labels_key not in entry:
            raise ValueError(f"{path} lacks key 'data' or {labels_key!r}; it has {sorted(entry)}")
        data, y = np.asarray(entry["data"]), np.asarray(entry[labels_key])
        if data.dtype != np.uint8:  # a cast would wrap or truncate: 300 -> 44, 0.7 -> 0
            raise ValueError(
                f"{path}: 'data' holds {data.dtype}; accepted: uint8 pixels (0..255), as the "
                "official batches"
            )
        if y.dtype.kind not in "iu":
            raise ValueError(
                f"{path}: {labels_key!r} holds {y.dtype}; accepted: integer class indices"
            )
        y = y.astype(np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(y) != len(data):
            raise ValueError(
                f"{path}: 'data' has shape {data.shape} and {len(y)} labels; "
                "expected N x 3072 uint8 and N labels"
            )
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"{path}: labels span {y.min()}..{y.max()}; expected 0..{num_classes - 1}"
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        labels.append(torch.from_numpy(y))
    return torch.cat(images), torch.cat(labels)


def fetch(layout: CifarLayout, data_dir: Path) -> Path:
    """The variant's folder under `data_dir`, downloaded through torchvision when its files are absent."""
    folder = data_dir / layout.folder
    needed = [folder / name for name in (*layout.train, layout.test, layout.meta)]
    if all(path.is_file() for path in needed):
        return folder
    log.info("%s not found under %s; trying torchvision's download", layout.name, data_dir)
    import torchvision

    dataset = torchvision.datasets.CIFAR10 if layout is CIFAR10 else torchvision.datasets.CIFAR100
    created = [p for p in (data_dir, *data_dir.parents) if not p.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        dataset(str(data_dir), train=True, download=True)
    except Exception as error:  # no network, a proxy, a full disk: all end in the same advice
        for folder_made in created:  # a failed download leaves no empty data directory behind
            if folder_made.is_dir() and not any(folder_made.iterdir()):
                folder_made.rmdir()
        missing = next(path for path in needed if not path.is_file())
        raise FileNotFoundError(
            f"{layout.name} needs {missing} (and the rest of {folder}/: "
            f"{', '.join(path.name for path in needed)}); the download failed ({error}). "
            f"Get cifar-{layout.name[5:]}-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
            f"and unpack it in {data_dir}, or run torchvision.datasets.{dataset.__name__}"
            f"('{data_dir}', download=True) on a machine with network and copy {folder} here"
        ) from None
    return folder


def load_cifar(
    layout: CifarLayout, data_dir: Path | None, augment: Augment | None = None
) -> AugmentedData:
    """CIFAR-10/100 from `data_dir` (downloaded there when absent) as uint8 tensors with training augmentation."""
    if data_dir is None:
        raise ValueError(
            f"dataset {layout.name!r} needs a data directory (--data-dir DIR or the config's "
            f"data_dir); its files go in DIR/{layout.folder}/"
        )
    folder = fetch(layout, Path(data_dir))
    train_x, train_y = read_batches(
        [folder / name for name in layout.train], layout.labels, layout.num_classes
    )
    test_x, test_y = read_batches([folder / layout.test], layout.labels, layout.num_classes)
    classes = [str(name) for name in read_pickle(folder / layout.meta).get(layout.names, [])]
    if len(classes) != layout.num_classes:
        raise ValueError(
            f"{folder / layout.meta}: {layout.names!r} lists {len(classes)} class names; "
            f"expected {layout.num_classes}"
        )
    return AugmentedData(
        layout.name, train_x, train_y, test_x, test_y, classes, augment or Augment()
    )
