"""The run record (record.json), the per-epoch log.csv, provenance, and safe file writing (atomic, checked, locked)."""
from __future__ import annotations

import csv
import fcntl
import glob
import hashlib
import io
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

SCHEMA_VERSION = 1
REPO = Path(__file__).resolve().parent.parent
LOG_COLUMNS = ["epoch", "train_loss", "train_acc", "test_acc", "test_top5", "lr", "train_time_s", "images_per_s"]
CODE_PATHS = ("bench", "methods")  # the code that computes a record's numbers (config changes: config_hash)
_UMASK = os.umask(0o022)  # read once, at import (umask can only be read by setting it), and restored at once
os.umask(_UMASK)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename over `path`.

    A reader sees the old file or the new one, never part of one. A writer killed mid-write leaves only
    its hidden temporary file `.{name}.{pid}.*.tmp`, which the next write of `path` removes once that
    process is gone. The file gets the usual permissions (0666 less the umask), not mkstemp's 0600, so
    records in a shared results folder stay readable.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temps(path)


def writable_folder(folder: Path | str) -> Path:
    """`folder`, created if needed; ValueError naming it when it is a file or cannot be written."""
    folder = Path(folder)
    blocking = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"output folder {folder}: {blocking} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise ValueError(f"output folder {folder} is not writable ({error.strerror}); give a writable folder") from None
    return folder


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files of `path` left by writers that were killed (their process no longer runs)."""
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            temp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_torch_file(path: Path) -> None:
    """Raise ValueError naming `path` unless it is a whole torch.save archive whose every member matches its CRC.

    torch.save writes a zip archive with a CRC-32 per member (one per tensor), but torch.load never checks
    them: a flipped bit inside a tensor loads silently. This reads every member once (about 3 ms per MB).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, EOFError, ValueError, RuntimeError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a whole torch checkpoint: {error}") from None
    if bad is not None:
        raise ValueError(f"{path} fails its integrity check: member {bad} does not match its CRC-32")


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on the folder itself, released when the process ends).

    For a run folder: a second process that trains into the same folder (a second pipeline on the same
    results folder from another working directory, which Snakemake's lock does not see) is refused.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"run folder {folder} is in use by another process (a second pipeline or "
                             "`bench train` writing the same run); wait for it to end, or use another folder") from None
        yield
    finally:
        os.close(fd)


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
    """Output of `git ARGS` in the suite's folder; None when git or a checkout is missing (never raises)."""
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, errors="replace",
                              timeout=10, check=True).stdout.strip()
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
    return commit if not diff else f"{commit}+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:12]}"


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
