"""The command line: `python -m bench train|list` (bad input exits with code 2 and says what is accepted)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.config import DEFAULT_CONFIG, load_variants, make_spec, parse_sets

log = logging.getLogger("bench")


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one (dataset, arch, method variant, seed) run")
    train.add_argument("--dataset", required=True)
    train.add_argument("--arch", required=True)
    train.add_argument("--method", required=True, help="a method file name or a config variant (ssa-no_align)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, required=True, help="run folder: record.json, log.csv, checkpoint.pt")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a recipe key or method option, e.g. --set epochs=1 --set lambda_align=0")
    train.add_argument("--data-dir", type=Path, default=None, help="where on-disk datasets live")
    train.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config file with the variants")
    commands.add_parser("list", help="print the datasets, archs, methods and variants this suite knows")
    return parser


def cmd_train(args) -> int:
    from bench.train import run

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder for the run")
    try:
        spec = make_spec(args.dataset, args.arch, args.method, args.seed, parse_sets(args.set),
                         load_variants(args.config))
        _check_names(spec.dataset, spec.arch)
        record = run(spec, args.out, args.data_dir)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    log.info("%s: status %s, test accuracy %.2f%% -> %s", spec.method, record["status"],
             record["test_acc"] or float("nan"), args.out / "record.json")
    return 0


def _check_names(dataset: str, arch: str) -> None:
    from bench.data import DATASETS
    from bench.models import ARCHS

    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(sorted(ARCHS))}")


def cmd_list(args) -> int:
    from bench.data import DATASETS
    from bench.method import discover
    from bench.models import ARCHS

    print("datasets:", ", ".join(sorted(DATASETS)))
    print("archs:   ", ", ".join(sorted(ARCHS)))
    for name, cls in discover().items():
        options = ", ".join(f"{k}={opt.default!r}" for k, opt in cls.options.items()) or "no options"
        print(f"method {name}: {options}")
    for name, entry in load_variants().items():
        print(f"variant {name}: {entry}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    args = _parser().parse_args(argv)
    try:
        return {"train": cmd_train, "list": cmd_list}[args.command](args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
