"""Which GPU a run trains on: each run claims a free slot itself, by an exclusive lock on a slot file.

Snakemake schedules jobs but does not assign GPU ids, so on a host with G GPUs and `gpu_slots` S runs
per GPU there are G x S slots, files `gpu<i>-slot<j>.lock` in a lock folder shared by the host's runs
(default /tmp/bench-gpu-locks-<uid>, one per user, setting BENCH_GPU_LOCK_DIR). The folder must be a
real folder owned by the user and not writable by others, and a lock file is opened without following
a symbolic link (O_NOFOLLOW): in a shared /tmp, another user could otherwise plant a link there that
makes a run create or append to a file of theirs choosing. A run takes the first slot it can lock
(fcntl.flock, released by the kernel when the process ends, even on SIGKILL, so no stale claims), on
the GPU with the fewest claimed slots, and waits, saying so, while every slot is taken.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import time
from pathlib import Path

log = logging.getLogger("bench.run.devices")
LOCK_DIR_ENV = "BENCH_GPU_LOCK_DIR"


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or f"/tmp/bench-gpu-locks-{os.getuid()}")


def _safe_folder(folder: Path) -> Path:
    """`folder`, created private (0700) when absent; ValueError when it is a link, not ours, or open to others."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(
            f"GPU lock folder {folder} is not a folder (a symbolic link?); set ${LOCK_DIR_ENV} elsewhere"
        )
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ValueError(
            f"GPU lock folder {folder} is not a private folder of this user (owner uid {info.st_uid}, "
            f"mode {stat.S_IMODE(info.st_mode):o}); set ${LOCK_DIR_ENV} to one"
        )
    return folder


def _try_lock(path: Path):
    """The open file holding an exclusive lock on `path`, or None if another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    except OSError as error:  # ELOOP: the lock file is a symbolic link
        raise ValueError(
            f"cannot open GPU lock file {path} ({error.strerror}); it must be a plain file"
        ) from None
    handle = os.fdopen(fd, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _held(path: Path) -> bool:
    handle = _try_lock(path)
    if handle is None:
        return True
    handle.close()
    return False


def claim_slot(num_gpus: int, slots_per_gpu: int, poll_s: float = 5.0, folder: Path | None = None):
    """(gpu index, lock handle): a free slot on the least-loaded GPU; keep the handle open while training."""
    if num_gpus < 1 or slots_per_gpu < 1:
        raise ValueError(
            f"bad gpu slots: {num_gpus} GPU(s) x {slots_per_gpu} slot(s); accepted: both >= 1"
        )
    folder = _safe_folder(folder or lock_dir())
    waited = False
    while True:
        slots = {
            gpu: [folder / f"gpu{gpu}-slot{slot}.lock" for slot in range(slots_per_gpu)]
            for gpu in range(num_gpus)
        }
        load = {gpu: sum(_held(p) for p in paths) for gpu, paths in slots.items()}
        for gpu in sorted(slots, key=lambda g: (load[g], g)):
            for path in slots[gpu]:
                handle = _try_lock(path)
                if handle is not None:
                    log.info("claimed GPU %d (%s)", gpu, path.name)
                    return gpu, handle
        if not waited:
            log.info(
                "all %d GPU slots under %s are taken; waiting for one",
                num_gpus * slots_per_gpu,
                folder,
            )
            waited = True
        time.sleep(poll_s)


def bind_gpu(slots_per_gpu: int):
    """Claim a slot and make its GPU the current CUDA device; None (and nothing done) without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    gpu, handle = claim_slot(torch.cuda.device_count(), slots_per_gpu)
    torch.cuda.set_device(gpu)
    return handle
