"""Resuming a run: its checkpoint restored into freshly built objects, every part checked against them,
and the run folder made ready for the first epoch.

The model's tensors must have the model's shapes, except the ranks of SVD layers, which shrink during
training (ssa, svd_bp): a layer takes a checkpoint's lower rank through its own resize (`SVDLayer.keep`),
then the rule fits its own tensors to it (`Method.fit_ranks`, ssa's feedback), and only then are the
shapes compared, exactly. The optimizer's settings must be the run's and its state must hold, per
parameter, what a step of this optimizer keeps, at the parameter's shape; each generator state must be
a ByteTensor of the generator's size; the rule's state must have the keys, types and shapes of a fresh
rule's. A failure raises ValueError saying which part; the objects may then be partly restored, so the
trainer drops them and builds fresh ones (bench/run/train.py). Last, the training state must make a record
that passes the record's checks. Before the first epoch the disk must have room for a checkpoint, and a
record.json in the folder is named in a warning saying what replaces it.
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
import logging
import math
import shutil
from pathlib import Path

import torch

from bench import record
from bench.config.spec import RunSpec
from bench.layers import svd_layers
from bench.run.checkpoint import CHECKPOINT, discard
from bench.run.outputs import make_record

log = logging.getLogger("bench.run.train")


def resumed(checkpoint, out, spec, model, method, optimizer, shuffle, data, device) -> bool:
    """Whether `checkpoint` restored into the run's objects, every part checked, its training state a
    record accepts; if not, a warning says why, and the objects may be partly restored."""
    try:
        restore(checkpoint, model, method, optimizer, shuffle)
        # The history, status and provenance as the record will hold them (its checks included): the
        # record the run would write had it planned only the epochs it has trained so far.
        state = checkpoint["state"]
        if state["epoch"]:
            so_far = dataclasses.replace(spec, recipe={**spec.recipe, "epochs": state["epoch"]})
            make_record(so_far, state, model, optimizer, data, device)
    except Exception as problem:  # torch and the rule's own load_state_dict fail with many types
        discard(out / CHECKPOINT, spec, f"does not fit this run ({problem})")
        return False
    log.info(
        "resuming %s from %s (epoch %d)",
        spec.method,
        out / CHECKPOINT,
        checkpoint["state"]["epoch"],
    )
    return True


def restore(checkpoint: dict, model, method, optimizer, shuffle: torch.Generator) -> None:
    """Load every part of `checkpoint` (read and checked by bench.run.checkpoint) into the run's objects."""
    restore_model(checkpoint["model"], model, method)
    restore_optimizer(checkpoint["optimizer"], optimizer)
    for key, generator in (("shuffle", shuffle), ("method_generator", method.generator)):
        restore_generator(checkpoint[key], generator, key)
    problem = shape_problem(checkpoint["method_state"], method.state_dict(), "method_state")
    if problem:
        raise ValueError(f"{problem} (a fresh {method.name} rule's)")
    method.load_state_dict(checkpoint["method_state"])


def restore_model(saved, model, method) -> None:
    """The model's tensors from `saved` (a state dict), its SVD layers resized to the saved ranks first."""
    current = model.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(current):
        differ = (
            sorted(set(saved) ^ set(current)) if isinstance(saved, dict) else ["(not a state dict)"]
        )
        raise ValueError(f"model tensors differ: {', '.join(map(str, differ[:5]))}")
    for name, layer in svd_layers(model):
        s = saved[f"{name}.s" if name else "s"]
        if not torch.is_tensor(s) or s.dim() != 1 or not 1 <= len(s) <= layer.rank:
            shape = tuple(getattr(s, "shape", ()))
            raise ValueError(
                f"tensor {name}.s of shape {shape}; the layer's rank is 1 to {layer.rank}"
            )
        if len(s) < layer.rank:  # ranks only shrink, and only through the layer's own resize
            layer.keep(torch.arange(len(s), device=layer.s.device))
    method.fit_ranks(model)  # the rule's tensors that follow the ranks (ssa's feedback)
    for name, tensor in model.state_dict().items():
        value = saved[name]
        if not torch.is_tensor(value) or value.shape != tensor.shape or value.dtype != tensor.dtype:
            shape = tuple(getattr(value, "shape", ()))
            raise ValueError(
                f"tensor {name} of shape {shape} ({getattr(value, 'dtype', type(value).__name__)}), "
                f"the model's is {tuple(tensor.shape)} ({tensor.dtype})"
            )
    model.load_state_dict(saved)


