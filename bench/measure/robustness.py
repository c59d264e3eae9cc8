"""Adversarial robustness after training (issue 21): test accuracy under FGSM and PGD (L-inf) on a fixed
subset of the test split, through torchattacks, with the trained network's true input gradient.

[suite] choices, each in the record's `robustness` entry:
- the subset: `attack_subset` test images drawn once with a fixed seed (0), independent of the run seed,
  so every run of every rule is attacked on the same images (the whole split when it is smaller);
- budgets `attack_eps` in 1/255 pixel units of the [0, 1] image (the usual CIFAR budgets 1, 2, 4, 8),
  applied before normalisation: torchattacks undoes the data's per-channel normalisation, attacks the
  image in [0, 1] and clips to it;
- PGD: `attack_steps` steps of size 2.5 eps / steps (Madry et al. 2018's ratio), a random start inside the
  budget drawn from a fixed seed (0), so a rerun attacks identically.
The gradient is the true one whatever rule trained the network: the network's plain forward (no graph
cut), eval mode (BatchNorm's running statistics), float32, every feedback layer's exact backward.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from bench.layers.feedback import exact_backward, feedback_layers
from bench.measure.declare import ATTACKS
from bench.measure.network import Undefined

SUBSET_SEED = 0  # the attacked images: the same for every run (as the test split's seed)
START_SEED = 0  # PGD's random starts
STEP_RATIO = 2.5  # PGD step size = STEP_RATIO * eps / steps


def budget_key(eps_255: float) -> str:
    """The record's key of a budget: its size in 1/255 units, e.g. "2" or "0.5"."""
    return f"{eps_255:g}"


class _Eager(nn.Module):
    """The network's eager forward (a compiled one would be retraced for the attack's input gradients)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return type(self.model).forward(self.model, x).float()


def attack_subset(data, n: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x normalised, y): `n` test images drawn with SUBSET_SEED, in test-split order (one pass over it)."""
    total = len(data.test_y)
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSET_SEED))[
        : min(n, total)
    ]
    keep = torch.zeros(total, dtype=torch.bool)
    keep[chosen] = True
    xs, ys, start = [], [], 0
    for x, y in data.test_batches(batch_size):
        mask = keep[start : start + len(y)].to(y.device)
        start += len(y)
        if mask.any():
            xs.append(x[mask])
            ys.append(y[mask])
    if not xs:
        raise Undefined("no test images to attack: robustness is undefined")
    return torch.cat(xs), torch.cat(ys)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """% of (x, y) that `model` classifies right; Undefined without images or where an image's logits
    are not finite (a diverged network, or an attack that stepped along a NaN gradient: argmax would
    call every such image class 0)."""
    if len(y) == 0:
        raise Undefined("no test images to attack: robustness is undefined")
    hits = bad = 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = model(x[i : i + batch_size])
            bad += int((~torch.isfinite(logits)).any(dim=1).sum())
            hits += (logits.argmax(1) == y[i : i + batch_size]).sum().item()
    if bad:
        raise Undefined(
            f"{bad} of {len(y)} images of the attack subset give non-finite outputs (a diverged network): "
            "robustness is undefined"
        )
    return 100.0 * hits / len(y)


def attacks(model: nn.Module, recipe: dict) -> dict:
    """{"fgsm": {budget key: attack}, "pgd": {...}} with the data's normalisation left to set."""
    import torchattacks

    steps = recipe["attack_steps"]
    made = {kind: {} for kind in ATTACKS}
    for eps_255 in recipe["attack_eps"]:
        eps = eps_255 / 255
        made["fgsm"][budget_key(eps_255)] = torchattacks.FGSM(model, eps=eps)
        made["pgd"][budget_key(eps_255)] = torchattacks.PGD(
            model, eps=eps, alpha=STEP_RATIO * eps / steps, steps=steps, random_start=True
        )
    return made


def robustness(model: nn.Module, data, recipe: dict, speed) -> dict | None:
    """The record's `robustness` entry (None when `attack_subset` is 0): clean and attacked accuracy (%)
    of the subset per attack and budget, the settings, and the seconds it took. With
    `attack_rule_gradient`, also `rule_gradient`: the same attacks through the rule's own backward.
    Undefined (bench.measure.network) where the network's outputs, clean or attacked, are not finite."""
    n = recipe["attack_subset"]
    if not n or not recipe["attack_eps"]:
        return None
    start = time.perf_counter()
    x, y = attack_subset(data, n, recipe["eval_batch_size"])
    x = speed.batch(x)
    net = _Eager(model)
    was_training = model.training
    model.eval()
    entry = {
        "subset": len(y),
        "eps_unit": "1/255",
        "pgd_steps": recipe["attack_steps"],
        "pgd_step_size": f"{STEP_RATIO:g} eps / steps",
    }
    try:
        entry["clean_acc"] = accuracy(net, x, y, recipe["eval_batch_size"])
        with exact_backward():
            entry |= attacked(net, data, x, y, recipe)
        if recipe["attack_rule_gradient"]:
            # BioTorch's setting: the attacker differentiates through the rule's feedback weights. Only
            # layers with a feedback backward differ; the block-signal rules' forward has true gradients.
            entry["rule_gradient"] = (
                attacked(net, data, x, y, recipe) if feedback_layers(model) else None
            )
    finally:
        model.train(was_training)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    entry["time_s"] = time.perf_counter() - start
    return entry


def attacked(net: nn.Module, data, x: torch.Tensor, y: torch.Tensor, recipe: dict) -> dict:
    """{"fgsm": {budget key: accuracy %}, "pgd": {...}} of `net` on (x, y), PGD's starts from START_SEED."""
    batch = recipe["eval_batch_size"]
    mean, std = data.mean.flatten().tolist(), data.std.flatten().tolist()
    found = {}
    devices = [x.device] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices), _no_autocast(x.device):
        torch.manual_seed(START_SEED)
        for kind, by_budget in attacks(net, recipe).items():
            found[kind] = {}
            for key, attack in by_budget.items():
                attack.set_normalization_used(mean, std)  # takes and returns normalised batches
                adversarial = torch.cat(
                    [attack(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
                )
                found[kind][key] = accuracy(net, adversarial, y, batch)
    return found


def _no_autocast(device: torch.device):
    """Attacks in float32 even inside a caller's autocast region."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
