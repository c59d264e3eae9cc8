"""Optional TensorBoard logging of a run's per-epoch history (recipe key `tensorboard`, off by default), as
BioTorch's users are used to. A view only: record.json and log.csv stay the source of truth."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path


def scalars(entry: dict, prefix: str = "") -> dict[str, float]:
    """Every finite number of a history entry by its path: nested objects and lists joined with '/'
    (alignment/0, terms/ce, weight_alignment/angle_deg/blocks.0.0); the epoch itself is the step."""
    found = {}
    items = entry.items() if isinstance(entry, dict) else enumerate(entry)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            found |= scalars(value, f"{name}/")
        elif (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and name != "epoch"
        ):
            found[name] = float(value)
    return found


class EpochLog:
    """Writes each epoch's scalars under <run folder>/tensorboard/ when on; does nothing when off."""

    def __init__(self, folder: Path, on: bool):
        self.writer = None
        if on:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))

    def write(self, entry: dict) -> None:
        if self.writer is None:
            return
        for name, value in scalars(entry).items():
            self.writer.add_scalar(name, value, global_step=entry["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):  # a view must never fail the run it views
                self.writer.close()
