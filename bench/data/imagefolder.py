"""Image folders as datasets: small ones decoded once into a cached tensor file and served from the device.

Dataset name -> folder: an image-folder dataset is named after its folder under the data directory,
so dataset `cifar10-jpeg` reads `DATA_DIR/cifar10-jpeg/{train,test|val}/<class>/<image>`.
Small images (the whole set as uint8 fits `options.max_device_bytes`) are decoded once by a process
pool, cached as `CACHE/<name>-<size>-<key>.pt` (key: file list + sizes + mtimes + size) and served as
AugmentedData, augmented on the device like CIFAR; larger sets stream through DataLoaders (stream.py).
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import stat
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.data.augment import AugmentedData
from bench.data.folder import Split, image_size_of, load_rgb, read_tree
from bench.data.options import DataOptions
from bench.data.stream import StreamData, folder_stream

log = logging.getLogger("bench.data")

CACHE_VERSION = 1  # bump when the cached layout or the decoding changes
CHUNK = 500  # images per pool task


def load_imagefolder(
    name: str, data_dir: Path | None, options: DataOptions
) -> AugmentedData | StreamData:
    """The image-folder dataset `name` at DATA_DIR/name: on the device when small, streamed when large."""
    if data_dir is None:
        raise ValueError(
            f"dataset {name!r} is an image folder and needs a data directory "
            f"(--data-dir DIR or the config's data_dir) holding DIR/{name}/train and test/ (or val/)"
        )
    tree = Path(data_dir) / name
    train, test = read_tree(tree)
    shape = _image_shape(train, options.image_size)
    nbytes = (len(train.files) + len(test.files)) * 3 * shape[0] * shape[1]
    if nbytes > options.max_device_bytes:
        if options.image_size is None and shape[0] != shape[1]:
            raise ValueError(
                f"image folder {tree} is streamed ({nbytes / 2**30:.1f} GiB decoded); "
                "set image_size for its square crops"
            )
        log.info(
            "%s: %.1f GiB as uint8 tensors (> max_device_bytes), streaming it", name, nbytes / 2**30
        )
        return folder_stream(name, train, test, shape[0], options.workers)
    tensors = cached_tensors(name, tree, train, test, options, shape)
    return AugmentedData(
        name,
        tensors["train_x"],
        tensors["train_y"],
        tensors["test_x"],
        tensors["test_y"],
        list(train.classes),
        options.augment,
    )


def _image_shape(train: Split, image_size: int | None) -> tuple[int, int]:
    """(H, W) every image is served at: image_size square, or the first training image's own size."""
    if image_size is not None:
        return image_size, image_size
    width, height = image_size_of(train.paths[0])
    return height, width


def cached_tensors(
    name: str, tree: Path, train: Split, test: Split, options: DataOptions, shape: tuple[int, int]
) -> dict:
    """{train_x, train_y, test_x, test_y}: from the cache when the folder is unchanged, else decoded and cached."""
    digest = hashlib.sha256(f"{CACHE_VERSION}\0{options.image_size}\0{shape}\0".encode())
    digest.update(f"{train.fingerprint()}\0{test.fingerprint()}".encode())
    tag = f"{name}-{options.image_size or 'native'}"
    path = cache_dir(tree.parent, options.cache_dir) / f"{tag}-{digest.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
            if tensors["train_x"].shape != (len(train.files), 3, *shape) or len(
                tensors["test_y"]
            ) != len(test.files):
                raise ValueError("its shapes do not match the folder")
            log.info("%s: decoded images from cache %s", name, path)
            return tensors
        except (
            Exception
        ) as error:  # a cache is disposable: any failure to read it means decode again
            log.warning("cache %s is unreadable (%s); decoding %s again", path, error, tree)
    start = time.perf_counter()
    tensors = {
        "train_x": decode_all(train.paths, options.image_size, shape, options.workers),
        "train_y": torch.tensor(train.labels),
        "test_x": decode_all(test.paths, options.image_size, shape, options.workers),
        "test_y": torch.tensor(test.labels),
    }
    log.info(
        "%s: decoded %d images in %.1f s",
        name,
        len(train.files) + len(test.files),
        time.perf_counter() - start,
    )
    _write_cache(path, tag, tensors)
    return tensors


def cache_dir(data_dir: Path, configured: Path | None) -> Path:
    """Where decoded image folders are cached: `configured`, else DATA_DIR/.cache, else ~/.cache/bench.

    The fallback is for read-only data directories (a shared copy of the data): the cache still
    lives outside the project, and it is keyed on the folder's contents, so a stale file is never used.
    """
    if configured is not None:
        return Path(configured)
    preferred = Path(data_dir) / ".cache"
    if _writable(preferred if preferred.exists() else Path(data_dir)):
        return preferred
    fallback = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bench"
    log.info("data directory %s is not writable; caching decoded images in %s", data_dir, fallback)
    return fallback


def _writable(folder: Path) -> bool:
    """Writable for us and meant to be: root passes os.access everywhere, so read-only mode bits count too."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _write_cache(path: Path, tag: str, tensors: dict) -> None:
    """Write the cache file atomically and remove older caches of the same dataset and size."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_bytes(buffer.getvalue())
        os.replace(temp, path)
    except OSError as error:
        log.warning(
            "cannot write cache %s (%s); the images will be decoded again next time", path, error
        )
        return
    for old in path.parent.glob(f"{tag}-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)


def decode_all(
    paths: list[str], image_size: int | None, shape: tuple[int, int], workers: int
) -> torch.Tensor:
    """uint8 N x 3 x H x W pixels of the images at `paths`, decoded in `workers` processes (serially when few)."""
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    if workers <= 1 or len(chunks) <= 1:
        parts = [_decode_chunk(chunk, image_size, shape) for chunk in chunks]
    else:
        # fork: the workers need only PIL and numpy, and start at once without re-importing torch
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            parts = list(
                pool.map(_decode_chunk, chunks, [image_size] * len(chunks), [shape] * len(chunks))
            )
    return torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()


def _decode_chunk(paths: list[str], image_size: int | None, shape: tuple[int, int]) -> np.ndarray:
    """N x H x W x 3 uint8 for one chunk; an image of another size (with no image_size) names its file."""
    out = np.empty((len(paths), *shape, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        pixels = load_rgb(path, image_size)
        if pixels.shape != out.shape[1:]:
            raise ValueError(
                f"image {path} is {pixels.shape[1]}x{pixels.shape[0]}, the first training image is "
                f"{shape[1]}x{shape[0]}; set image_size to serve every image at one square size"
            )
        out[i] = pixels
    return out
