"""`python -m bench perf epoch`: one training epoch of the suite's trainer against a plain PyTorch loop.

Both sides train the same architecture from the same initial weights on the same uint8 CIFAR-shaped
images (3 x 32 x 32), with the same batch size, the same augmentation (random crop with 4-pixel
padding, horizontal flip) and the recipe's optimizer (AdamW by default):
  suite:    the trainer's own `train_epoch` with the method's step, batches cut, augmented and
            normalised on the device from a uint8 copy there (AugmentedData), and the speed options
            as `auto` resolves them on the device (channels_last, bf16 autocast, cudnn.benchmark,
            torch.compile; `--set` forces one);
  baseline: what a typical CIFAR script does: torchvision transforms per PIL image (RandomCrop(32,
            padding=4), RandomHorizontalFlip, ToTensor, Normalize) in a DataLoader with `workers`
            processes (pinned memory on CUDA, started afresh for the epoch), the model in float32
            NCHW under PyTorch's default backend settings (cudnn.benchmark restored to its value
            before the suite ran; cuDNN's own default may run float32 convs in TF32), forward,
            cross-entropy, backward, optimizer step (backpropagation: compare it with method bp).
Each side first runs `warmup` untimed batches (kernel choice, compilation, worker start-up are
one-off costs), then one timed epoch over all images; the timed span ends with a device sync.
Evaluation is excluded from both. Images are seeded synthetic ones by default (time does not
depend on pixel values), or a prepared image folder such as cifar10-jpeg (`--data-dir --dataset`).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.config.files import config_argument, load_config
from bench.config.spec import make_spec
from bench.data.augment import Augment, AugmentedData, channel_stats
from bench.models import check_arch
from bench.perf.common import (
    add_speed_arguments,
    dataset_folder,
    log,
    seeded_model,
    speed_options,
    subset,
    table,
    torchvision_cifar,
    training_parts,
    wall_clock,
    write_json,
)
from bench.run.epoch import train_epoch
from bench.run.optim import make_optimizer
from bench.run.speed import Speed, resolve_device
from bench.run.train import derive_seed

SHAPE = (3, 32, 32)


def synthetic_images(count: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded uint8 count x 3 x 32 x 32 images and int64 labels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, *SHAPE), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, classes, (count,), generator=generator)


def folder_images(root: Path, count: int, workers: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The first `count` training images of an image folder (evenly spaced over it), at 32 x 32."""
    from bench.data.folder import read_tree
    from bench.data.imagefolder import decode_all

    train, _ = read_tree(root)
    train = subset(train, count)
    return (
        decode_all(train.paths, 32, SHAPE[1:], workers),
        torch.tensor(train.labels),
        len(train.classes),
    )


def suite_epoch(spec, images, labels, classes: int, device, warmup: int) -> dict:
    """The trainer's epoch: AugmentedData on the device, the method's step, the resolved speed options."""
    recipe, batch_size = spec.recipe, spec.recipe["batch_size"]
    data = AugmentedData(
        "perf", images, labels, images[:1], labels[:1], [str(c) for c in range(classes)], Augment()
    ).to(device)
    speed = Speed.from_recipe(recipe, device)
    # as perf step builds them, with the trainer's step (the blockwise one under locality: blockwise)
    model, method, step, optimizer = training_parts(spec, SHAPE, classes, device, speed)
    compiled = speed.compile_model(model, speed.batch(data.normalise(data.train_x[:batch_size])))
    shuffle = torch.Generator().manual_seed(derive_seed(spec.seed, "shuffle"))
    if warmup:
        count = min(len(labels), warmup * batch_size)
        head = AugmentedData(
            "warm-up",
            images[:count],
            labels[:count],
            images[:1],
            labels[:1],
            data.classes,
            Augment(),
        ).to(device)
        train_epoch(model, method, optimizer, head, batch_size, shuffle, device, speed, step=step)
    stats, seconds = wall_clock(
        lambda: train_epoch(
            model, method, optimizer, data, batch_size, shuffle, device, speed, step=step
        ),
        device,
    )
    trained = len(labels) // batch_size * batch_size
    return {
        "path": f"suite trainer ({spec.method})",
        "epoch_s": seconds,
        "images": trained,
        "images_per_s": trained / seconds,
        "train_loss": stats["train_loss"],
        "speed": {**asdict(speed), "compile": compiled},
    }


