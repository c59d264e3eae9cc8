"""Checkpoints: everything a run needs to resume, written atomically each epoch, and checked before use.

A checkpoint is resumed only when it is readable (CRCs checked), belongs to the same configuration and
code version, and has the structure this run expects (every key, every tensor of the model's shape or a
shrunk rank of it, an epoch within the plan); anything else is discarded with a warning, and the run
starts from scratch, so a bad file can never leave a run stuck or write an inconsistent record.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import torch

from bench.config import RunSpec
from bench.files import check_torch_file, write_atomic
from bench.models import BlockNet
from bench.provenance import code_version

log = logging.getLogger("bench.train")
CHECKPOINT = "checkpoint.pt"
KEYS = ("model", "optimizer", "shuffle", "method_generator", "method_state", "state")
STATE_KEYS = ("epoch", "history", "status", "provenance", "trainable_params_initial")


def resize_like(model: BlockNet, state: dict) -> None:
    """Give every parameter and buffer the shape it has in `state` (ranks shrink during training)."""
    tensors = dict(model.named_parameters())
    for name, value in state.items():
        if name in tensors and tensors[name].shape != value.shape:
            tensors[name].data = torch.empty_like(value, device=tensors[name].device)
        elif name.startswith("feedback."):
            key = name.split(".", 1)[1]
            current = getattr(model.feedback, key, None)
            device = current.device if current is not None else value.device
            setattr(model.feedback, key, torch.empty_like(value, device=device))


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


def load_checkpoint(out: Path, spec: RunSpec, model: BlockNet, method) -> dict | None:
    """The checkpoint in `out` if it belongs to this exact spec (model loaded into `model`), else None."""
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    try:
        check_torch_file(
            path
        )  # torch.load does not check the archive's CRCs: a flipped bit would load
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: unpickling errors have many types
        log.warning("%s is unreadable (%s); starting %s from scratch", path, error, spec.method)
        return None
    if checkpoint.get("config_hash") != spec.config_hash():
        log.warning(
            "%s belongs to another configuration; starting %s from scratch", path, spec.method
        )
        return None
    if checkpoint.get("code_version") != code_version():
        log.warning(
            "%s was written by code version %s, this is %s; starting %s from scratch",
            path,
            checkpoint.get("code_version"),
            code_version(),
            spec.method,
        )
        return None
    if checkpoint.get("method_source") != method.source_hash():
        log.warning(
            "%s was written by another version of %s (%s); starting %s from scratch",
            path,
            method.source.name if method.source else method.name,
            "its file changed",
            spec.method,
        )
        return None
    problem = structure_problem(checkpoint, spec, model)
    if problem:  # a readable checkpoint of this run that cannot be resumed from: discarded, as a corrupt one is
        log.warning(
            "%s does not fit this run (%s); starting %s from scratch", path, problem, spec.method
        )
        return None
    resize_like(model, checkpoint["model"])
    model.load_state_dict(checkpoint["model"])
    log.info("resuming %s from %s (epoch %d)", spec.method, path, checkpoint["state"]["epoch"])
    return checkpoint


def structure_problem(checkpoint: dict, spec: RunSpec, model: BlockNet) -> str | None:
    """Why `checkpoint` cannot resume `model`'s run, or None when it can."""
    missing = [key for key in KEYS if key not in checkpoint]
    if missing:
        return f"no {', '.join(missing)}"
    state, saved = checkpoint["state"], checkpoint["model"]
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        return "its training state lacks " + ", ".join(
            k for k in STATE_KEYS if not isinstance(state, dict) or k not in state
        )
    epoch = state["epoch"]
    if not isinstance(epoch, int) or not 0 <= epoch <= spec.recipe["epochs"]:
        return f"epoch {epoch!r} outside the plan of {spec.recipe['epochs']}"
    if not isinstance(state["history"], list) or len(state["history"]) != epoch:
        return f"a history of {len(state['history']) if isinstance(state['history'], list) else '?'} epochs at epoch {epoch}"
    if not isinstance(saved, dict) or set(saved) != set(model.state_dict()):
        extra = (
            sorted(set(saved) ^ set(model.state_dict()))
            if isinstance(saved, dict)
            else ["(not a state dict)"]
        )
        return f"model tensors differ: {', '.join(extra[:5])}"
    for name, current in model.state_dict().items():
        value = saved[name]
        # Ranks only shrink (ssa's rank reduction): a saved tensor may be smaller along a dim, never larger.
        if (
            not torch.is_tensor(value)
            or value.dim() != current.dim()
            or any(s > c for s, c in zip(value.shape, current.shape))
        ):
            return f"tensor {name} of shape {tuple(getattr(value, 'shape', ()))}, the model's is {tuple(current.shape)}"
    return None
