"""Safe file writing: atomic (a temporary file renamed into place), in folders checked writable, JSON without
NaN, torch archives checked whole before loading, and one process per run folder (an exclusive lock)."""

from __future__ import annotations

import fcntl
import glob
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(
    0o022
)  # read once, at import (umask can only be read by setting it), and restored at once
os.umask(_UMASK)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename over `path`.

    A reader sees the old file or the new one, never part of one. A writer killed mid-write leaves only
    its hidden temporary file `.{name}.{pid}.*.tmp`, which the next write of `path` removes once that
    process is gone. The file gets the usual permissions (0666 less the umask), not mkstemp's 0600, so
    records in a shared results folder stay readable.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
        )
    except OSError as error:
        raise _naming(error, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(error, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temps(path)


def _naming(error: OSError, path: Path) -> OSError:
    """`error` naming the file being written, not its temporary file (or nothing: a full disk)."""
    why = error.strerror or str(error)
    if path.is_dir():
        why = f"{why}: {path.name} is a folder, where the file goes"
    return OSError(error.errno, why, str(path))  # its subclass by errno (IsADirectoryError, ...)


def check_run_folder(folder: Path | str, names: tuple[str, ...]) -> None:
    """Refuse, creating nothing, a run folder that cannot take the files `names`: a dangling symbolic link
    on its path, a file where a folder goes, no write permission, or one of `names` that is a folder
    (or a device): a ValueError naming the path, before the run loads data or trains."""
    folder = Path(folder)
    for path in [folder, *folder.parents]:
        if path.is_symlink() and not path.exists():
            raise ValueError(
                f"run folder {folder}: {path} is a symbolic link to {os.readlink(path)}, which "
                "does not exist; create its target or give another folder"
            )
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir():
        raise ValueError(f"run folder {folder}: {existing} is a file; give a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise ValueError(
            f"run folder {folder}: {existing} is not writable ({error.strerror}); "
            "give a writable folder"
        ) from None
    for name in names:
        path = folder / name
        if path.exists() and not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise ValueError(
                f"{path} is {kind}; the run writes its {name} there: remove it or give another folder"
            )


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
        raise ValueError(
            f"output folder {folder} is not writable ({error.strerror}); give a writable folder"
        ) from None
    return folder


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files of `path` left by writers that were killed (their process no longer runs)."""
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temp.name[len(path.name) + 2 :].split(".", 1)[0]
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
        raise ValueError(
            f"{path} fails its integrity check: member {bad} does not match its CRC-32"
        )


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
            raise ValueError(
                f"run folder {folder} is in use by another process (a second pipeline or "
                "`bench train` writing the same run); wait for it to end, or use another folder"
            ) from None
        yield
    finally:
        os.close(fd)


def finite(obj: Any) -> Any:
    """NaN and infinities as None: strict JSON has no such numbers (a diverged loss, an undefined cosine)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(finite(obj), indent=2, allow_nan=False) + "\n").encode())
