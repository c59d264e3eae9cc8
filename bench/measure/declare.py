"""A measure declared once, and the declared measures of this package, found by their files.

A declared measure is one file in bench/measure/ that assigns `MEASURE = Measure(...)` at its top level
(the file's name is the measure's). Everything else follows from the declarations, with no list to edit:
- the record: each history entry's `measures` (per-epoch ones) and the record's `measures` (end-of-run
  ones), each value checked against its shape and range (bench/record/check.py), a per-block list
  against the record's `blocks` (bench/record/consistency.py);
- log.csv's columns (bench/run/outputs.py), the trainer's calls (`take`, from bench/run/train.py after
  every epoch and bench/measure/end_of_run.py once after training), the table's column where the
  measure names one (bench/report/table.py), and `python -m bench list`'s list of measures.
A declaring file imports no torch at its top: the record wing reads the declarations, and it never
imports torch (tests/test_light_imports.py). Its function works on the tensors it is given.

The measures the record held before declarations existed (accuracy, alignment, ranks, memory, ECE,
per-class accuracy, robustness) keep their own fields; their names are here (END_OF_RUN, ATTACKS) so
that the record wing need not import the torch modules that compute them.
"""

from __future__ import annotations

import ast
import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WHEN = ("epoch", "end")  # after every epoch, or once after training
SHAPES = ("number", "per_block")  # one number, or a list of one number (or null) per block
ATTACKS = (
    "fgsm",
    "pgd",
)  # a `robustness` entry's attacks (bench/measure/robustness.py measures each)
# The record's own end-of-run fields (`unmeasured` holds their reasons, and declared ones').
END_OF_RUN = ("ece", "per_class_acc", "robustness")
# Where declaring files are found: (folder, the package it imports as). This package's own; a test adds
# one of its own to show that a measure in a new file reaches record, log and table with nothing else edited.
SOURCES = [(Path(__file__).parent, __package__)]


@dataclass(frozen=True)
class Measure:
    """One measure: its name (the file's), when it is taken, its JSON shape and range, the function that
    computes it, and how the table shows it.

    `compute(model, x, y)` gets the trained network (in eval mode, under no_grad) and the run's fixed
    probe batch (`probe_size` training images, on the network's device) and returns a number or, for
    `per_block`, one number per block of `model.blocks`; NaN where it is undefined (recorded as null).
    `column` is the table's header (None: not in the table); its cell is the mean over the seeds that
    finished of the run's value at the epoch the table reports (per block: the mean over blocks).
    """

    name: str
    when: str
    shape: str
    low: float
    high: float
    compute: Callable
    doc: str
    column: str | None = None
    digits: int = 3  # the table's decimals

    def accepts(self, value) -> bool:
        """Whether `value` is one this measure can record: its shape, each number finite and in range."""
        values = value if self.shape == "per_block" else [value]
        if self.shape == "per_block" and not isinstance(value, list):
            return False
        return all(v is None or _in_range(v, self.low, self.high) for v in values)

    def accepted(self) -> str:
        """What `accepts` accepts, in words, for an error message."""
        number = f"null or a finite number from {self.low:g} to {self.high:g}"
        return f"a list, per block, of {number}" if self.shape == "per_block" else number


def _in_range(value, low: float, high: float) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )


def _declares(path: Path) -> bool:
    """Whether the file assigns MEASURE at its top level (read, not run: most files here import torch)."""
    tree = ast.parse(path.read_text(), str(path))
    return any(
        isinstance(node, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(target, ast.Name) and target.id == "MEASURE"
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
        for node in tree.body
    )


@functools.cache
def declared() -> dict[str, Measure]:
    """{name: Measure} of every declaring file of SOURCES, in file-name order."""
    found = {}
    paths = [(path, package) for folder, package in SOURCES for path in sorted(folder.glob("*.py"))]
    for path, package in paths:
        if not _declares(path):
            continue
        measure = importlib.import_module(f"{package}.{path.stem}").MEASURE
        if not isinstance(measure, Measure) or measure.name != path.stem:
            raise TypeError(f"{path}: MEASURE must be a Measure named {path.stem!r}")
        if (
            measure.when not in WHEN
            or measure.shape not in SHAPES
            or not measure.low <= measure.high
        ):
            raise TypeError(
                f"{path}: MEASURE needs when in {WHEN}, shape in {SHAPES} and low <= high"
            )
        if measure.name in found:
            raise TypeError(f"{path}: measure {measure.name!r} is declared twice")
        found[measure.name] = measure
    return found


def of(when: str) -> dict[str, Measure]:
    """The declared measures taken `when` (epoch or end)."""
    return {name: m for name, m in declared().items() if m.when == when}


def take(when: str, model, x, y) -> dict:
    """{name: value} of every measure taken `when` (`value` of each)."""
    return {name: value(measure, model, x, y) for name, measure in of(when).items()}


def value(measure: Measure, model, x, y):
    """`measure` of `model` on the probe batch (x, y), in eval mode without gradients (the model's
    training mode put back); NaN and infinities become None, as in record.json."""
    import torch  # only the trainer calls this: the record wing reads the declarations alone

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _json(measure.compute(model, x, y))
    finally:
        model.train(training)


def _json(value):
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # a count stays an integer in record.json
    value = float(value)
    return value if math.isfinite(value) else None
