"""What more than one perf tool uses: the model build, the torchvision CIFAR baseline, timers, speed
options, output files and tables."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from bench.config.recipe import RECIPE
from bench.config.spec import parse_sets
from bench.data.folder import Split
from bench.measure.locality import check_blocks
from bench.method import call_hook, get_method
from bench.models import build_for
from bench.run import layer_options
from bench.run.blockwise import step_function
from bench.run.optim import make_optimizer
from bench.run.speed import SPEED_KEYS, Speed
from bench.run.train import derive_seed

log = logging.getLogger("bench.perf")


def seeded_model(spec, in_shape, classes: int) -> torch.nn.Module:
    """The spec's model, built from its init seed: every method, and the plain loop, start from the same weights."""
    torch.manual_seed(derive_seed(spec.seed, "init"))
    return build_for(spec.recipe, spec.arch, in_shape, classes)


def training_parts(spec, in_shape, classes: int, device: torch.device, speed: Speed):
    """(model, method, step, optimizer) as the trainer makes them: the seeded model prepared by its method
    (feedback from the spec's seed), on `device` in the speed options' layout; the trainer's step (the
    rule's own or the blockwise one); the recipe's optimizer."""
    model = seeded_model(spec, in_shape, classes)
    layers = layer_options.network_layers(model)  # the network's own, before the rule's prepare
    method = get_method(spec.impl)(**spec.options)
    check_blocks(method, model)
    step = step_function(method, spec.recipe["locality"])
    feedback = torch.Generator().manual_seed(derive_seed(spec.seed, "feedback"))
    model = call_hook(method.prepare, model, classes, feedback, in_shape=tuple(in_shape))
    layer_options.apply(model, spec.recipe, layers)  # grad_clip and constrain_weights, timed too
    model = speed.prepare(model.to(device))
    return model, method, step, make_optimizer(model.parameters(), spec.recipe)


class PilImages(torch.utils.data.Dataset):
    """torchvision's CIFAR10 item path: uint8 H x W x 3 array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def torchvision_cifar(
    images: torch.Tensor, labels: torch.Tensor, mean: list, std: list
) -> PilImages:
    """A typical CIFAR script's training set over uint8 N x 3 x H x W images: per item a PIL image,
    RandomCrop(H, padding=4), RandomHorizontalFlip, ToTensor, Normalize(mean, std)."""
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.RandomCrop(images.shape[-1], padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    return PilImages(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), transform)


def dataset_folder(data_dir: Path | None, dataset: str) -> Path:
    """DATA_DIR/<dataset>, the image folder `--data-dir D --dataset NAME` name."""
    if data_dir is None:
        raise ValueError(f"--dataset {dataset} needs --data-dir, the folder that holds {dataset}/")
    return Path(data_dir) / dataset


def subset(split: Split, limit: int) -> Split:
    """At most `limit` files of `split`, evenly spaced so every class is represented."""
    step = max(1, len(split.files) // limit)
    return Split(split.root, split.classes, split.files[::step][:limit])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_clock(fn, device: torch.device):
    """(fn()'s result, its seconds on a wall clock), the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def add_speed_arguments(parser, whose: str) -> None:
    """--threads, and --set KEY=VALUE speed options (`whose`: which side they apply to, for the help)."""
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"speed option {whose}: {', '.join(SPEED_KEYS)} = auto|on|off",
    )


def speed_options(args, hint: str = "") -> dict:
    """The `--set` speed options, checked (an unknown key or value names what is accepted); sets
    torch's threads when --threads is given."""
    sets = parse_sets(args.set)
    bad = sorted(set(sets) - set(SPEED_KEYS))
    if bad:
        raise ValueError(
            f"unknown --set key {bad[0]!r}; accepted: {', '.join(SPEED_KEYS)} {hint}".rstrip()
        )
    for key, value in sets.items():
        RECIPE[key].parse(key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    return sets


def table(columns, rows: list[dict]) -> list[str]:
    """Fixed-column lines: the titles, then one line per row. `columns` are (title, width, cell) with
    cell(row) the row's text; a negative width left-aligns the column (names), a positive one right-aligns it."""

    def line(texts) -> str:
        return " ".join(
            f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"
            for text, (_, width, _) in zip(texts, columns)
        )

    return [
        line(title for title, _, _ in columns),
        *(line(cell(row) for _, _, cell in columns) for row in rows),
    ]


def write_json(path: Path, value) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(value, indent=2) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    """The rows as CSV, the first row's keys the columns."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
