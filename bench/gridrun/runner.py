"""`python -m bench grid`: one dataset's grid without Snakemake, a few runs at a time, until a deadline.

For a machine that has the suite but not Snakemake (the lent GPU machine has neither it nor jsonschema).
Each run is `python -m bench train` in its own process: the command and run-folder layout of the
Snakefile's train rule (bench.layout.Layout), so records land where `aggregate`, `plot` and `claims` read
them, and runs share GPUs through the trainer's own slots (`--gpu-slots`). Runs start in priority order,
archs outermost (the order given), then methods, then seeds, `--jobs` at a time. At the deadline every
run still training gets SIGTERM (the trainer stops, keeps its last checkpoint and writes no record) and
is reported as cut, never as a result; runs never started are reported as not started. Every run's
outcome goes to RESULTS/status.csv, its output to the train rule's log (bench.layout.Layout); a rerun
of the same command resumes cut runs from their checkpoints.

`--epochs auto` sizes runs from a `perf step` table of the same device (epochs.py). Bad input (a number,
an unknown dataset or arch, a run listed twice, a perf table's row) is refused, exit 2, before any run.
"""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import files, record
from bench.config import grid
from bench.gridrun.epochs import estimate_epochs, read_perf_table
from bench.gridrun.status import write_status
from bench.layout import Layout

log = logging.getLogger("bench.gridrun")
STOP_GRACE_S = 20  # after SIGTERM, time to finish the step and release the folder, before SIGKILL


@dataclass
class Job:
    arch: str
    method: str
    seed: int
    folder: Path
    log: Path  # the run's stdout and stderr: the Snakefile train rule's log (Layout.train_log)
    process: subprocess.Popen | None = None
    started: float | None = None
    seconds: float | None = None
    status: str = "not_started"  # finished | diverged | failed | cut | not_started
    exit_code: int | None = None

    @property
    def name(self) -> str:
        return f"{self.arch} {self.method} seed {self.seed}"


def train_command(
    job: Job,
    dataset: str,
    sets: list[str],
    configs: list[Path],
    data_dir: Path | None,
    gpu_slots: int,
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "bench",
        "train",
        "--dataset",
        dataset,
        "--arch",
        job.arch,
        "--method",
        job.method,
        "--seed",
        str(job.seed),
        "--out",
        str(job.folder),
        "--gpu-slots",
        str(gpu_slots),
    ]
    for path in configs:
        command += ["--config", str(path)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    for pair in sets:
        command += ["--set", pair]
    return command


def run_grid(
    jobs: list[Job],
    commands: dict[int, list[str]],
    parallel: int,
    deadline_s: float,
    poll_s: float = 0.5,
) -> list[Job]:
    """Start `jobs` in order, `parallel` at a time; at `deadline_s` after the start, stop what still runs."""
    start = time.monotonic()
    waiting = list(range(len(jobs)))
    running: list[int] = []
    try:
        while waiting or running:
            for i in list(running):
                job = jobs[i]
                if job.process.poll() is not None:
                    _finish(job)
                    running.remove(i)
            if time.monotonic() - start >= deadline_s:
                break
            while waiting and len(running) < parallel:
                i = waiting.pop(0)
                job = jobs[i]
                job.folder.mkdir(parents=True, exist_ok=True)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "w") as out:
                    job.process = subprocess.Popen(
                        commands[i], stdout=out, stderr=subprocess.STDOUT
                    )
                job.started, job.status = time.monotonic(), "running"
                running.append(i)
                log.info("started %s (%d waiting)", job.name, len(waiting))
            time.sleep(poll_s)
    finally:  # the deadline, or an interrupt of the runner itself: stop every run still going
        _stop([jobs[i] for i in running])
    return jobs


def _finish(job: Job) -> None:
    job.exit_code = job.process.returncode
    job.seconds = time.monotonic() - job.started
    if job.exit_code == 0 and (job.folder / "record.json").is_file():
        job.status = _record_status(job.folder / "record.json")
    else:
        job.status = "failed"
    log.info("%s: %s (exit %s) after %.0f s", job.name, job.status, job.exit_code, job.seconds)


def _stop(running: list[Job]) -> None:
    for job in running:
        if job.process.poll() is None:
            job.process.send_signal(signal.SIGTERM)
    for job in running:
        try:
            job.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()
        job.exit_code, job.seconds = job.process.returncode, time.monotonic() - job.started
        # A run that ended of itself in the same instant is what it is; the rest were cut.
        finished = job.exit_code == 0 and (job.folder / "record.json").is_file()
        job.status = _record_status(job.folder / "record.json") if finished else "cut"
        log.info("%s: %s at the deadline", job.name, job.status)


