"""`perf step`'s options, their checks and its output files (the measure itself: bench/perf/step/__init__.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.config.files import config_argument, load_config
from bench.config.spec import parse_sets
from bench.models import check_arch
from bench.perf.common import add_speed_arguments, log, speed_options, write_csv
from bench.perf.step.report import plot_ratios, plot_saved, report, with_memory_ratio
from bench.perf.step.timing import measure_arch
from bench.run.speed import resolve_device

DEFAULT_ARCHS = ("smallconv", "vgg13", "resnet32")
# Rows beyond the config's variants: SSA started at a quarter of full rank, where its factored
# layers should turn fewer FLOPs into less time.
EXTRA_VARIANTS = {"ssa-r0.25": {"impl": "ssa", "rank_ratio": 0.25}}


def step_variants(config_files: list[Path] | None) -> dict[str, dict]:
    """The variants to time: the config files' own and their sweeps' points, then EXTRA_VARIANTS."""
    return {**load_config(config_files, check_data=False).variants, **EXTRA_VARIANTS}


def parse_method(token: str) -> tuple[str, str, dict]:
    """'name' or 'name:key=value,key=value' -> (row name, variant name, option overrides)."""
    name, _, options = token.partition(":")
    return token, name, parse_sets([pair for pair in options.split(",") if pair]) if options else {}


def main(args) -> int:
    """CLI entry: measure every arch, log the table, write --out as CSV and --plot, --plot-ratios as
    figures when given."""
    args.arch = [check_arch(arch) for arch in args.arch]  # torchvision:M -> tv-M
    for key in ("arch", "methods"):  # one row each: `bench grid` refuses a table with a row twice
        if len(set(values := getattr(args, key) or [])) < len(values):  # a script's list may repeat
            log.warning("--%s lists %s more than once; timing each once", key, values)
            setattr(args, key, list(dict.fromkeys(values)))
    if min(args.steps, args.batch_size) < 1 or args.warmup < 0:
        raise ValueError("--steps and --batch-size must be >= 1 and --warmup >= 0")
    device = resolve_device(args.device)
    variants = step_variants(args.config)
    methods = [parse_method(token) for token in (args.methods or list(variants))]
    args.speed_sets = speed_options(
        args, "(method options go after the method name: ssa:rank_ratio=0.5)"
    )
    args.in_shape = (3, args.image_size, args.image_size)
    log.info(
        "perf step: batch %d of %s, %d classes, %d warm-up + %d timed steps per method, device %s, "
        "%d threads",
        args.batch_size,
        "x".join(map(str, args.in_shape)),
        args.classes,
        args.warmup,
        args.steps,
        device,
        torch.get_num_threads(),
    )
    rows = []
    for arch in args.arch:
        done = with_memory_ratio(measure_arch(arch, methods, variants, args, device))
        rows += done
        summary = "\n".join(report(done))
        log.info("%s done; matmul peak %.1f GFLOP/s:\n%s", arch, done[0]["peak_gflops"], summary)
    for line in report(rows):
        log.info("%s", line)
    if args.plot:
        plot_saved(rows, args.arch, args.plot)
    if args.plot_ratios:
        plot_ratios(rows, args.arch, args.plot_ratios)
    if args.out:
        write_csv(args.out, rows)
    return 0


def add_arguments(parser) -> None:
    """The `perf step` options, for the CLI's subparser."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--arch", nargs="+", default=list(DEFAULT_ARCHS), help="architectures to measure"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="variants, or name:key=value,.. (default: every config variant and ssa-r0.25)",
    )
    config_argument(parser, "with the variants and sweeps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--image-size", type=int, default=32, help="side of the synthetic 3-channel images"
    )
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument(
        "--steps", type=int, default=10, help="timed steps per method (interleaved)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    parser.add_argument(
        "--peak-size", type=int, default=2048, help="side of the square matmul giving the peak"
    )
    add_speed_arguments(parser, "for every method")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as CSV here")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="also draw saved activations per step against arch (in --arch order) as PNG here",
    )
    parser.add_argument(
        "--plot-ratios",
        type=Path,
        default=None,
        help="also draw each row's memory beyond the weights (saved activations + auxiliary modules) and "
        "step time as ratios to BP on its arch (PNG or PDF by suffix) here",
    )