def baseline_epoch(spec, images, labels, classes: int, device, warmup: int, workers: int) -> dict:
    """A plain loop: torchvision transforms per PIL image, DataLoader, float32 NCHW model, backprop."""
    recipe, batch_size = spec.recipe, spec.recipe["batch_size"]
    mean, std = (stats.tolist() for stats in channel_stats(images))  # the suite's normalisation
    dataset = torchvision_cifar(images, labels, mean, std)
    cuda = device.type == "cuda"

    def loader_of(data):  # a fresh loader per pass, as a plain script's epoch starts its workers
        return torch.utils.data.DataLoader(
            data, batch_size, shuffle=True, drop_last=True, num_workers=workers, pin_memory=cuda
        )

    model = seeded_model(spec, SHAPE, classes).to(device)
    optimizer = make_optimizer(model.parameters(), recipe)
    model.train()

    def train(batches) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for x, y in batches:
            x, y = x.to(device, non_blocking=cuda), y.to(device, non_blocking=cuda)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return total

    if warmup:  # its own loader over the first batches: the timed one starts clean
        head = torch.utils.data.Subset(dataset, range(min(len(dataset), warmup * batch_size)))
        train(loader_of(head))
    loader = loader_of(dataset)
    total, seconds = wall_clock(lambda: train(loader), device)
    trained = len(loader) * batch_size
    # PyTorch's defaults, as a plain script has them (on CUDA, cuDNN may run float32 convs in TF32)
    defaults = {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    return {
        "path": f"plain loop (torchvision DataLoader, {workers} workers, fp32)",
        "epoch_s": seconds,
        "images": trained,
        "images_per_s": trained / seconds,
        "train_loss": float(total) / len(loader),
        "speed": defaults if cuda else {},
    }


def run(args) -> list[dict]:
    """Both rows; the suite's carries `speedup`, the baseline's epoch time over the suite's."""
    args.arch = check_arch(args.arch)  # torchvision:M -> tv-M
    if min(args.images, args.batch_size) < 1 or args.warmup < 0 or args.workers < 0:
        raise ValueError("--images and --batch-size must be >= 1, --warmup and --workers >= 0")
    sets = speed_options(args)
    device = resolve_device(args.device)
    # the variant and recipe are checked before any image is decoded
    spec = make_spec(
        "synthetic",
        args.arch,
        args.method,
        0,
        {"batch_size": args.batch_size, **sets},
        load_config(args.config, check_data=False).variants,
    )
    if args.dataset:
        root = dataset_folder(args.data_dir, args.dataset)
        images, labels, classes = folder_images(root, args.images, max(1, args.workers))
        source = f"{root}"
    else:
        images, labels = synthetic_images(args.images, args.classes)
        classes, source = args.classes, "synthetic"
    if len(labels) < spec.recipe["batch_size"]:
        raise ValueError(
            f"--images {len(labels)} is smaller than one batch ({spec.recipe['batch_size']})"
        )
    log.info(
        "perf epoch: %s, %s, %d %s images, batch %d, %d warm-up batches, device %s, %d threads",
        args.arch,
        args.method,
        len(labels),
        source,
        spec.recipe["batch_size"],
        args.warmup,
        device,
        torch.get_num_threads(),
    )
    benchmark = torch.backends.cudnn.benchmark
    suite = suite_epoch(spec, images, labels, classes, device, args.warmup)
    torch.backends.cudnn.benchmark = (
        benchmark  # the suite's cudnn_benchmark is process-wide: not the baseline's
    )
    log.info("suite epoch: %.1f s", suite["epoch_s"])
    baseline = baseline_epoch(spec, images, labels, classes, device, args.warmup, args.workers)
    log.info("plain loop epoch: %.1f s", baseline["epoch_s"])
    common = {
        "arch": args.arch,
        "device": str(device),
        "device_name": device_name(device),
        "source": source,
        "batch_size": spec.recipe["batch_size"],
        "threads": torch.get_num_threads(),
    }
    suite["speedup"] = baseline["epoch_s"] / suite["epoch_s"]
    baseline["speedup"] = None
    return [{**common, **suite}, {**common, **baseline}]


def device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores)"
    )


def report(rows: list[dict]) -> list[str]:
    """Fixed-column lines: path, epoch seconds, images/s, speedup over the plain loop."""
    return table(
        (
            ("path", -58, lambda r: r["path"]),
            ("epoch s", 8, lambda r: f"{r['epoch_s']:.1f}"),
            ("images/s", 9, lambda r: f"{r['images_per_s']:.0f}"),
            ("speedup", 8, lambda r: f"{r['speedup']:.2f}x" if r["speedup"] else ""),
        ),
        rows,
    )


def main(args) -> int:
    """CLI entry: run, log the table, write --out as JSON when given."""
    rows = run(args)
    lines = report(rows)
    log.info("%s on %s:\n%s", rows[0]["arch"], rows[0]["device_name"], "\n".join(lines))
    if args.out:
        write_json(args.out, rows)
    return 0


def add_arguments(parser) -> None:
    """The `perf epoch` options, for the CLI's subparser."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--arch", default="resnet32")
    parser.add_argument(
        "--method", default="bp", help="the suite side's variant (the plain loop is BP)"
    )
    config_argument(parser, "with the variants and sweeps")
    parser.add_argument(
        "--images", type=int, default=50000, help="training images in the epoch (CIFAR: 50000)"
    )
    parser.add_argument("--classes", type=int, default=10, help="classes of the synthetic images")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding --dataset")
    parser.add_argument(
        "--dataset", default=None, help="an image folder under --data-dir, e.g. cifar10-jpeg"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches on each side first")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="DataLoader worker processes of the plain loop",
    )
    add_speed_arguments(parser, "of the suite side")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
