"""The command line's arguments: one function per command that adds its options to the command's parser
(`python -m bench <command> --help`); bench/cli/__init__.py pairs each with its help line and its run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.config.files import config_argument
from bench.layout import Layout
from bench.perf import biotorch as perf_biotorch
from bench.perf import data as perf_data
from bench.perf import epoch as perf_epoch
from bench.perf import load as perf_load
from bench.perf import step as perf_step

# `python -m bench perf <kind>`: {kind: (help, module with add_arguments and main)}
PERF = {
    "data": (
        "images/s of each loader vs the torchvision DataLoader doing the same work",
        perf_data,
    ),
    "step": (
        "training-step time of every method variant and its ratio to BP, side by side",
        perf_step,
    ),
    "epoch": (
        "one training epoch of the suite's trainer vs a plain torchvision-DataLoader fp32 loop",
        perf_epoch,
    ),
    "load": (
        "a job's start-up: import the suite and load one dataset, in fresh processes",
        perf_load,
    ),
    "biotorch": (
        "a rule's training step beside the biotorch package's, interleaved, and their ratio",
        perf_biotorch,
    ),
}


def train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument(
        "--method", required=True, help="a method file name or a config variant (ssa-no_align)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, required=True, help="run folder: record.json, log.csv, checkpoint.pt"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe key or method option, e.g. --set epochs=1 --set lambda_align=0",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where on-disk datasets live")
    config_argument(parser, "with the variants and sweeps")
    parser.add_argument(
        "--gpu-slots",
        type=int,
        default=os.environ.get("BENCH_GPU_SLOTS") or 1,
        metavar="S",
        help="runs sharing one GPU: the run claims a free one of GPUs x S slots (bench/run/devices.py; "
        "default $BENCH_GPU_SLOTS or 1)",
    )


def listing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="also list the image folders found here"
    )
    config_argument(parser, "with the variants and sweeps to list")


def perf(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="perf_command", required=True)
    for kind, (line, module) in PERF.items():
        module.add_arguments(kinds.add_parser(kind, help=line))


def aggregate(parser: argparse.ArgumentParser) -> None:
    _reporting_args(parser, out_default=Path("results"))
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="write the table even if planned runs have no record (their rows say so)",
    )
    parser.add_argument(
        "--published-as",
        metavar="DATASET",
        help="show the published figures of DATASET beside these runs (e.g. cifar10 for the "
        "cifar10-jpeg image folder); default: the dataset itself",
    )


def claims(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--datasets", nargs="+", required=True, help="datasets whose records are the evidence"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path(Layout("results").runs),
        help="folder of <dataset>/<arch>/...: every record found there (unless --records)",
    )
    parser.add_argument(
        "--records", nargs="+", type=Path, help="exactly these record.json files (the pipeline's)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/paper/claims.md"))


def sweep_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True)
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        required=True,
        help="config files holding the sweeps, merged as for train",
    )
    parser.add_argument(
        "--records", nargs="+", type=Path, required=True, help="the sweep's record.json files"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("results/sweep"))


def plot(parser: argparse.ArgumentParser) -> None:
    _reporting_args(parser, out_default=Path("results/figures"))


def _reporting_args(parser: argparse.ArgumentParser, out_default: Path) -> None:
    """Arguments shared by aggregate and plot: where records are, and which runs the grid plans."""
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path(Layout("results").runs),
        help="folder of <dataset>/<arch>/...",
    )
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out-dir", type=Path, default=out_default)
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        help="config file whose --dataset grid lists the planned runs, merged as for train "
        "(default: every record found)",
    )
    parser.add_argument("--archs", nargs="+", help="planned archs (overrides the config grid's)")
    parser.add_argument(
        "--methods", nargs="+", help="planned method variants (overrides the config grid's)"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, help="planned seeds (overrides the config grid's)"
    )
