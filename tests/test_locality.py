"""The locality audit (bench/measure/locality.py): every rule's declared locking agrees with what its `step`
does, measured on a tiny digits-sized network, and `bench list` shows each rule's facts.

Block i is unlocked when its update (the .grad of its parameters after one `step`) is the same whatever
the parameters above it (blocks i+1.. and the head) are: tested for every rule that declares itself
unlocked, and every other rule must show the opposite. Update-locked (backward-unlocked) rules are told
apart from backward-locked ones by holding the network's output at the unperturbed network's value while
everything above block i is perturbed: a rule that reads only that output (dfa's error) then gives block i
the same update, one whose error travels back through the layers above (bp, fa) does not.
"""

import functools
import re
import shutil

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from bench.cli import main
from bench.layout import REPO
from bench.measure.locality import LOCKINGS, TRANSPORTS, Locality
from bench.method import discover
from tests.conftest import make
from tests.test_light_imports import imported

RULES = sorted(discover())
ARCH = "mlp3"  # three hidden blocks and a head: block 0 has four modules above it, block 2 one


def declared(rule: str) -> Locality:
    locality = discover()[rule].locality
    assert isinstance(locality, Locality), f"{rule} declares no locality (tests/test_contract.py)"
    return locality


def above(model, method, index: int) -> list[torch.nn.Module]:
    """The layers above block `index`'s module: the blocks of the modules after it, and the head.

    A rule with per-module losses (`module_loss`, issue 28's auxiliary API) groups the blocks into
    `module_ranges(model)`, and its last module learns from the head's cross-entropy: the head is then
    that module's own classifier, not above it. Any other rule: one module per block, the head above all.
    """
    modular = getattr(method, "module_loss", None) is not None
    blocks = range(len(model.blocks))
    ranges = method.module_ranges(model) if modular else [range(i, i + 1) for i in blocks]
    mine = next(m for m, blocks in enumerate(ranges) if index in blocks)
    later = [model.blocks[j] for blocks in ranges[mine + 1 :] for j in blocks]
    return later if modular and mine == len(ranges) - 1 else [*later, model.head]


def perturb_above(model, method, index: int) -> None:
    """Add Gaussian noise to every floating tensor of the layers above block `index`'s module (`above`):
    weights, biases, normalisation parameters, and feedback kept in those layers (fa's B, kp's B)."""
    g = torch.Generator().manual_seed(2028)
    with torch.no_grad():
        for module in above(model, method, index):
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_floating_point():  # half its own size (0.5 where it is 0)
                    size = float(tensor.pow(2).mean().sqrt()) or 1.0
                    tensor.add_(0.5 * size * torch.randn(tensor.shape, generator=g))


def block_update(model, index: int) -> list[torch.Tensor]:
    return [
        p.grad.clone() for p in model.blocks[index].parameters() if p.grad is not None
    ]  # learned feedback in the block (kp's B) included: it is part of the block's update


def difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """||a - b|| / ||a|| over the block's update, 0 only where every tensor is equal."""
    assert len(a) == len(b) and a, "the block has no update to compare"
    num = sum(float((x - y).double().norm() ** 2) for x, y in zip(a, b)) ** 0.5
    den = sum(float(x.double().norm() ** 2) for x in a) ** 0.5
    if not den:  # a zero update: unchanged only if the other one is zero too
        return 0.0 if not num else float("inf")
    return num / den


class Output:
    """Records the head's output of each call (and its forward-mode tangent), to serve them back later.

    `pin` hooks replace the head's k-th output by the recorded k-th value while letting gradients through
    to the head's own graph: the rule sees the unperturbed network's logits (and, for a forward-mode
    rule, their tangent), while whatever flows back flows through the perturbed layers.
    """

    def __init__(self):
        self.outputs = []

    def record(self, module, inputs, out):
        primal, tangent = fwAD.unpack_dual(out)
        self.outputs.append((primal.detach().clone(), tangent))

    def pin(self):
        served = iter(self.outputs)

        def hook(module, inputs, out):
            primal, tangent = next(served)
            if fwAD.unpack_dual(out).tangent is not None:
                return fwAD.make_dual(primal, tangent)
            return _Held.apply(out, primal)

        return hook


