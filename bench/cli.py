"""The command line: `python -m bench train|list` (bad input exits with code 2 and says what is accepted)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from bench import stop
from bench.config import DEFAULT_CONFIG, RECIPE, load_variants, make_spec, parse_sets
from bench.layout import Layout

log = logging.getLogger("bench")


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
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
    train.add_argument(
        "--config",
        type=Path,
        action="append",
        help="config file with the variants and sweeps (repeat to merge several, later ones "
        f"win, as Snakemake merges them; default {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[1])})",
    )
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
    from bench.data import beton
    from bench.perf import (
        data as perf_data,
    )
    from bench.perf import (
        epoch as perf_epoch,
    )
    from bench.perf import (
        load as perf_load,
    )
    from bench.perf import (
        step as perf_step,
    )

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
    from bench import gridrun

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
        help="config files holding the sweeps (repeat to merge, as for train)",
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
        default=None,
        help="config file whose --dataset grid lists the planned runs (default: every record found)",
    )
    parser.add_argument("--archs", nargs="+", help="planned archs (overrides the config grid's)")
    parser.add_argument(
        "--methods", nargs="+", help="planned method variants (overrides the config grid's)"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, help="planned seeds (overrides the config grid's)"
    )


def cmd_train(args) -> int:
    from bench import distributed, sweep
    from bench.devices import bind_gpu
    from bench.train import run

    blocking = next((p for p in [args.out, *args.out.parents] if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UsageError(f"--out {args.out}: {blocking} is a file; give a folder for the run")
    if blocking is not None:
        from bench.files import writable_folder

        try:
            writable_folder(
                blocking
            )  # fail now, naming the folder, not with a traceback after loading data
        except ValueError as error:
            raise UsageError(f"--out {args.out}: {error}") from None
    try:
        spec = make_spec(
            args.dataset,
            args.arch,
            args.method,
            args.seed,
            parse_sets(args.set),
            sweep.variants(args.config or [DEFAULT_CONFIG]),
        )
        _check_names(spec.dataset, spec.arch, args.data_dir)
        if args.gpu_slots < 1:
            raise ValueError(f"--gpu-slots {args.gpu_slots}: accepted: an integer >= 1")
        ranks = distributed.init_from_env()  # under torchrun: one run on WORLD_SIZE processes
        if ranks and not distributed.is_main():
            logging.getLogger().setLevel(logging.WARNING)  # progress lines from rank 0 only
        slot = (
            bind_gpu(args.gpu_slots) if spec.recipe.get("device") != "cpu" and not ranks else None
        )
        try:
            record = run(spec, args.out, args.data_dir)
        finally:
            if slot is not None:
                slot.close()  # frees the GPU slot for the next run
            distributed.shutdown()
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    accuracy = "none" if record["test_acc"] is None else f"{record['test_acc']:.2f}%"
    log.info(
        "%s: status %s, test accuracy %s -> %s",
        spec.method,
        record["status"],
        accuracy,
        args.out / "record.json",
    )
    return 0


def _check_names(dataset: str, arch: str, data_dir: Path | None) -> None:
    from bench.data import check_name
    from bench.models import ARCHS

    check_name(dataset, data_dir)
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(sorted(ARCHS))}")


def cmd_list(args) -> int:
    from bench.data import DATASETS, image_folders
    from bench.method import discover
    from bench.models import ARCHS

    print("datasets:", ", ".join(sorted(DATASETS)))
    print("image folders:", ", ".join(image_folders(args.data_dir)) or "none")
    print("archs:   ", ", ".join(sorted(ARCHS)))
    for name, cls in discover().items():
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"method {name}: {summary}" if summary else f"method {name}:")
        for line in _option_lines(cls.options) or ["  (no options)"]:
            print(line)
    for name, entry in load_variants().items():
        print(f"variant {name}: {entry}")
    print("recipe (--set key=value, or a grid's recipe:):")
    for line in _option_lines(RECIPE):
        print(line)
    return 0


def _option_lines(options: dict) -> list[str]:
    """One line per declared option: name = default, what is accepted (type, bounds or choices), help."""
    return [
        f"  {key} = {opt.default!r}  [{opt.accepted()}]  {opt.help}" for key, opt in options.items()
    ]


def _expected(args) -> list[tuple[str, str, int]] | None:
    """The planned (arch, method, seed) runs from --config and --archs/--methods/--seeds, or None for all."""
    from bench import grid

    axes = {"archs": args.archs, "methods": args.methods, "seeds": args.seeds}
    if args.config is None and not any(axes.values()):
        return None
    base = {}
    if args.config is not None:
        grids = grid.load(args.config)
        if args.dataset not in grids:
            raise ValueError(
                f"dataset {args.dataset!r} has no grid in {args.config}; "
                f"its datasets: {', '.join(grids) or 'none'}"
            )
        base = {
            "archs": grids[args.dataset].archs,
            "methods": grids[args.dataset].methods,
            "seeds": grids[args.dataset].seeds,
        }
    axes = {key: value or base.get(key) for key, value in axes.items()}
    unset = [key for key, value in axes.items() if not value]
    if unset:
        raise ValueError(
            f"--{unset[0]} is needed (or --config) when any of --archs/--methods/--seeds is given"
        )
    return grid.Grid(
        args.dataset, tuple(axes["archs"]), tuple(axes["methods"]), tuple(axes["seeds"])
    ).runs()


def cmd_aggregate(args) -> int:
    from bench.report.table import aggregate

    try:
        table = aggregate(
            args.runs_dir,
            args.dataset,
            _expected(args),
            args.allow_missing,
            out_dir=args.out_dir,
            published_as=args.published_as,
        )
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    print(
        table[
            [
                "arch",
                "method",
                "n_ok",
                "n_seeds",
                "test_acc_mean",
                "test_acc_std",
                "delta_to_bp",
                "status",
            ]
        ].to_string(index=False, float_format=lambda v: f"{v:.2f}")
    )
    return 0


def cmd_plot(args) -> int:
    from bench.report.figures import plot

    try:
        plot(args.runs_dir, args.dataset, args.out_dir, _expected(args))
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    return 0


def cmd_claims(args) -> int:
    from bench.report.claims import write_claims

    try:
        claims = write_claims(args.datasets, args.out, args.runs_dir, args.records)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    for claim in claims:
        print(
            f"claim {claim.number}: {claim.verdict} ({sum(claim.passes)}/{len(claim.passes)} pairs)"
        )
    print(f"wrote {args.out}")
    return 0


def cmd_sweep_report(args) -> int:
    from bench import sweep
    from bench.report.findings import report
    from bench.report.records import read_record

    try:
        sweeps = sweep.load_files(args.config).get("sweeps") or {}
        if not sweeps:
            raise ValueError(f"config key sweeps: none in {', '.join(map(str, args.config))}")
        table = report([read_record(p) for p in args.records], sweeps, args.dataset, args.out_dir)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    print(
        table[["method", "option", "value", "n_ok", "test_acc_mean", "delta_to_bp"]].to_string(
            index=False, float_format=lambda v: f"{v:.2f}"
        )
    )
    print(f"wrote {args.out_dir / 'findings.md'}")
    return 0


def cmd_perf(args) -> int:
    from bench.perf import data, epoch, load, step

    try:
        return {"data": data, "epoch": epoch, "load": load, "step": step}[args.perf_command].main(
            args
        )
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None


def cmd_grid(args) -> int:
    from bench import gridrun

    try:
        return gridrun.main(args)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None


def cmd_beton(args) -> int:
    from bench.data import beton

    try:
        return beton.main(args)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    args = _parser().parse_args(argv)
    previous = stop.install() if threading.current_thread() is threading.main_thread() else None
    try:
        return {
            "train": cmd_train,
            "list": cmd_list,
            "perf": cmd_perf,
            "beton": cmd_beton,
            "aggregate": cmd_aggregate,
            "plot": cmd_plot,
            "claims": cmd_claims,
            "sweep-report": cmd_sweep_report,
            "grid": cmd_grid,
        }[args.command](args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # a full disk, a path that is a folder, no permission: say which file, no traceback
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, stop.Terminated) as stopped:
        # Files are written through temp file + rename and the run-folder lock is released on the way out,
        # so what is on disk is the last complete checkpoint and record: the same command resumes.
        code, name = (
            (130, "interrupted (Ctrl-C)")
            if isinstance(stopped, KeyboardInterrupt)
            else (143, "terminated (SIGTERM)")
        )
        print(
            f"{name}: stopped; files on disk are complete; rerun the same command to resume",
            file=sys.stderr,
        )
        return code
    finally:
        if previous is not None:
            stop.restore(previous)
