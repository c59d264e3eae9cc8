"""The command line's arguments: `python -m bench <command> --help` (the commands run in bench/cli.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench import gridrun
from bench.config_files import config_argument
from bench.data import beton
from bench.layout import Layout
from bench.perf import data as perf_data
from bench.perf import epoch as perf_epoch
from bench.perf import load as perf_load
from bench.perf import step as perf_step

DESCRIPTION = "The command line: `python -m bench train|list` (bad input exits with code 2 and says what is accepted)."


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one (dataset, arch, method variant, seed) run")
    train.add_argument("--dataset", required=True)
    train.add_argument("--arch", required=True)
    train.add_argument(
        "--method", required=True, help="a method file name or a config variant (ssa-no_align)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--out", type=Path, required=True, help="run folder: record.json, log.csv, checkpoint.pt"
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe key or method option, e.g. --set epochs=1 --set lambda_align=0",
    )
    train.add_argument("--data-dir", type=Path, default=None, help="where on-disk datasets live")
    config_argument(train, "with the variants and sweeps")
    train.add_argument(
        "--gpu-slots",
        type=int,
        default=os.environ.get("BENCH_GPU_SLOTS") or 1,
        metavar="S",
        help="runs sharing one GPU: the run claims a free one of GPUs x S slots (bench/devices.py; "
        "default $BENCH_GPU_SLOTS or 1)",
    )
    listing = commands.add_parser(
        "list", help="print the datasets, archs, methods and variants this suite knows"
    )
    listing.add_argument(
        "--data-dir", type=Path, default=None, help="also list the image folders found here"
    )
    config_argument(listing, "with the variants and sweeps to list")
    perf = commands.add_parser("perf", help="throughput benchmarks")
    perf_kinds = perf.add_subparsers(dest="perf_command", required=True)
    perf_data.add_arguments(
        perf_kinds.add_parser(
            "data", help="images/s of each loader vs the torchvision DataLoader doing the same work"
        )
    )
    perf_step.add_arguments(
        perf_kinds.add_parser(
            "step",
            help="training-step time of every method variant and its ratio to BP, side by side",
        )
    )
    perf_epoch.add_arguments(
        perf_kinds.add_parser(
            "epoch",
            help="one training epoch of the suite's trainer vs a plain torchvision-DataLoader fp32 loop",
        )
    )
    perf_load.add_arguments(
        perf_kinds.add_parser(
            "load",
            help="a job's start-up: import the suite and load one dataset, in fresh processes",
        )
    )
    beton.add_arguments(
        commands.add_parser("beton", help="write one split of an image folder to an FFCV .beton")
    )
    gridrun.add_arguments(
        commands.add_parser(
            "grid",
            help="one dataset's runs without Snakemake, --jobs at a time, "
            "cut at a deadline (the prepared GPU run's grid)",
        )
    )
    aggregate = commands.add_parser(
        "aggregate", help="records of one dataset -> OUT_DIR/<dataset>_table.csv and .md"
    )
    _reporting_args(aggregate, out_default=Path("results"))
    aggregate.add_argument(
        "--allow-missing",
        action="store_true",
        help="write the table even if planned runs have no record (their rows say so)",
    )
    aggregate.add_argument(
        "--published-as",
        metavar="DATASET",
        help="show the published figures of DATASET beside these runs (e.g. cifar10 for the "
        "cifar10-jpeg image folder); default: the dataset itself",
    )
    claims = commands.add_parser(
        "claims",
        help="records of the paper datasets -> claims.md: evidence and a "
        "verdict for each claim of the paper",
    )
    claims.add_argument(
        "--datasets", nargs="+", required=True, help="datasets whose records are the evidence"
    )
    claims.add_argument(
        "--runs-dir",
        type=Path,
        default=Path(Layout("results").runs),
        help="folder of <dataset>/<arch>/...: every record found there (unless --records)",
    )
    claims.add_argument(
        "--records", nargs="+", type=Path, help="exactly these record.json files (the pipeline's)"
    )
    claims.add_argument("--out", type=Path, default=Path("results/paper/claims.md"))
    sweep_report = commands.add_parser(
        "sweep-report",
        help="a sweep's records -> its table, a sensitivity figure per option, and findings.md",
    )
    sweep_report.add_argument("--dataset", required=True)
    sweep_report.add_argument(
        "--config",
        type=Path,
        action="append",
        required=True,
        help="config files holding the sweeps, merged as for train",
    )
    sweep_report.add_argument(
        "--records", nargs="+", type=Path, required=True, help="the sweep's record.json files"
    )
    sweep_report.add_argument("--out-dir", type=Path, default=Path("results/sweep"))
    plot = commands.add_parser(
        "plot", help="records of one dataset -> OUT_DIR/<dataset>_<figure>.png and .pdf"
    )
    _reporting_args(plot, out_default=Path("results/figures"))
    return parser


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
