"""Checkpoints: everything a run needs to resume, written atomically each epoch, and read back checked.

A checkpoint is read only when it is readable (CRCs checked), belongs to the same configuration, code
version and rule file, holds every part, and its training state is one the trainer can produce (an
epoch within the plan, a history of that many epochs numbered 1 to n, a status that its losses agree
with, the run's initial parameter count). Its tensors, optimizer state, generator states and the rule's
own state are then restored into the run's objects and checked there (bench/run/restore.py). Anything else
is discarded with a warning and the run starts from scratch, so a bad file can never leave a run stuck
or write a record that no training produced.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import torch

from bench.config.spec import RunSpec
from bench.files import check_torch_file, write_atomic
from bench.record.check import STATUSES
from bench.run.provenance import code_version

log = logging.getLogger("bench.run.train")
CHECKPOINT = "checkpoint.pt"
KEYS = ("model", "optimizer", "shuffle", "method_generator", "method_state", "state")
STATE_KEYS = ("epoch", "history", "status", "provenance", "trainable_params_initial")
RUN_FILES = (CHECKPOINT, "record.json", "log.csv")  # what a run writes into its folder


def save_checkpoint(
    out: Path, spec: RunSpec, model, optimizer, shuffle: torch.Generator, state: dict, method
) -> None:
    """Everything a resume needs: model (feedback included), optimizer, both generators, the rule's own state."""
    buffer = io.BytesIO()
    torch.save(
        {
            "config_hash": spec.config_hash(),
            "code_version": code_version(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "shuffle": shuffle.get_state(),
            "method_generator": method.generator.get_state(),
            "method_state": method.state_dict(),
            "method_source": method.source_hash(),
            "state": state,
        },
        buffer,
    )
    write_atomic(out / CHECKPOINT, buffer.getvalue())


def discard(path: Path, spec: RunSpec, why: str) -> None:
    """The warning for a checkpoint that is not resumed (the run starts from scratch)."""
    log.warning("%s %s; starting %s from scratch", path, why, spec.method)


def read_checkpoint(out: Path, spec: RunSpec, method, trainable_params_initial: int) -> dict | None:
    """The checkpoint in `out` if it belongs to this exact spec and its training state fits the run, else
    None (with a warning, unless there is no checkpoint). Its tensors are checked when restored."""
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    try:
        check_torch_file(
            path
        )  # torch.load does not check the archive's CRCs: a flipped bit would load
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: unpickling errors have many types
        discard(path, spec, f"is unreadable ({error})")
        return None
    if not isinstance(checkpoint, dict):
        discard(path, spec, "is no checkpoint (not a mapping)")
        return None
    if checkpoint.get("config_hash") != spec.config_hash():
        discard(path, spec, "belongs to another configuration")
        return None
    if checkpoint.get("code_version") != code_version():
        why = f"was written by code version {checkpoint.get('code_version')}, this is {code_version()}"
        discard(path, spec, why)
        return None
    if checkpoint.get("method_source") != method.source_hash():
        rule = method.source.name if method.source else method.name
        discard(path, spec, f"was written by another version of {rule} (its file changed)")
        return None
    problem = structure_problem(checkpoint, spec, trainable_params_initial)
    if problem:  # a readable checkpoint of this run that cannot be resumed from: discarded, as a corrupt one is
        discard(path, spec, f"does not fit this run ({problem})")
        return None
    return checkpoint


def structure_problem(checkpoint: dict, spec: RunSpec, trainable_params_initial: int) -> str | None:
    """Why `checkpoint`'s parts and training state cannot resume this run, or None when they can."""
    missing = [key for key in KEYS if key not in checkpoint]
    if missing:
        return f"no {', '.join(missing)}"
    state = checkpoint["state"]
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        return "its training state lacks " + ", ".join(
            k for k in STATE_KEYS if not isinstance(state, dict) or k not in state
        )
    epoch, history, status = state["epoch"], state["history"], state["status"]
    if not _integer(epoch) or not 0 <= epoch <= spec.recipe["epochs"]:
        return f"epoch {epoch!r} outside the plan of {spec.recipe['epochs']}"
    if not isinstance(history, list) or len(history) != epoch:
        length = len(history) if isinstance(history, list) else "?"
        return f"a history of {length} epochs at epoch {epoch}"
    for i, entry in enumerate(history, 1):
        number = entry.get("epoch") if isinstance(entry, dict) else None
        if not _integer(number) or number != i:
            return f"history entry {i} is numbered {number!r}; the history numbers its epochs 1 to {epoch}"
        for key in ("train_loss", "test_acc"):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"history entry {i} has a {key} of {value!r}; accepted: a number"
    if status not in STATUSES:
        return f"status {status!r}; accepted: {', '.join(STATUSES)}"
    # The trainer stops at the first epoch whose loss or test accuracy (the network's outputs) is not
    # finite (bench/run/train.py), and only then says "diverged".
    finite = [
        math.isfinite(entry["train_loss"]) and math.isfinite(entry["test_acc"]) for entry in history
    ]
    if not all(finite[:-1]) or (status == "diverged") == (not finite or finite[-1]):
        losses = [(entry["train_loss"], entry["test_acc"]) for entry in history]
        return f"status {status!r} with (training loss, test accuracy) per epoch {losses}"
    if not isinstance(state["provenance"], dict):
        return f"provenance {state['provenance']!r}; accepted: a mapping"
    if state["trainable_params_initial"] != trainable_params_initial:
        return (
            f"trainable_params_initial {state['trainable_params_initial']!r}, "
            f"the run's is {trainable_params_initial}"
        )
    return None


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
