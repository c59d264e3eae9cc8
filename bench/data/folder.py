"""Image-folder trees: find the splits, list classes and files (with clear errors), decode one image.

A tree is `ROOT/train/<class>/<image>` plus `ROOT/test/<class>/<image>` (or `ROOT/val/...`, ImageNet's
name). Class folders sorted by name give the label indices (torchvision's ImageFolder rule), so the
CIFAR-10 JPEG tree gives airplane 0 ... truck 9. Hidden files are skipped; every other file must be
an image PIL can read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EVAL_SPLITS = ("test", "val")


@dataclass(frozen=True)
class Split:
    """One split of a tree: its folder, class names (label = position) and (path, label, size, mtime_ns) rows."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[tuple[str, int, int, int], ...]

    @property
    def paths(self) -> list[str]:
        return [row[0] for row in self.files]

    @property
    def labels(self) -> list[int]:
        return [row[1] for row in self.files]

    def fingerprint(self) -> str:
        """Hash of the file list with sizes and mtimes: it changes whenever an image is added, removed or edited."""
        digest = hashlib.sha256()
        prefix = os.path.join(str(self.root), "")
        for path, label, size, mtime in self.files:
            # paths are listed under root: cutting the prefix is relpath's answer, 10x faster on 60k files
            relative = (
                path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, self.root)
            )
            digest.update(f"{relative}\0{label}\0{size}\0{mtime}\n".encode())
        return digest.hexdigest()


def split_dirs(tree: Path) -> tuple[Path, Path]:
    """(train folder, evaluation folder: test/ or else val/) of the tree at `tree`."""
    if not tree.is_dir():
        raise FileNotFoundError(
            f"image folder {tree} not found; expected {tree}/train/<class>/<image> "
            f"and {tree}/test/<class>/<image> (or val/)"
        )
    if not (tree / "train").is_dir():
        raise FileNotFoundError(
            f"image folder {tree} has no train/ folder; expected train/<class>/<image>"
        )
    for name in EVAL_SPLITS:
        if (tree / name).is_dir():
            return tree / "train", tree / name
    raise FileNotFoundError(
        f"image folder {tree} has no test/ or val/ folder; expected test/<class>/<image>"
    )


def list_split(root: Path, classes: tuple[str, ...] | None = None) -> Split:
    """The classes and files of one split folder; `classes` (from train) must match its class folders."""
    found = tuple(
        sorted(
            entry.name
            for entry in os.scandir(root)
            if entry.is_dir() and not entry.name.startswith(".")
        )
    )
    if not found:
        raise ValueError(f"{root} has no class folders; expected {root}/<class>/<image>")
    if classes is not None and found != classes:
        extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        raise ValueError(
            f"{root} has classes that differ from train/: extra {extra}, missing {missing}"
        )
    files = []
    for label, name in enumerate(found):
        with os.scandir(root / name) as entries:
            rows = sorted(
                (e.path, label, e.stat().st_size, e.stat().st_mtime_ns)
                for e in entries
                if e.is_file() and not e.name.startswith(".")
            )
        if not rows:
            raise ValueError(
                f"class folder {root / name} is empty; every class needs at least one image"
            )
        files.extend(rows)
    return Split(root, found, tuple(files))


def read_tree(tree: Path) -> tuple[Split, Split]:
    """(train split, evaluation split) of the tree; the evaluation split must have train's classes."""
    train_dir, eval_dir = split_dirs(tree)
    train = list_split(train_dir)
    return train, list_split(eval_dir, train.classes)


# PIL modes whose convert("RGB") is exact: 1-, 8-bit and palette images. 16-bit ("I;16"), 32-bit integer
# ("I") and float ("F") images would be clipped to 255 by it, so they are refused rather than cast.
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def open_rgb(path: str):
    """The image at `path` as a loaded RGB PIL image; an unreadable, oversized (decompression bomb) or
    not-8-bit file is a ValueError naming it."""
    from PIL import Image

    with _decoding(path):
        with Image.open(path) as image:
            if image.mode not in EIGHT_BIT_MODES:
                raise ValueError(
                    f"mode {image.mode!r} (more than 8 bits per channel) would be clipped to 8 bits; "
                    f"accepted: 8-bit images ({', '.join(EIGHT_BIT_MODES)}); convert the file first"
                )
            return image.convert("RGB")


@contextlib.contextmanager
def _decoding(path: str):
    """Turn every decoding failure of `path`, PIL's decompression-bomb warning included, into one ValueError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "error", Image.DecompressionBombWarning
            )  # a bomb is refused, not decoded
            yield
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        SyntaxError,
        ValueError,
    ) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from None


def load_rgb(path: str, size: int | None) -> np.ndarray:
    """H x W x 3 uint8 pixels of the image at `path`; with `size`, shorter side resized to it, centre-cropped square."""
    image = open_rgb(path)
    if size is not None and image.size != (size, size):
        image = resize_centre(image, size)
    return np.asarray(image)


def resize_centre(image, size: int):
    """PIL image -> `size` x `size`: shorter side scaled to `size` (bilinear, antialiased), centre crop."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new != image.size:
        image = image.resize(new, Image.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def image_size_of(path: str) -> tuple[int, int]:
    """(width, height) from the header of the image at `path`, without decoding it."""
    from PIL import Image

    with _decoding(path):
        with Image.open(path) as image:
            return image.size
