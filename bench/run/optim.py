"""The optimizer and learning-rate schedule of the recipe, and the optimizer state a rank change slices."""

from __future__ import annotations

import math

import torch

from bench.data.tensors import batch_bounds


def make_optimizer(params, recipe: dict) -> torch.optim.Optimizer:
    """The recipe's optimizer over `params`. `rmsprop` is BioTorch's (`biotorch/benchmark/optimizers.py`):
    torch's RMSprop with the recipe's lr, momentum and weight decay (L2), and torch's defaults for what
    BioTorch does not pass (alpha 0.99, eps 1e-8, not centered)."""
    name, lr, wd = recipe["optimizer"], recipe["lr"], recipe["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe["momentum"], weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=recipe["momentum"], weight_decay=wd)
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(
        params, lr=lr, weight_decay=wd
    )


def lr_at(recipe: dict, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """Learning rate for step `step` of (0-based) `epoch`: cosine to 0 over the run, step decay, or constant.

    With `schedule_unit: epoch` the rate is set once at each epoch's start (step ignored); with `step`,
    cosine is evaluated at every step t of T = epochs x steps_per_epoch (lr 0.5 (1 + cos(pi t / T)), as
    torch's CosineAnnealingLR(T_max=T) stepped per batch); step and multistep decay still change at
    epoch boundaries (their milestones are epochs).
    """
    lr, schedule = recipe["lr"], recipe["schedule"]
    if schedule == "cosine":
        progress = epoch + (step / steps_per_epoch if recipe.get("schedule_unit") == "step" else 0)
        return lr * 0.5 * (1 + math.cos(math.pi * progress / recipe["epochs"]))
    if schedule == "step":
        return lr * recipe["gamma"] ** (epoch // recipe["step_size"])
    if (
        schedule == "multistep"
    ):  # as torch's MultiStepLR stepped once an epoch: x gamma from each milestone on
        return lr * recipe["gamma"] ** sum(1 for m in recipe["milestones"] if m <= epoch)
    return lr


def steps_per_epoch(data, batch_size: int, keep_last: bool) -> int:
    """Training steps in one epoch of `data` (what a per-step schedule counts)."""
    return len(batch_bounds(len(data.train_y), batch_size, keep_last))


def slice_optimizer_state(optimizer: torch.optim.Optimizer, resized: dict) -> None:
    """Slice per-parameter optimizer state (moments, momentum) the way the parameters were sliced."""
    for param, (dim, index) in resized.items():
        for key, value in optimizer.state.get(param, {}).items():
            if torch.is_tensor(value) and value.dim() == param.dim():
                optimizer.state[param][key] = value.index_select(
                    dim, index.to(value.device)
                ).contiguous()
