"""How many epochs a grid's runs can train before a deadline, from the perf table (`perf step`'s CSV):
`python -m bench grid --epochs auto` (bench/gridrun.py)."""

from __future__ import annotations

import math


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
    lacks) is costed as the slowest row of its arch.
    """
    times = {(r["arch"], r["method"]): float(r["median_ms"]) / 1000 for r in perf_rows}
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
