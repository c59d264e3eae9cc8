"""Provenance: what produced a record (git commit and uncommitted code, package versions, device, platform,
start time), so a number can be traced to the code and machine that computed it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from datetime import datetime, timezone

import torch

from bench.layout import REPO

CODE_PATHS = (
    "bench",
    "methods",
)  # the code that computes a record's numbers (config changes: config_hash)


def _git(*args: str) -> str | None:
    """Output of `git ARGS` in the suite's folder; None when git or a checkout is missing (never raises)."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def code_version() -> str | None:
    """The git commit, plus '+dirty.' and a hash of the uncommitted changes to the code (CODE_PATHS), if any.

    A checkpoint resumes only into the same code version, so an edit to a dirty tree between two
    attempts of a run is a new version too. None outside a git checkout (never raises).
    """
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None
    diff = _git("diff", "HEAD", "--binary", "--", *CODE_PATHS)
    return (
        commit if not diff else f"{commit}+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:12]}"
    )


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
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "platform": platform.platform(terse=True),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
