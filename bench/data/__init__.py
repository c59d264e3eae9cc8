"""Datasets by name: `load(name, device)` returns a TensorData held on `device`."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from bench.data.embedded import digits, mnist5k
from bench.data.tensors import TensorData

# One line per dataset: name -> loader(data_dir) -> TensorData (on the CPU).
DATASETS: dict[str, Callable[[Path | None], TensorData]] = {
    "digits": lambda data_dir: digits(),
    "mnist5k": lambda data_dir: mnist5k(),
}


def load(name: str, device: torch.device | str = "cpu", data_dir: Path | str | None = None) -> TensorData:
    """Dataset `name`, its tensors moved to `device`; data_dir is where on-disk datasets live."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](Path(data_dir) if data_dir else None).to(device)


__all__ = ["DATASETS", "TensorData", "load"]
