"""RESULTS/status.csv of `python -m bench grid` (bench/gridrun/runner.py): one row per planned run with its
outcome, from each run's folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from bench import record

STATUS_FIELDS = (
    "arch",
    "method",
    "seed",
    "status",
    "exit_code",
    "seconds",
    "epochs_done",
    "test_acc",
)


def write_status(jobs: list, path: Path) -> None:
    """RESULTS/status.csv: one row per planned run (a runner.Job) with its outcome (written whole, then
    renamed)."""
    rows = []
    for job in jobs:
        epochs = _epochs_done(job.folder / "log.csv")
        acc = None
        if job.status in ("finished", "diverged"):
            acc = record.read(job.folder / "record.json").test_acc
        rows.append(
            {
                "arch": job.arch,
                "method": job.method,
                "seed": job.seed,
                "status": job.status,
                "exit_code": job.exit_code,
                "seconds": None if job.seconds is None else round(job.seconds, 1),
                "epochs_done": epochs,
                "test_acc": acc,
            }
        )
    temporary = path.with_suffix(".csv.tmp")
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STATUS_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def _epochs_done(log_csv: Path) -> int:
    if not log_csv.is_file():
        return 0
    with open(log_csv) as f:
        return max(0, sum(1 for _ in f) - 1)
