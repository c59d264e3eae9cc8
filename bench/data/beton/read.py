"""Reading .beton files whole: their labels, their images, and the check that a file is complete before
ffcv (which reads past the end of a truncated file) opens it; iterating an ffcv loader so that its thread
stops however the loop ends (iter_closing, for every reader of ffcv loaders)."""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path

import numpy as np
import torch

from bench.data.beton.write import import_ffcv

log = logging.getLogger("bench.data")


def read_beton(path: Path, workers: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N x 3 x H x W images as stored, int64 N labels) of a .beton whose images share one size."""
    import_ffcv()
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor, ToTorchImage

    labels = read_labels(path)
    loader = Loader(
        str(path),
        batch_size=256,
        num_workers=workers,
        order=OrderOption.SEQUENTIAL,
        drop_last=False,
        pipelines={
            "image": [SimpleRGBImageDecoder(), ToTensor(), ToTorchImage()],
            "label": [IntDecoder(), ToTensor(), Squeeze(1)],
        },
    )
    images = [x.contiguous().clone() for x, _ in iter_closing(loader)]
    return torch.cat(images), labels


def read_labels(path: Path) -> torch.Tensor:
    """int64 labels of every sample in the .beton at `path`, after checking the file is whole."""
    check_beton(path)
    from ffcv.reader import Reader

    try:
        reader = Reader(str(path))
    except Exception as error:  # ffcv raises AssertionError, KeyError ... on a foreign file
        raise ValueError(f"{path} is not a readable .beton: {error}") from None
    if "label" not in reader.field_names or "image" not in reader.field_names:
        raise ValueError(f"{path} has fields {reader.field_names}; expected image and label")
    labels = reader.metadata[
        f"f{reader.field_names.index('label')}"
    ]  # ffcv names metadata columns f0, f1, ...
    return torch.from_numpy(labels.astype(np.int64))


def check_beton(path: Path) -> None:
    """Raise ValueError naming `path` unless its header, allocation table and data are all inside the file.

    ffcv itself reads past the end of a truncated file (numba code, no bounds checks), so this runs first.
    """
    import_ffcv()
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType

    if not Path(path).is_file():
        raise FileNotFoundError(f".beton file {path} not found")
    size = Path(path).stat().st_size
    if size < HeaderType.itemsize:
        raise ValueError(
            f"{path} is truncated or not a .beton: {size} bytes, smaller than its header"
        )
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if header["version"] != CURRENT_VERSION:
        raise ValueError(
            f"{path} is not a .beton of format {CURRENT_VERSION} (header says {header['version']})"
        )
    table_start = int(header["alloc_table_ptr"])
    fields_end = HeaderType.itemsize + int(header["num_fields"]) * FieldDescType.itemsize
    if not fields_end <= table_start <= size or (size - table_start) % ALLOC_TABLE_TYPE.itemsize:
        raise ValueError(
            f"{path} is truncated: {size} bytes, its allocation table starts at byte {table_start}"
        )
    table = np.fromfile(path, dtype=ALLOC_TABLE_TYPE, offset=table_start)
    samples = int(header["num_samples"])
    data_end = int((table["ptr"] + table["size"]).max()) if len(table) else 0
    if len(np.unique(table["sample_id"])) < samples or data_end > table_start:
        raise ValueError(
            f"{path} is truncated: its allocation table covers {len(table)} of {samples} samples"
        )


def iter_closing(loader):
    """Iterate an ffcv loader and close its epoch (and its thread) however the loop ends."""
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        close_epoch(iterator)


def close_epoch(iterator, timeout_s: float = 10.0) -> None:
    """Stop an ffcv EpochIterator and wait for its thread.

    close() only sets a flag; a thread that has already produced its last batch blocks, without a
    timeout, putting the end-of-epoch marker into a full queue, so the queue is drained until it exits.
    """
    iterator.close()
    deadline = time.monotonic() + timeout_s
    while iterator.is_alive() and time.monotonic() < deadline:
        try:
            iterator.output_queue.get(timeout=0.05)
        except queue.Empty:
            pass
        iterator.join(timeout=0.05)
    if iterator.is_alive():
        log.warning("an ffcv loader thread did not stop within %.0f s", timeout_s)
