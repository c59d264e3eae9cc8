"""The recipe key `deterministic`: GPU determinism where it is cheap, and what a run had set."""

from __future__ import annotations

import contextlib
import os

import torch

CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for reproducible reductions (CUDA's documentation)


@contextlib.contextmanager
def determinism(on: bool):
    """Within: with `on`, cudnn.deterministic, no cudnn.benchmark, torch.use_deterministic_algorithms
    (warn only: an op without a deterministic kernel warns instead of stopping a run), and
    CUBLAS_WORKSPACE_CONFIG when unset (it must be set before CUDA starts: enter this first).
    Yields nothing; the process-wide switches are restored on exit, so runs in one process do not leak
    them into each other (the environment variable stays: cuBLAS reads it once).

    Seeds need nothing here: every stream (init, feedback, shuffle, the rule's) is seeded per run.
    """
    before = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[0], before[1]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


def state() -> dict:
    """The switches as they are now: what the record's provenance.determinism says."""
    return {
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