def restore_optimizer(saved, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer's state from `saved`: the run's settings (the learning rate aside, which the trainer
    sets each epoch) and, per parameter, the state a step of this optimizer keeps, at its shape."""
    fresh = optimizer.state_dict()["param_groups"]
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise ValueError("optimizer state is not an optimizer's state dict")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh):
        raise ValueError(
            f"optimizer has {len(fresh)} parameter groups, the checkpoint another number"
        )
    for group, own in zip(groups, fresh):
        if not isinstance(group, dict) or _settings(group) != _settings(own):
            raise ValueError(
                f"optimizer settings {_settings(group)}, the run's are {_settings(own)}"
            )
        lr = group.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise ValueError(f"optimizer learning rate {lr!r}; accepted: a finite number")
        if group.get("params") != own["params"]:
            raise ValueError("optimizer parameter groups differ from the model's parameters")
    ids = {i for own in fresh for i in own["params"]}
    state = saved["state"]
    if not isinstance(state, dict) or not set(state) <= ids:
        raise ValueError("optimizer state of parameters the model does not have")
    optimizer.load_state_dict(saved)
    layout = step_layout(optimizer)
    for index, (param, values) in enumerate(optimizer.state.items()):
        if not isinstance(values, dict) or set(values) != set(layout):
            keys = sorted(values) if isinstance(values, dict) else type(values).__name__
            raise ValueError(
                f"optimizer state {keys} of a parameter; a step keeps {sorted(layout)}"
            )
        for key, shaped in layout.items():
            value = values[key]
            ok = torch.is_tensor(value) and value.is_floating_point()
            if ok and shaped:  # a moment: the parameter's shape
                ok = value.shape == param.shape
            elif ok:  # a step count: one finite number >= 0
                ok = value.numel() == 1 and math.isfinite(value.item()) and value.item() >= 0
            if not ok:
                shape = tuple(getattr(value, "shape", ()))
                raise ValueError(
                    f"optimizer state {key!r} of shape {shape} for a parameter of shape "
                    f"{tuple(param.shape)}"
                )


def _settings(group: dict) -> dict:
    return {k: v for k, v in group.items() if k not in ("params", "lr", "initial_lr")}


def step_layout(optimizer: torch.optim.Optimizer) -> dict[str, bool]:
    """What one step of `optimizer`'s kind keeps per parameter: {key: whether it has the parameter's
    shape (a moment) or is one number (Adam's step count)}, from a step on a two-element probe."""
    probe = torch.nn.Parameter(torch.zeros(2))
    probe.grad = torch.zeros(2)
    kind = type(optimizer)
    accepted = inspect.signature(kind.__init__).parameters
    twin = kind([probe], **{k: v for k, v in optimizer.defaults.items() if k in accepted})
    twin.step()
    return {
        key: torch.is_tensor(v) and v.shape == probe.shape for key, v in twin.state[probe].items()
    }


def restore_generator(saved, generator: torch.Generator, key: str) -> None:
    """A generator's state from `saved`: a ByteTensor of the size its kind of generator keeps."""
    size = generator.get_state().numel()
    if not torch.is_tensor(saved) or saved.dtype != torch.uint8 or saved.shape != (size,):
        shape = tuple(getattr(saved, "shape", ()))
        kind = getattr(saved, "dtype", type(saved).__name__)
        raise ValueError(f"{key} of shape {shape} ({kind}); accepted: a ByteTensor of {size} bytes")
    generator.set_state(saved)


def shape_problem(saved, fresh, where: str) -> str | None:
    """Why `saved` does not have `fresh`'s structure (keys, lengths, types, tensor shapes), or None."""
    if isinstance(fresh, dict):
        if not isinstance(saved, dict) or set(saved) != set(fresh):
            keys = sorted(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
            return f"{where} holds {keys}, not the keys {sorted(map(str, fresh))}"
        problems = (shape_problem(saved[k], fresh[k], f"{where}.{k}") for k in fresh)
        return next((p for p in problems if p), None)
    if isinstance(fresh, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(fresh):
            return f"{where} is {saved!r:.60}, not a list of {len(fresh)}"
        problems = (
            shape_problem(s, f, f"{where}[{i}]") for i, (s, f) in enumerate(zip(saved, fresh))
        )
        return next((p for p in problems if p), None)
    if torch.is_tensor(fresh):
        if torch.is_tensor(saved) and saved.shape == fresh.shape and saved.dtype == fresh.dtype:
            return None
        return f"{where} is {saved!r:.60}, not a {fresh.dtype} tensor of shape {tuple(fresh.shape)}"
    kinds = (float, int) if type(fresh) is float else (type(fresh),)
    if isinstance(saved, kinds) and (isinstance(saved, bool) == isinstance(fresh, bool)):
        return None
    return f"{where} is {saved!r:.60}, not {type(fresh).__name__}"


def ready_folder(out: Path, spec: RunSpec, model, state: dict) -> None:
    """Before the first epoch: room on the disk for a checkpoint (a full disk found now, not after an
    epoch), and a warning naming the record.json this run replaces (a fresh run removes it now)."""
    # The model's tensors and at most two moments per parameter (Adam's), plus room for the rest: an
    # estimate, with no optimizer step taken to learn the exact layout.
    tensors = [*model.state_dict().values()]
    needed = sum(t.numel() * t.element_size() for t in tensors) * 3 + 2**20
    free = shutil.disk_usage(out).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: {free // 2**20} MiB free, a checkpoint of this run needs "
            f"about {-(-needed // 2**20)} MiB",
            str(out / CHECKPOINT),
        )
    path = out / "record.json"
    if path.exists():
        _announce_replaced(path, spec, state)
    if not state["epoch"]:
        path.unlink(missing_ok=True)  # a record of an earlier run is stale


def _announce_replaced(path: Path, spec: RunSpec, state: dict) -> None:
    try:
        earlier = record.read(path)
    except ValueError as error:
        log.warning(
            "%s is replaced by this run's record (it is no readable record: %s)", path, error
        )
        return
    if earlier.config_hash != spec.config_hash() or earlier.run != (
        spec.arch,
        spec.method,
        spec.seed,
    ):
        log.warning(
            "%s holds the record of another run (%s/%s/%s seed %d, configuration %s); "
            "this run (configuration %s) replaces it",
            path,
            earlier.dataset,
            earlier.arch,
            earlier.method,
            earlier.seed,
            (earlier.config_hash or "unknown")[:12],
            spec.config_hash()[:12],
        )
    elif state["epoch"] == spec.recipe["epochs"] or state["status"] != "ok":
        log.warning(
            "%s is this run's finished record; its checkpoint resumes to the identical record "
            "(timings aside), which is written again",
            path,
        )
    else:
        log.warning(
            "%s is a record of this run, but no checkpoint resumes it to its end: this run trains from "
            "epoch %d and replaces it (the same configuration and seed give the same record, timings aside)",
            path,
            state["epoch"] + 1,
        )
