"""The run record (record.json), the per-epoch log.csv, provenance, and atomic file writing."""
from __future__ import annotations

import csv
import io
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

SCHEMA_VERSION = 1
REPO = Path(__file__).resolve().parent.parent
LOG_COLUMNS = ["epoch", "train_loss", "train_acc", "test_acc", "test_top5", "lr", "train_time_s", "images_per_s"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(obj: Any) -> Any:
    """NaN and infinities as None: strict JSON has no such numbers (a diverged loss, an undefined cosine)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n").encode())


def write_log_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch: the fixed columns, then the epoch's local loss terms as term_<name>."""
    terms = sorted({k for h in history for k in h.get("terms", {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LOG_COLUMNS + [f"term_{t}" for t in terms])
    for h in history:
        writer.writerow([h.get(c, "") for c in LOG_COLUMNS] + [h.get("terms", {}).get(t, "") for t in terms])
    write_atomic(path, buffer.getvalue().encode())


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def code_version() -> str | None:
    """The git commit, with '+dirty' when tracked files differ from it; None outside a git checkout."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if commit is None else commit + ("+dirty" if status else "")


def provenance(device: torch.device) -> dict:
    """Where a record came from: code version, library versions, device, platform (no hostname)."""
    # Versions from package metadata, not imports: importing ffcv (numba, OpenCV) changes the
    # numerics of later float operations in this process, which would break same-seed reproducibility.
    torchvision_version, ffcv_version = _installed("torchvision"), _installed("ffcv")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": torchvision_version,
        "ffcv": ffcv_version,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "platform": platform.platform(terse=True),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
