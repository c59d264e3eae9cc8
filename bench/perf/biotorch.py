"""`python -m bench perf biotorch`: a rule's training step beside the real BioTorch package's, in one process.

BioTorch (jsalbert/biotorch, `pip install --no-deps biotorch==0.0.16`: its metadata pins notebooks and
a full dependency resolution does not finish) builds its LeNet and ResNet-20 by `biotorch.models.<mode>`;
`twins` builds the suite's `lenet` / `resnet20` beside each and copies into it BioTorch's weights and
feedback (FA's B, the sign rules' scale and magnitudes, DFA's per-layer kernels into the suite's
`form: kernel`), so both compute the same step: tests/test_biotorch_diff.py checks every rule's weight
and bias gradients equal to float32 rounding. The timing takes both steps (zero_grad, forward,
cross-entropy, backward, Adam's step) in turns, one each, `steps` times after `warmup` untimed ones, and
prints each side's median and the ratio suite / BioTorch.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from bench.method import get_method
from bench.models import build
from bench.perf.common import log, table, wall_clock, write_csv

# The suite's arch -> BioTorch's builder name (biotorch/models/<mode>/le_net.py and resnet.py).
ARCHS = {"lenet": "le_net_cifar", "resnet20": "resnet20"}
# The suite's rule -> BioTorch's mode; the suite's options that make it BioTorch's rule.
MODES = {
    "bp": "backpropagation",
    "fa": "fa",
    "dfa": "dfa",
    "usf": "usf",
    "brsf": "brsf",
    "frsf": "frsf",
}
OPTIONS = {"dfa": {"form": "kernel"}}
SHAPE = (3, 32, 32)
INSTALL = "pip install --no-deps biotorch==0.0.16"


def biotorch_models():
    """biotorch.models, or ValueError saying how to install it."""
    try:
        return importlib.import_module("biotorch.models")
    except ImportError as error:
        raise ValueError(
            f"perf biotorch needs the biotorch package, which is not importable ({error}); "
            f"install it with `{INSTALL}` (the Makefile's test set-up does)"
        ) from None


def check_pair(arch: str, rule: str) -> None:
    """ValueError unless both packages define `rule` on `arch` alike, naming what is accepted."""
    if arch not in ARCHS or rule not in MODES:
        raise ValueError(
            f"perf biotorch: arch {arch!r}, method {rule!r}; accepted: arch one of "
            f"{', '.join(ARCHS)}, method one of {', '.join(MODES)}"
        )
    if (arch, rule) == ("resnet20", "dfa"):
        raise ValueError(
            "perf biotorch: dfa on resnet20 is not a shared rule (BioTorch gives every conv of a "
            "residual block its own feedback, the suite one per block); accepted on resnet20: "
            + ", ".join(m for m in MODES if m != "dfa")
        )


def twins(arch: str, rule: str, num_classes: int = 10, seed: int = 0):
    """(BioTorch's model, the suite's model, the suite's rule): the same weights and feedback.

    BioTorch's model is drawn from torch's global generator seeded with `seed` (its own Xavier init);
    the suite's is then overwritten with it. DFA on resnet20 is refused: BioTorch replaces the input
    gradient of every conv, inside the residual blocks too, with the shortcuts carrying the true
    gradient, a rule the suite's per-block DFA does not define.
    """
    check_pair(arch, rule)
    models = biotorch_models()
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # BioTorch prints what it converted
        theirs = getattr(getattr(models, MODES[rule]), ARCHS[arch])(num_classes=num_classes)
    torch.manual_seed(seed)
    ours = build(arch, SHAPE, num_classes)
    method = get_method(rule)(**OPTIONS.get(rule, {}))
    ours = method.prepare(ours, num_classes, torch.Generator().manual_seed(seed))
    copy_into(theirs, ours, rule)
    return theirs, ours, method


def pairs(theirs: nn.Module, ours: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """Their Conv2d/Linear and BatchNorm layers beside ours, in forward order (ValueError when the two
    networks' layers differ in kind or shape)."""
    kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)

    def layers(model):
        return [m for m in model.modules() if isinstance(m, kinds)]

    def kind(m):
        return next(k for k in kinds if isinstance(m, k))

    mine, yours = layers(theirs), layers(ours)
    found = list(zip(mine, yours))
    if len(mine) != len(yours) or any(
        kind(a) is not kind(b) or a.weight.shape != b.weight.shape for a, b in found
    ):
        raise ValueError("BioTorch's network and the suite's do not have the same layers")
    return found


@torch.no_grad()
def copy_into(theirs: nn.Module, ours: nn.Module, rule: str) -> None:
    """Their weights, biases, BatchNorm state and the rule's feedback into ours."""
    found = pairs(theirs, ours)
    for a, b in found:
        for name, tensor in a.state_dict().items():
            if name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                getattr(b, name).copy_(tensor)
        if isinstance(b, nn.BatchNorm2d):
            continue
        if rule == "fa":
            b.fa_B.copy_(a.weight_backward)
        elif rule in ("usf", "brsf", "frsf"):
            b.sign_scale.fill_(a.scaling_factor)
            if rule != "usf":  # frsf's fixed |B|; brsf's is redrawn by both at every step
                b.sign_magnitude.copy_(a.weight_backward.abs())
    if rule == "dfa":  # block i's feedback is that of the layer reading its output: the next one's
        layers = [a for a, _ in found if isinstance(a, (nn.Conv2d, nn.Linear))]
        for i, layer in enumerate(layers[1:]):
            getattr(ours.feedback, f"dfa_{i}").copy_(layer.weight_backward)


def biotorch_step(model: nn.Module, rule: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BioTorch's training step on a batch (its DFA takes the targets and the loss in forward)."""
    if rule == "dfa":
        logits = model(x, targets=y, loss_function=F.cross_entropy)
    else:
        logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return loss


def time_pair(arch: str, rule: str, args) -> dict:
    """One row: the suite's and BioTorch's step on the same batch, timed in turns."""
    theirs, ours, method = twins(arch, rule, args.classes)
    batch = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, *SHAPE, generator=batch)
    y = torch.randint(0, args.classes, (args.batch_size,), generator=batch)
    sides = []
    for model, step in (
        (ours, lambda m: method.step(m, x, y)),
        (theirs, lambda m: biotorch_step(m, rule, x, y)),
    ):
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)

        def one(model=model, step=step, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            step(model)
            optimizer.step()

        sides.append((one, []))
    device = torch.device("cpu")
    for _ in range(args.warmup):
        for one, _ in sides:
            one()
    for _ in range(args.steps):
        for one, times in sides:
            times.append(wall_clock(one, device)[1])
    suite, bio = (statistics.median(times) for _, times in sides)
    return {
        "arch": arch,
        "method": rule,
        "suite_ms": 1000 * suite,
        "biotorch_ms": 1000 * bio,
        "ratio": suite / bio,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
    }


def main(args) -> int:
    """CLI entry: time every (arch, method) pair, log the table, write --out as CSV when given."""
    biotorch_models()  # refuse before any work when the package is absent
    if min(args.steps, args.batch_size) < 1 or args.warmup < 0:
        raise ValueError("--steps and --batch-size must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    for arch in args.arch:
        for rule in args.methods:
            check_pair(arch, rule)
    log.info(
        "perf biotorch: batch %d, %d warm-up + %d timed steps per side (interleaved), CPU, %d threads",
        args.batch_size,
        args.warmup,
        args.steps,
        torch.get_num_threads(),
    )
    rows = [time_pair(arch, rule, args) for arch in args.arch for rule in args.methods]
    lines = table(
        (
            ("arch", -9, lambda r: r["arch"]),
            ("method", -7, lambda r: r["method"]),
            ("suite ms", 9, lambda r: f"{r['suite_ms']:.1f}"),
            ("biotorch ms", 12, lambda r: f"{r['biotorch_ms']:.1f}"),
            ("suite/biotorch", 15, lambda r: f"{r['ratio']:.2f}"),
        ),
        rows,
    )
    for line in lines:
        log.info("%s", line)
    if args.out:
        write_csv(args.out, rows)
    return 0


def add_arguments(parser) -> None:
    """The `perf biotorch` options, for the CLI's subparser."""
    parser.add_argument("--arch", nargs="+", default=["lenet"], choices=list(ARCHS))
    parser.add_argument(
        "--methods", nargs="+", default=list(MODES), choices=list(MODES), help="rules to time"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side (interleaved)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="also write the rows as CSV here")
