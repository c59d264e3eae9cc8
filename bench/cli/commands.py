"""The commands' runs: each takes the parsed arguments and returns the exit code; bad input is a
ValueError or FileNotFoundError that `main` (bench/cli/__init__.py) reports in one line, exit code 2."""

from __future__ import annotations

import logging
from pathlib import Path

from bench.cli.parser import PERF
from bench.config import grid
from bench.config.files import load_config
from bench.config.names import TORCHVISION_ALIAS, TORCHVISION_PREFIX, arch_name
from bench.config.recipe import RECIPE
from bench.config.spec import make_spec, parse_sets
from bench.measure.locality import Locality

log = logging.getLogger("bench")


def cmd_train(args) -> int:
    from bench import distributed
    from bench.run.devices import bind_gpu
    from bench.run.train import run

    blocking = next((p for p in [args.out, *args.out.parents] if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"--out {args.out}: {blocking} is a file; give a folder for the run")
    if blocking is not None:
        from bench.files import writable_folder

        try:
            writable_folder(
                blocking
            )  # fail now, naming the folder, not with a traceback after loading data
        except ValueError as error:
            raise ValueError(f"--out {args.out}: {error}") from None
    spec = make_spec(
        args.dataset,
        arch_name(args.arch),  # torchvision:<model> -> tv-<model> (bench/config/names.py)
        args.method,
        args.seed,
        parse_sets(args.set),
        load_config(args.config, check_data=False).variants,
    )
    _check_names(spec.dataset, args.arch, args.data_dir)  # as the user spelled it
    if args.gpu_slots < 1:
        raise ValueError(f"--gpu-slots {args.gpu_slots}: accepted: an integer >= 1")
    ranks = distributed.init_from_env()  # under torchrun: one run on WORLD_SIZE processes
    if ranks and not distributed.is_main():
        logging.getLogger().setLevel(logging.WARNING)  # progress lines from rank 0 only
    slot = bind_gpu(args.gpu_slots) if spec.recipe.get("device") != "cpu" and not ranks else None
    try:
        record = run(spec, args.out, args.data_dir)
    finally:
        if slot is not None:
            slot.close()  # frees the GPU slot for the next run
        distributed.shutdown()
    accuracy = "none" if record.test_acc is None else f"{record.test_acc:.2f}%"
    log.info(
        "%s: status %s, test accuracy %s -> %s",
        spec.method,
        record.status,
        accuracy,
        args.out / "record.json",
    )
    return 0


def _check_names(dataset: str, arch: str, data_dir: Path | None) -> None:
    from bench.data import check_name
    from bench.models import check_arch

    check_name(dataset, data_dir)
    check_arch(arch)


def cmd_list(args) -> int:
    from bench.data import DATASETS, image_folders
    from bench.measure import declare
    from bench.method import broken_methods, discover
    from bench.models import ARCHS
    from bench.models.zoo import offered

    # first, so that a bad config file prints its error and no half listing
    config = load_config(args.config, check_data=False)
    variants = config.variants  # the files' variants and every sweep point
    print("datasets:", ", ".join(sorted(DATASETS)))
    print("image folders:", ", ".join(image_folders(args.data_dir)) or "none")
    print("archs:   ", ", ".join(sorted(ARCHS)))
    print(
        f"torchvision archs: {TORCHVISION_PREFIX}<model> (also {TORCHVISION_ALIAS}<model>), "
        f"<model> one of: {', '.join(offered())}"
    )
    for name, cls in discover().items():
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        title = f"method {name}: {summary}" if summary else f"method {name}:"
        print(f"{title}  [locality: {_facts(cls.locality)}]")
        for line in _option_lines(cls.options) or ["  (no options)"]:
            print(line)
    for name, entry in variants.items():  # impl, method options and recipe keys
        print(f"variant {name}: {entry}")
    print("recipe (--set key=value, or a grid's recipe:):")
    for line in _option_lines(RECIPE):
        print(line)
    print("declared measures (bench/measure/<name>.py; record, log.csv and table):")
    for name, measure in declare.declared().items():
        column = f", table column {measure.column!r}" if measure.column else ""
        print(f"  {name}: {measure.doc}  [{measure.when}, {measure.accepted()}{column}]")
    for name, reason in broken_methods().items():  # after the rest, which stays usable; exit 1
        print(f"broken method {name}: {reason}")
    return 1 if broken_methods() else 0


def _facts(locality) -> str:
    """A rule's declared locality in words; the contract test refuses what this calls undeclared."""
    if locality is None:
        return "undeclared"
    return (
        locality.describe() if isinstance(locality, Locality) else f"not a Locality: {locality!r}"
    )


def _option_lines(options: dict) -> list[str]:
    """One line per declared option: name = default, what is accepted (type, bounds or choices), help."""
    return [
        f"  {key} = {opt.default!r}  [{opt.accepted()}]  {opt.help}" for key, opt in options.items()
    ]


def _expected(args) -> list[tuple[str, str, int]] | None:
    """The planned (arch, method, seed) runs from --config and --archs/--methods/--seeds, or None for all."""
    axes = {"archs": args.archs, "methods": args.methods, "seeds": args.seeds}
    if args.config is None and not any(axes.values()):
        return None
    base = {}
    if args.config is not None:
        grids = load_config(args.config).grids
        if args.dataset not in grids:
            raise ValueError(
                f"dataset {args.dataset!r} has no grid in {', '.join(map(str, args.config))}; "
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

    table = aggregate(
        args.runs_dir,
        args.dataset,
        _expected(args),
        args.allow_missing,
        out_dir=args.out_dir,
        published_as=args.published_as,
    )
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

    plot(args.runs_dir, args.dataset, args.out_dir, _expected(args))
    return 0


def cmd_claims(args) -> int:
    from bench.report.claims.markdown import write_claims

    claims = write_claims(args.datasets, args.out, args.runs_dir, args.records)
    for claim in claims:
        print(
            f"claim {claim.number}: {claim.verdict} ({sum(claim.passes)}/{len(claim.passes)} pairs)"
        )
    print(f"wrote {args.out}")
    return 0


def cmd_sweep_report(args) -> int:
    from bench.record import read
    from bench.report.findings import report

    sweeps = load_config(args.config, check_data=False).sweeps
    if not sweeps:
        raise ValueError(f"config key sweeps: none in {', '.join(map(str, args.config))}")
    table = report([read(p) for p in args.records], sweeps, args.dataset, args.out_dir)
    print(
        table[["method", "option", "value", "n_ok", "test_acc_mean", "delta_to_bp"]].to_string(
            index=False, float_format=lambda v: f"{v:.2f}"
        )
    )
    print(f"wrote {args.out_dir / 'findings.md'}")
    return 0


def cmd_perf(args) -> int:
    return PERF[args.perf_command][1].main(args)
