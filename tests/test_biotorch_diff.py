"""The suite against the real BioTorch package (issue 29 item 1): its LeNet and ResNet-20, built by
`biotorch.models.<mode>`, weights and feedback copied into the suite's `lenet` / `resnet20`
(bench/perf/biotorch.py), one batch: every shared rule's weight and bias gradients equal to float32
rounding. And `python -m bench perf biotorch`, which times the two steps side by side.

Skipped where biotorch is not importable: `make test` installs it with `pip install --no-deps
biotorch==0.0.16` (the `biotorch` extra of pyproject.toml) and goes on without it where pip fails.
"""

import csv
import subprocess
import sys

import pytest
import torch

from bench.cli import main
from bench.perf.biotorch import INSTALL, MODES, biotorch_step, pairs, twins

try:
    import biotorch.models  # noqa: F401

    HAVE = True
except ImportError:
    HAVE = False
needs = pytest.mark.skipif(not HAVE, reason=f"biotorch is not importable ({INSTALL})")

# BioTorch's DFA on a ResNet gives every conv of a residual block its own feedback while the shortcuts
# carry the true gradient: not the suite's per-block rule, so dfa is compared on LeNet only.
CASES = [("lenet", rule) for rule in MODES] + [("resnet20", r) for r in MODES if r != "dfa"]


def _batch(dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 3, 32, 32, generator=g).to(dtype), torch.arange(8) % 10


def _both_steps(arch, rule, monkeypatch, dtype=torch.float32):
    theirs, ours, method = twins(arch, rule)
    theirs.to(dtype).train()
    ours.to(dtype).train()
    x, y = _batch(dtype)
    loss = biotorch_step(theirs, rule, x, y)
    if rule == "brsf":
        # Both redraw |B| every batch, each from its own generator: the suite takes BioTorch's draw.
        module = sys.modules[type(method).__module__]
        monkeypatch.setattr(module, "redraw_magnitudes", lambda model, generator: None)
        with torch.no_grad():
            for a, b in pairs(theirs, ours):
                if hasattr(b, "sign_magnitude"):
                    b.sign_magnitude.copy_(a.weight_backward.abs())
    stats = method.step(ours, x, y)
    assert stats["loss"].item() == pytest.approx(loss.item(), rel=1e-5)  # the same forward
    return theirs, ours


def _worst(theirs, ours):
    """The largest gradient difference of any weight or bias, relative to that tensor's largest entry."""
    worst, count = 0.0, 0
    for a, b in pairs(theirs, ours):
        for name in ("weight", "bias"):
            mine, yours = getattr(a, name), getattr(b, name)
            if mine is None:
                assert yours is None
                continue
            assert mine.grad is not None and yours.grad is not None, name
            scale = mine.grad.abs().max().clamp_min(1e-30)
            worst = max(worst, ((mine.grad - yours.grad).abs().max() / scale).item())
            count += 1
    return worst, count


@needs
@pytest.mark.parametrize("arch,rule", CASES)
def test_every_shared_rule_gives_biotorchs_gradients(arch, rule, monkeypatch):
    torch.set_num_threads(1)
    theirs, ours = _both_steps(arch, rule, monkeypatch)
    worst, count = _worst(theirs, ours)
    # lenet: 5 layers with weight and bias; resnet20: 19 convs, 19 BatchNorms and fc
    assert count == (10 if arch == "lenet" else 19 + 2 * 19 + 2)
    # float32 rounding: the same sums in another order (dfa's kernels: all of e's classes at once)
    assert worst < (1e-4 if rule == "dfa" else 1e-5), worst


@needs
def test_dfa_equals_biotorch_in_float64_up_to_the_float32_error():
    """In float64 the gap is the suite's error e, computed in float32 (bench.local.output_error)."""
    theirs, ours = _both_steps("lenet", "dfa", None, torch.float64)
    worst, _ = _worst(theirs, ours)
    assert worst < 1e-6


@needs
def test_the_copy_differs_from_the_suites_own_draw():
    """The comparison is not trivially equal: the suite's own feedback gives other gradients."""
    theirs, ours, method = twins("lenet", "fa")
    x, y = _batch()
    biotorch_step(theirs, "fa", x, y)
    with torch.no_grad():
        for _, b in pairs(theirs, ours):
            b.fa_B.mul_(-1)
    method.step(ours, x, y)
    assert _worst(theirs, ours)[0] > 0.01


@needs
def test_perf_biotorch_times_both_steps_and_writes_the_ratio(tmp_path):
    out = tmp_path / "rows.csv"
    argv = ["perf", "biotorch", "--methods", "fa", "dfa", "--steps", "2", "--warmup", "1"]
    assert main([*argv, "--batch-size", "4", "--threads", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["arch"], r["method"]) for r in rows] == [("lenet", "fa"), ("lenet", "dfa")]
    for row in rows:
        ratio = float(row["suite_ms"]) / float(row["biotorch_ms"])
        assert float(row["ratio"]) == pytest.approx(ratio, rel=1e-6) and ratio > 0


@needs
def test_perf_biotorch_refuses_dfa_on_resnet20(capsys):
    assert main(["perf", "biotorch", "--arch", "resnet20", "--methods", "dfa"]) == 2
    assert "dfa on resnet20 is not a shared rule" in capsys.readouterr().err


def test_perf_biotorch_refuses_clearly_without_the_package(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "biotorch.models", None)  # import raises ImportError
    assert main(["perf", "biotorch", "--methods", "fa", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "needs the biotorch package" in err and INSTALL in err


def test_the_install_hint_pins_the_version_pyproject_and_make_install():
    """One pin: the message's, pyproject.toml's `biotorch` extra (which the Makefile reads) the same."""
    from bench.layout import REPO

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert INSTALL == f"pip install --no-deps {extra['biotorch'][0]}"
    makefile = (REPO / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("BIOTORCH := $(shell sed -n '"))
    script = line.split("sed -n '")[1].split("' pyproject.toml")[0]  # the Makefile's own sed script
    read = subprocess.run(["sed", "-n", script, str(REPO / "pyproject.toml")], capture_output=True)
    assert read.stdout.decode().strip() == extra["biotorch"][0]
