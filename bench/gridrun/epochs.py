"""How many epochs a grid's runs can train before a deadline, from the perf table (`perf step`'s CSV):
`python -m bench grid --epochs auto` (bench/gridrun/runner.py). The table is checked before any run starts:
every row's arch, method and median_ms (a finite time > 0), one row per (arch, method), naming the
file and line."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

COLUMNS = ("arch", "method", "median_ms")  # the columns the estimate reads; `perf step` writes more
MAX_BYTES = 16 * 2**20  # a perf table is a few KB


def read_perf_table(path: Path) -> list[dict]:
    """The rows of the `perf step` CSV at `path`, each with its `line`, checked as `step_times` checks."""
    what = f"--perf-table {path}"
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found; write it with `python -m bench perf step --out`"
        )
    if not path.is_file():
        raise ValueError(f"{what} is not a regular file; give the CSV `perf step --out` wrote")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ValueError(f"{what}: over {MAX_BYTES // 2**20} MiB; no perf table is")
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""), strict=True)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{what} line 1: missing column(s) {', '.join(missing)}; accepted: the CSV "
                f"`perf step` writes, with columns {', '.join(COLUMNS)} at least"
            )
        rows = [row | {"line": reader.line_num} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{what}: not readable as a CSV file: {error}") from None
    step_times(rows, what)
    return rows


def step_times(rows: list[dict], source: str = "the perf table") -> dict[tuple[str, str], float]:
    """{(arch, method): median step time in seconds}; a row without a finite median_ms > 0, or an
    (arch, method) timed twice, is a ValueError naming `source` and the line."""
    times: dict[tuple[str, str], float] = {}
    lines: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        where = f"{source} line {row.get('line', i + 2)}"
        key = (row.get("arch") or "", row.get("method") or "")
        if not all(key):
            raise ValueError(f"{where}: no arch or method; every row names both")
        text = row.get("median_ms")
        try:
            ms = float(text)
        except (TypeError, ValueError):
            ms = math.nan
        if not (math.isfinite(ms) and ms > 0):
            raise ValueError(
                f"{where}: bad value {text!r} for 'median_ms' ({key[0]} {key[1]}); "
                "accepted: a finite step time in milliseconds > 0"
            )
        if key in times:
            raise ValueError(
                f"{where}: {key[0]} {key[1]} again (line {lines[key]}); accepted: one row each"
            )
        times[key], lines[key] = ms / 1000, row.get("line", i + 2)
    return times


def estimate_epochs(
    perf_rows: list[dict],
    runs: list[tuple[str, str, int]],
    train_images: int,
    batch_size: int,
    seconds: float,
    jobs: int,
    packing_gain: float,
    overhead: float = 1.3,
    startup_s: float = 15.0,
    most: int = 30,
) -> tuple[int, str]:
    """(epochs, how): the most epochs every run of `runs` can train within `seconds`, from a perf table.

    One run-epoch costs steps x its median step time (the `perf step` row of its arch and method on
    this device); `overhead` covers evaluation and the per-epoch probes, `startup_s` each process's
    start (imports, data onto the device). The grid's runs share the device `jobs` at a time;
    `packing_gain` is how much more work per second `jobs` packed runs get done than one alone (1:
    none; small networks leave a large GPU mostly idle, so packing gains), an assumption the log
    states. The result is capped at `most` and at least 1. A run with no perf row (a method the table
    lacks) is costed as the slowest row of its arch. The rows are checked first (`step_times`).
    """
    times = step_times(perf_rows)
    steps = max(1, train_images // batch_size)
    per_epoch = 0.0
    for arch, method, _ in runs:
        per_step = times.get((arch, method))
        if per_step is None:
            same_arch = [t for (a, _), t in times.items() if a == arch]
            if not same_arch:
                raise ValueError(
                    f"the perf table has no row for arch {arch!r}; measure it first (perf step --arch {arch})"
                )
            per_step = max(same_arch)
        per_epoch += steps * per_step * overhead
    gain = max(1.0, min(packing_gain, jobs))
    starting = startup_s * math.ceil(len(runs) / jobs)  # the runs start in waves of `jobs`
    room = max(0.0, seconds - starting) * gain
    epochs = max(1, min(most, math.floor(room / per_epoch))) if per_epoch else most
    how = (
        f"{len(runs)} runs cost {per_epoch:.0f} s per epoch one at a time ({steps} steps of the perf table's "
        f"median x {overhead} for evaluation and probes) and {startup_s:g} s each to start; {jobs} at a time "
        f"with an assumed packing gain of {gain:g}, {seconds:.0f} s hold {room / per_epoch if per_epoch else math.inf:.1f} "
        f"epochs; epochs = {epochs} (at most {most})"
    )
    return epochs, how
