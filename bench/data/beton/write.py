"""Writing FFCV .beton files from an image folder, named like ffcv-imagenet, atomically, bad images named.

`DATA_DIR/<name>/<split>/<class>/<image>` becomes
`DATA_DIR/ffcv/<name>/<split>_<max_res>_<jpeg_proportion>_<quality>.beton`
with two fields, `image` (RGBImageField) and `label` (IntField, the class folder's sorted position).
A pipeline rule calls `write_split` through `python -m bench beton`; needs ffcv (scripts/install_system_deps.sh).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.data.folder import Split, list_split, load_rgb, split_dirs
from bench.data.options import BetonSpec

log = logging.getLogger("bench.data")

TEST_PAGE_SIZE = (
    1 << 21
)  # ffcv's smallest page (2 MiB): small test files; the default 8 MiB makes any .beton >= 17 MB
DEFAULT_PAGE_SIZE = 1 << 23  # ffcv's default
FFCV_DATASETS = ("imagenet",)  # datasets whose runs read .beton files (train and val splits)


def beton_path(data_dir: Path, name: str, split: str, spec: BetonSpec) -> Path:
    """Where the .beton of `split` of dataset `name` lives under the data directory."""
    return Path(data_dir) / "ffcv" / name / spec.filename(split)


def import_ffcv():
    """The ffcv package (numba told to use OpenMP threads, which silences its fork warning), or ImportError."""
    os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
    import ffcv  # noqa: F401  (imported for the caller's side: ffcv.writer, ffcv.loader ...)

    return ffcv


class _Images:
    """(H x W x 3 uint8, label) per index for ffcv's writer processes.

    ffcv's writer waits forever for a worker that raised, so a bad image is recorded in `errors`
    (a file the processes append to) and replaced by a 1x1 placeholder; the caller then fails.
    Seeding numpy's global generator with the index (inside the writer's processes only) makes each
    image's raw-or-JPEG draw under jpeg_proportion reproducible.
    """

    def __init__(self, split: Split, errors: Path):
        self.paths, self.labels, self.errors = split.paths, split.labels, errors

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        np.random.seed(index)
        try:
            pixels = load_rgb(self.paths[index], None)
        except ValueError as error:
            with open(self.errors, "a") as f:
                f.write(f"{error}\n")
            pixels = np.zeros((1, 1, 3), dtype=np.uint8)
        return pixels, self.labels[index]


def write_beton(
    split: Split, out: Path, spec: BetonSpec, workers: int = 2, page_size: int = DEFAULT_PAGE_SIZE
) -> Path:
    """Write `split` to the .beton `out` (temp file, then rename); a bad image is a ValueError naming it."""
    import_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    mode = (
        "raw" if spec.jpeg_proportion == 0 else "jpg" if spec.jpeg_proportion == 1 else "proportion"
    )
    image = RGBImageField(
        write_mode=mode,
        max_resolution=spec.max_res,
        jpeg_quality=spec.quality,
        compress_probability=spec.jpeg_proportion,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tempfile.NamedTemporaryFile("w", suffix=".errors", delete=False) as f:
        errors = Path(f.name)
    try:
        writer = DatasetWriter(
            str(temp),
            {"image": image, "label": IntField()},
            page_size=page_size,
            num_workers=max(1, workers),
        )
        writer.from_indexed_dataset(_Images(split, errors))
        problems = errors.read_text().splitlines()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(f"{problems[0]}{more}; {out} was not written")
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
        errors.unlink(missing_ok=True)
    log.info("wrote %s: %d images of %s (%s mode)", out, len(split.files), split.root, mode)
    return out


def write_split(
    name: str,
    data_dir: Path,
    split: str,
    spec: BetonSpec,
    workers: int = 2,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Path:
    """Write DATA_DIR/<name>/<split> to its .beton (see beton_path); train's classes fix the labels."""
    tree = Path(data_dir) / name
    train_dir, eval_dir = split_dirs(tree)
    if split not in ("train", eval_dir.name):
        raise ValueError(
            f"unknown split {split!r} of image folder {tree}; accepted: train, {eval_dir.name}"
        )
    train = list_split(train_dir)
    chosen = train if split == "train" else list_split(eval_dir, train.classes)
    return write_beton(chosen, beton_path(data_dir, name, split, spec), spec, workers, page_size)


def add_arguments(parser) -> None:
    """The `beton` subcommand's options (the pipeline's beton rule passes every one)."""
    spec = BetonSpec()
    parser.add_argument(
        "--dataset", required=True, help="image folder under --data-dir, e.g. imagenet"
    )
    parser.add_argument(
        "--split", required=True, help="train, or the evaluation folder's name (val or test)"
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="where on-disk datasets live")
    parser.add_argument(
        "--max-res", type=int, default=spec.max_res, help="longest image side written"
    )
    parser.add_argument(
        "--jpeg-proportion",
        type=float,
        default=spec.jpeg_proportion,
        help="share of images stored as JPEG (0: all raw, 1: all JPEG)",
    )
    parser.add_argument("--quality", type=int, default=spec.quality, help="JPEG quality")
    parser.add_argument("--workers", type=int, default=2, help="writer processes")
    parser.add_argument(
        "--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="ffcv page size (a power of 2)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the path the caller expects; an error unless it is where the loader will look",
    )


def main(args) -> int:
    """CLI entry: write one split's .beton; ValueError / FileNotFoundError for the CLI to report."""
    spec = BetonSpec(args.max_res, args.jpeg_proportion, args.quality)
    expected = beton_path(args.data_dir, args.dataset, args.split, spec)
    if args.out is not None and Path(args.out).resolve() != expected.resolve():
        raise ValueError(
            f"--out {args.out} is not where the {args.dataset} loader looks for it: {expected}"
        )
    try:
        import_ffcv()
    except ImportError:
        raise ValueError(
            "writing .beton files needs ffcv; run scripts/install_system_deps.sh"
        ) from None
    write_split(args.dataset, args.data_dir, args.split, spec, args.workers, args.page_size)
    return 0