def _record_status(path: Path) -> str:
    """A finished run's outcome from its record; a record the reader refuses is a failed run (said in
    the log), never a reason to stop the grid."""
    try:
        return "diverged" if record.read(path).status == "diverged" else "finished"
    except ValueError as error:
        log.warning("%s", error)
        return "failed"


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True)
    parser.add_argument(
        "--archs", nargs="+", required=True, help="in priority order: the first starts first"
    )
    parser.add_argument(
        "--methods", nargs="+", required=True, help="method files or config variants"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--results",
        type=Path,
        required=True,
        help="results folder: its run folders, logs and status.csv (bench/layout.py)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recipe keys of every run"
    )
    parser.add_argument(
        "--config", type=Path, action="append", help="config files with the variants (as train's)"
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument(
        "--gpu-slots", type=int, default=1, help="runs sharing one GPU (the trainer's slots)"
    )
    parser.add_argument(
        "--deadline-s", type=float, required=True, help="seconds after which running runs are cut"
    )
    parser.add_argument(
        "--epochs",
        default=None,
        help="epochs of every run, or auto (needs --perf-table); default: the recipe's",
    )
    parser.add_argument(
        "--perf-table", type=Path, help="perf step CSV measured on this device, for --epochs auto"
    )
    parser.add_argument(
        "--train-images", type=int, default=50000, help="training images, for --epochs auto"
    )
    parser.add_argument(
        "--max-epochs", type=int, default=30, help="--epochs auto: at most this many"
    )
    parser.add_argument(
        "--packing-gain",
        type=float,
        default=4.0,
        help="--epochs auto: assumed throughput of --jobs packed runs over one alone",
    )


def check_arguments(args) -> None:
    """Refuse, before any run starts, a bad number, an unknown dataset or arch, and a run listed twice."""
    from bench.data import check_name
    from bench.models import check_arch

    for name in ("jobs", "gpu_slots", "train_images", "max_epochs"):
        if getattr(args, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')} {getattr(args, name)}: accepted: an integer >= 1"
            )
    if not (math.isfinite(args.deadline_s) and args.deadline_s > 0):
        raise ValueError(
            f"--deadline-s {args.deadline_s}: accepted: a finite number of seconds > 0"
        )
    check_name(args.dataset, args.data_dir)  # the trainer's check, with the --data-dir it gets
    args.archs = [check_arch(arch, "--archs") for arch in args.archs]  # torchvision:M -> tv-M
    for key in ("archs", "methods", "seeds"):
        values = getattr(args, key)
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise ValueError(f"--{key} lists {twice!r} twice; accepted: each {key[:-1]} once")


def main(args) -> int:
    from bench.config.files import load_config
    from bench.config.spec import make_spec, parse_sets

    check_arguments(args)
    config = load_config(args.config, check_data=False)  # the trainer's variants, sweep points too
    configs, variants = [Path(path) for path in config.files], config.variants
    sets = list(args.set)
    if args.epochs not in (None, "auto"):
        sets.append(f"epochs={args.epochs}")
    runs = grid.Grid(args.dataset, tuple(args.archs), tuple(args.methods), tuple(args.seeds)).runs()
    # every run's spec checked before any starts, as in the Snakefile
    specs = [make_spec(args.dataset, *run, parse_sets(sets), variants) for run in runs]
    if args.epochs == "auto":
        if args.perf_table is None:
            raise ValueError(
                "--epochs auto needs --perf-table (a perf step CSV measured on this device)"
            )
        epochs, how = estimate_epochs(
            read_perf_table(args.perf_table),
            runs,
            args.train_images,
            specs[0].recipe["batch_size"],
            args.deadline_s,
            args.jobs,
            args.packing_gain,
            most=args.max_epochs,
        )
        log.info("epochs: %s", how)
        sets.append(f"epochs={epochs}")
    layout = Layout(str(args.results))
    jobs = [
        Job(
            *run,
            Path(layout.run_dir(args.dataset, *run)),
            Path(layout.train_log(args.dataset, *run)),
        )
        for run in runs
    ]
    commands = {
        i: train_command(job, args.dataset, sets, configs, args.data_dir, args.gpu_slots)
        for i, job in enumerate(jobs)
    }
    files.writable_folder(args.results)  # a file or a read-only folder: named, before any run
    try:
        run_grid(jobs, commands, args.jobs, args.deadline_s)
    finally:
        write_status(jobs, Path(layout.status()))
    counts = {
        status: sum(job.status == status for job in jobs)
        for status in ("finished", "diverged", "cut", "failed", "not_started")
    }
    log.info(
        "grid of %d runs: %s -> %s",
        len(jobs),
        ", ".join(f"{v} {k}" for k, v in counts.items() if v),
        layout.status(),
    )
    return 1 if counts["failed"] else 0
