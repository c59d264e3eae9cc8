"""MNIST and Fashion-MNIST from torchvision's on-disk format under the data directory, as TensorData.

Layout (what `torchvision.datasets.MNIST/FashionMNIST(root, download=True)` leaves in `root`):
    MNIST/raw/         train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    FashionMNIST/raw/  t10k-labels-idx1-ubyte, each also as the downloaded `.gz` (either one is read)
Each file is IDX (LeCun's format): two zero bytes, a type byte (0x08: unsigned byte), the number of
dimensions (3 for images, 1 for labels), each dimension as a big-endian uint32, then the values in
row-major order: images N x 28 x 28 (0 white .. 255 black ink), labels N class indices 0..9.
As BioTorch's (`biotorch/datasets/mnist.py`, `fashion_mnist.py`) the images are not augmented; they
are normalised with the training split's statistics (MNIST's 0.1307 and 0.3081, Fashion-MNIST's 0.2860
and 0.3530: BioTorch's constants). torchvision only downloads; the suite reads the files itself.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data.tensors import TensorData

log = logging.getLogger("bench.data")


@dataclass(frozen=True)
class MnistLayout:
    """One MNIST-format dataset: its name, torchvision's class (and folder) name, its class names."""

    name: str
    torchvision_class: str
    classes: tuple[str, ...]
    home: str  # where its files can be fetched by hand

    def folder(self, data_dir: Path) -> Path:
        return data_dir / self.torchvision_class / "raw"


MNIST = MnistLayout(
    "mnist", "MNIST", tuple(str(i) for i in range(10)), "https://yann.lecun.com/exdb/mnist/"
)
FASHION_MNIST = MnistLayout(
    "fashion_mnist",
    "FashionMNIST",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
    + ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "https://github.com/zalandoresearch/fashion-mnist",
)
FILES = {  # split -> (images, labels), without the optional .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
UNSIGNED_BYTE = 0x08


def _present(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder`, or its `.gz`, whichever is there (the unpacked one first)."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (gzipped when its name ends in .gz)."""
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} (or {path.name}.gz) not found")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:  # not gzip, or cut short
            raise ValueError(f"{path} is not a readable gzip file: {error}") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path} is not an IDX file: {len(raw)} bytes, under its {header}-byte header"
        )
    zero, kind, dims = raw[:2], raw[2], raw[3]
    if zero != b"\0\0" or kind != UNSIGNED_BYTE or dims != ndim:
        raise ValueError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dimensions: magic number "
            f"0x{raw[:4].hex()}; expected 0x0000{UNSIGNED_BYTE:02x}{ndim:02x}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape)  # exact: a corrupt header's huge sides cannot overflow
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"{path} is {what}: {len(raw)} bytes; its header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(layout: MnistLayout, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N x 1 x H x W images, int64 N labels) of one split, checked against each other."""
    images_name, labels_name = FILES[split]
    images = read_idx(_present(folder, images_name) or folder / images_name, 3)
    labels_path = _present(folder, labels_name) or folder / labels_name
    labels = read_idx(labels_path, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(
            f"{folder}: {images_name} holds {len(images)} images but {labels_name} {len(labels)} labels"
        )
    if len(labels) == 0:
        raise ValueError(f"{folder}: {images_name} holds no images")
    if labels.max() >= len(layout.classes):
        raise ValueError(
            f"{labels_path}: labels span {labels.min()}..{labels.max()}; expected "
            f"0..{len(layout.classes) - 1}"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels)


def fetch(layout: MnistLayout, data_dir: Path) -> Path:
    """The dataset's raw/ folder under `data_dir`, downloaded through torchvision when a file is absent."""
    folder = layout.folder(data_dir)
    names = [name for pair in FILES.values() for name in pair]
    if all(_present(folder, name) for name in names):
        return folder
    log.info("%s not found under %s; trying torchvision's download", layout.name, data_dir)
    import torchvision

    dataset = getattr(torchvision.datasets, layout.torchvision_class)
    created = [p for p in (data_dir, *data_dir.parents) if not p.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        dataset(str(data_dir), train=True, download=True)  # fetches all four files
    except Exception as error:  # no network, a proxy, a full disk: all end in the same advice
        for folder_made in created:  # a failed download leaves no empty data directory behind
            if folder_made.is_dir() and not any(folder_made.iterdir()):
                folder_made.rmdir()
        missing = next(name for name in names if not _present(folder, name))
        raise FileNotFoundError(
            f"{layout.name} needs {folder / missing} (or {missing}.gz; and the rest of {folder}/: "
            f"{', '.join(names)}); the download failed ({error}). Get the four files from "
            f"{layout.home} into {folder}, or run torchvision.datasets.{layout.torchvision_class}"
            f"('{data_dir}', download=True) on a machine with network and copy "
            f"{data_dir / layout.torchvision_class} here"
        ) from None
    return folder


def load_mnist(
    layout: MnistLayout, data_dir: Path | None, image_size: int | None = None
) -> TensorData:
    """MNIST or Fashion-MNIST from `data_dir` (downloaded there when absent) as uint8 tensors, resized to
    `image_size` square where given (BioTorch's 32: `biotorch/datasets/dataset.py`, Resize((32, 32)))."""
    if data_dir is None:
        raise ValueError(
            f"dataset {layout.name!r} needs a data directory (--data-dir DIR or the config's "
            f"data_dir); its files go in DIR/{layout.torchvision_class}/raw/"
        )
    folder = fetch(layout, Path(data_dir))
    train_x, train_y = read_split(layout, folder, "train")
    test_x, test_y = read_split(layout, folder, "test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"{folder}: training images are {tuple(train_x.shape[2:])} but test images "
            f"{tuple(test_x.shape[2:])}; expected one size"
        )
    if image_size is not None and image_size != train_x.shape[-1]:
        train_x, test_x = resize(train_x, image_size), resize(test_x, image_size)
    return TensorData(layout.name, train_x, train_y, test_x, test_y, list(layout.classes))


def resize(images: torch.Tensor, side: int, chunk: int = 10_000) -> torch.Tensor:
    """uint8 N x C x H x W images resized to side x side, bilinear, rounded back to uint8: what
    torchvision's Resize does to a uint8 image (PIL's bilinear filter, which antialiases when it shrinks).
    Chunked, so 60,000 images never stand in float32 at once."""
    out = [
        torch.nn.functional.interpolate(
            part.float(), size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in images.split(chunk)
    ]
    return torch.cat(out)