class _Held(torch.autograd.Function):
    """`value` forward, the incoming gradient passed to `out` unchanged backward."""

    @staticmethod
    def forward(ctx, out, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


@functools.cache
def changes(rule: str) -> dict[str, list[float]]:
    """Per block i, the relative change of block i's update when everything above it is perturbed:
    `free`, and `held` with the head's output held at the unperturbed network's."""
    g = torch.Generator().manual_seed(123)  # conftest's `batch`: 16 images, every class present
    batch = torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 10
    reference, method = make(ARCH, rule)
    output = Output()
    reference.head.register_forward_hook(output.record)
    method.step(reference, *batch)
    found = {"free": [], "held": []}
    for index in range(len(reference.blocks)):
        for kind in found:
            model, method = make(ARCH, rule)  # the same init, feedback and generator state
            perturb_above(model, method, index)
            if kind == "held":
                model.head.register_forward_hook(output.pin())
            method.step(model, *batch)
            found[kind].append(
                difference(block_update(reference, index), block_update(model, index))
            )
    return found


@pytest.mark.parametrize("rule", RULES)
def test_an_unlocked_block_learns_the_same_whatever_is_above_it_and_a_locked_one_does_not(rule):
    locality, free = declared(rule), changes(rule)["free"]
    if locality.unlocked:
        assert free == [0.0] * len(free), (
            f"{rule} declares locking 'none', but block i's update changes when the parameters "
            f"above it are perturbed (relative change per block: {free})"
        )
    else:
        assert min(free) > 1e-4, (
            f"{rule} declares locking {locality.locking!r}, but some block's update does not depend "
            f"on the parameters above it (relative change per block: {free}): declare 'none'"
        )


@pytest.mark.parametrize("rule", RULES)
def test_a_backward_unlocked_block_needs_only_the_output_of_the_blocks_above(rule):
    locality, held = declared(rule), changes(rule)["held"]
    if locality.locking == "backward":
        assert min(held) > 1e-4, (
            f"{rule} declares locking 'backward', but with the network's output held, some block's "
            f"update does not depend on the layers above it ({held}): declare 'update'"
        )
    else:
        assert held == [0.0] * len(held), (
            f"{rule} declares locking {locality.locking!r}, but block i's update changes with the "
            f"layers above it even with the network's output held ({held}): declare 'backward'"
        )


def test_the_test_tells_bp_fa_and_dfa_locked_and_drtp_unlocked():
    # The property the suite claims, on the rules the literature grades: bp and fa backward-locked, dfa
    # update-locked (its error comes from the output), drtp unlocked (its signal is the target's).
    free = {rule: min(changes(rule)["free"]) for rule in ("bp", "fa", "dfa")}
    held = {rule: min(changes(rule)["held"]) for rule in ("bp", "fa")}
    assert min(free.values()) > 1e-4 and min(held.values()) > 1e-4, (free, held)
    assert max(changes("dfa")["held"]) == 0.0 and max(changes("drtp")["free"]) == 0.0


@pytest.mark.parametrize(
    "facts, message",
    [
        (
            ("W", False, "none", False),
            "Locality transport 'W'; accepted: one of none, W^T, sign(W)",
        ),
        (
            ("none", False, "partial", False),
            "Locality locking 'partial'; accepted: one of backward",
        ),
        (("none", "yes", "none", False), "Locality broadcast 'yes'; accepted: True or False"),
        (("none", False, "none", 0), "Locality auxiliary 0; accepted: True or False"),
    ],
)
def test_a_bad_fact_is_refused_naming_it_and_what_is_accepted(facts, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Locality(*facts)
    assert set(TRANSPORTS) == {"none", "W^T", "sign(W)"} and LOCKINGS[-1] == "none"


def test_list_prints_each_rules_facts_on_its_line(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for rule in RULES:
        line = next(line for line in lines if line.startswith(f"method {rule}:"))
        assert line.endswith(f"[locality: {declared(rule).describe()}]"), line
    assert declared("dfa").describe() == ("transport none, broadcast, update-locked, no auxiliary")


def test_list_names_a_rule_that_declares_nothing(tmp_path, monkeypatch, capsys):
    methods = tmp_path / "methods"  # the config's variants name the repository's rules: keep them
    shutil.copytree(REPO / "methods", methods, ignore=shutil.ignore_patterns("__pycache__"))
    (methods / "silent.py").write_text(
        '"""silent: a rule that declares no locality."""\n\nfrom bench import Method\n\n\n'
        "class Silent(Method):\n"
        '    """Says nothing about what it needs."""\n'
    )
    monkeypatch.setenv("BENCH_METHODS_DIR", str(methods))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "method silent: Says nothing about what it needs.  [locality: undeclared]" in out
    assert discover()["silent"].locality is None  # what the contract test refuses


def test_the_docs_table_agrees_with_every_declaration():
    # docs/methods.md, "Locality audit": | rule | transport | broadcast | locking | auxiliary |
    text = (REPO / "docs" / "methods.md").read_text()
    rows = re.findall(
        r"^\| \*\*(\w+)\*\* \| `([^`]+)` \| (yes|no) \| (\w+) \| (yes|no) \|", text, re.M
    )
    table = {rule: Locality(t, b == "yes", lock, a == "yes") for rule, t, b, lock, a in rows}
    # A row per rule is asked of the docs, not enforced: a new rule needs no edit outside its file.
    assert table and set(table) <= set(RULES), (
        f"rows for {sorted(set(table) - set(RULES))}: no rule"
    )
    assert {rule: declared(rule) for rule in table} == table


def test_the_declaration_imports_without_torch():
    # The record and report wings may read a rule's facts: the type must not pull torch in.
    assert "torch" not in imported(["bench.measure.locality"])


if __name__ == "__main__":  # the numbers docs/methods.md quotes: python -m tests.test_locality
    for rule in RULES:
        found = changes(rule)
        print(
            f"{rule}: locking {declared(rule).locking}; relative change of blocks 0.. "
            + "; ".join(f"{kind} {', '.join(f'{v:.3g}' for v in found[kind])}" for kind in found)
        )
