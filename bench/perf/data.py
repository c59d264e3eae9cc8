"""`python -m bench perf data`: images/s of each loader against the torchvision DataLoader doing the same work.

Two pairs, each measured side by side in one run on the same images and the same batch count:
  on-device CIFAR path (AugmentedData: uint8 on the device, batched crop + flip, normalise)
      vs torchvision's CIFAR path (PIL image per item, RandomCrop(32, padding=4) + flip + ToTensor + Normalize,
      DataLoader with `workers` processes);
  FFCV path (.beton of the same images as JPEG, random-resized-crop + flip to `size`)
      vs torchvision ImageFolder (PIL decode, RandomResizedCrop(size) + flip + PILToTensor, `workers` processes).
Both sides get the machine's cores: torch's threads for the on-device path, `workers` processes (and
the main one) for the baseline.
Images come from DATA_DIR/<dataset> (an image folder, e.g. cifar10-jpeg) when given, else from a seeded
synthetic JPEG tree in a temporary folder. Each timing skips the first batch (worker start-up, JIT);
each loader's best of `rounds` interleaved rounds is reported.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from bench.data.augment import Augment, AugmentedData
from bench.data.beton.read import iter_closing
from bench.data.folder import Split, read_tree
from bench.data.imagefolder import decode_all
from bench.data.options import BetonSpec
from bench.perf.common import (
    dataset_folder,
    log,
    subset,
    sync,
    table,
    torchvision_cifar,
    write_json,
)
from bench.run.speed import resolve_device


def time_batches(batches: Iterable, count: int, sync=lambda: None) -> tuple[float, int]:
    """(images/s, images) over `count` batches after the first one, which is not timed."""
    iterator = iter(batches)
    next(iterator)
    images, start = 0, time.perf_counter()
    for _ in range(count):
        x, _ = next(iterator)
        images += len(x)
    sync()
    seconds = time.perf_counter() - start
    if hasattr(iterator, "close"):
        iterator.close()
    return images / seconds, images


def synthetic_tree(root: Path, classes: int = 10, per_class: int = 500, size: int = 32) -> Path:
    """A seeded tree root/train|test/cNN/NNNN.jpg of smooth random colour images (JPEG quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split, count in (("train", per_class), ("test", max(1, per_class // 10))):
        for c in range(classes):
            folder = root / split / f"c{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = np.stack([yy, xx, yy * xx], -1) * rng.uniform(0, 255, 3) + rng.normal(
                    0, 20, (size, size, 3)
                )
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                    folder / f"{i:04d}.jpg", quality=90
                )
    return root


def cifar_pair(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    batches: int,
    workers: int,
    device: torch.device,
    rounds: int = 3,
) -> tuple[dict, dict]:
    """(on-device path, torchvision DataLoader path) rows on the same uint8 N x 3 x 32 x 32 images."""
    data = AugmentedData("perf", images, labels, images[:1], labels[:1], ["x"], Augment()).to(
        device
    )
    dataset = torchvision_cifar(images, labels, data.mean.tolist(), data.std.tolist())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size, shuffle=True, drop_last=True, num_workers=workers
    )
    synced = functools.partial(sync, device)

    def on_device():
        # The same cores for both paths: torch's threads here, `workers` processes for the baseline.
        return time_batches(
            data.train_batches(batch_size, torch.Generator().manual_seed(0)), batches, synced
        )

    def baseline():
        return time_batches(((x.to(device), y.to(device)) for x, y in loader), batches, synced)

    (fast, n), (slow, m) = best_of(rounds, on_device, baseline)
    return (
        {"loader": "on-device CIFAR path", "images_per_s": fast, "images": n},
        {
            "loader": f"torchvision DataLoader ({workers} workers)",
            "images_per_s": slow,
            "images": m,
        },
    )


def best_of(rounds: int, *timers) -> list[tuple[float, int]]:
    """The best (images/s, images) of each timer over `rounds` interleaved rounds.

    Interleaving gives a burst of outside load on a shared machine an equal chance to hit every loader;
    the best round is the loader's speed with the least such interference.
    """
    results = [[timer() for timer in timers] for _ in range(rounds)]
    return [max(column) for column in zip(*results)]


def ffcv_pair(
    split: Split,
    size: int,
    batch_size: int,
    batches: int,
    workers: int,
    scratch: Path,
    rounds: int = 3,
) -> tuple[dict, dict]:
    """(FFCV path, torchvision ImageFolder path) rows on the same JPEG files at `size` x `size`."""
    import torchvision
    from torchvision import transforms as T

    transform = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()])
    folder = torchvision.datasets.ImageFolder(str(split.root), transform=transform)
    index = {path: i for i, (path, _) in enumerate(folder.samples)}
    chosen = torch.utils.data.Subset(folder, [index[path] for path in split.paths])
    loader = torch.utils.data.DataLoader(
        chosen, batch_size, shuffle=True, drop_last=True, num_workers=workers
    )
    baseline = {"loader": f"torchvision ImageFolder ({workers} workers)"}
    try:
        from bench.data.beton.write import write_beton
        from bench.data.ffcv_loader import make_loader
    except ImportError:
        log.warning(
            "ffcv is not installed: no FFCV row (scripts/install_system_deps.sh installs it)"
        )
        slow, m = best_of(rounds, lambda: time_batches(loader, batches))[0]
        return (
            {"loader": "FFCV path (ffcv not installed)", "images_per_s": None, "images": 0},
            {**baseline, "images_per_s": slow, "images": m},
        )
    spec = BetonSpec(max_res=max(size, 32), jpeg_proportion=1.0, quality=90)
    ffcv = make_loader(
        write_beton(split, scratch / "perf.beton", spec, workers, page_size=1 << 21),
        batch_size,
        size,
        workers,
        train=True,
    )
    time_batches(iter_closing(ffcv), 1)  # compile ffcv's pipeline before timing
    (fast, n), (slow, m) = best_of(
        rounds,
        lambda: time_batches(iter_closing(ffcv), batches),
        lambda: time_batches(loader, batches),
    )
    fast_row = {"loader": "FFCV path", "images_per_s": fast, "images": n}
    return fast_row, {**baseline, "images_per_s": slow, "images": m}


def run(
    data_dir: Path | None = None,
    dataset: str | None = None,
    batch_size: int = 512,
    batches: int = 20,
    workers: int = 2,
    image_size: int = 32,
    limit: int = 20000,
    device: str = "cpu",
    rounds: int = 3,
) -> list[dict]:
    """Both pairs; each row: loader, images_per_s, images, baseline and ratio (to its torchvision row)."""
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as scratch:
        if dataset:
            root = dataset_folder(data_dir, dataset)
            source, (train, _) = f"{root}", read_tree(root)
        else:
            per_class = max(2 * batch_size * (batches + 2) // 10, 50)
            source = f"synthetic JPEG tree ({per_class * 10} train images)"
            train, _ = read_tree(synthetic_tree(Path(scratch) / "synthetic", per_class=per_class))
        train = subset(train, limit)
        if len(train.files) < batch_size * (batches + 1):
            raise ValueError(
                f"perf data needs at least {batch_size * (batches + 1)} training images "
                f"(--batch-size x (--batches + 1)); {source} gives {len(train.files)} (--limit {limit})"
            )
        log.info(
            "perf data: %d images from %s, batch %d, %d timed batches, %d workers, device %s",
            len(train.files),
            source,
            batch_size,
            batches,
            workers,
            device,
        )
        images = decode_all(train.paths, 32, (32, 32), workers)
        rows = []
        for fast, slow in (
            cifar_pair(
                images,
                torch.tensor(train.labels),
                batch_size,
                batches,
                workers,
                torch.device(device),
                rounds,
            ),
            ffcv_pair(train, image_size, batch_size, batches, workers, Path(scratch), rounds),
        ):
            ratio = fast["images_per_s"] / slow["images_per_s"] if fast["images_per_s"] else None
            rows += [
                {**fast, "baseline": slow["loader"], "ratio": ratio},
                {**slow, "baseline": None, "ratio": None},
            ]
    for row in rows:
        row["source"] = source
    return rows


def report(rows: list[dict]) -> list[str]:
    """Fixed-column lines: loader, images/s, ratio to its baseline."""
    return table(
        (
            ("loader", -36, lambda r: r["loader"]),
            ("images/s", 10, lambda r: f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-"),
            ("ratio", 8, lambda r: f"{r['ratio']:.1f}x" if r["ratio"] else ""),
        ),
        rows,
    )


def main(args) -> int:
    """CLI entry: run, log the table, write --out as JSON when given."""
    device = str(
        resolve_device(args.device)
    )  # cuda without a CUDA device: exit 2, as train and perf step
    rows = run(
        args.data_dir,
        args.dataset,
        args.batch_size,
        args.batches,
        args.workers,
        args.image_size,
        args.limit,
        device,
        args.rounds,
    )
    for line in report(rows):
        log.info("%s", line)
    if args.out:
        write_json(args.out, {"device": device, "rows": rows})
    return 0


def add_arguments(parser) -> None:
    """The `perf data` options, for the CLI's subparser."""
    parser.add_argument("--data-dir", type=Path, default=None, help="where on-disk datasets live")
    parser.add_argument(
        "--dataset",
        default=None,
        help="an image folder under --data-dir (default: synthetic JPEGs)",
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument(
        "--batches", type=int, default=20, help="timed batches per loader (after one untimed)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers and FFCV threads"
    )
    parser.add_argument(
        "--image-size", type=int, default=32, help="output side of the FFCV and ImageFolder paths"
    )
    parser.add_argument(
        "--limit", type=int, default=20000, help="at most this many training images"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; each loader's best counts"
    )
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
