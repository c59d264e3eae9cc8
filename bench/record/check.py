"""The values of a record.json checked before it becomes a Record (bench/record/types.py): a table must never
average NaN, 150 % or `true` into a result, so a hand-edited or foreign file is refused naming the file
and the key. Each field's JSON type comes from its dataclass annotation (bench/record/types.py checks it);
the ranges and shapes of the measures are here (a declared measure's: its declaration, bench/measure/declare.py), and what the JSON itself may be (each key once, nested
at most MAX_DEPTH deep); the fields against each other: bench/record/consistency.py."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure import declare
from bench.measure.declare import ATTACKS, END_OF_RUN
from bench.record.consistency import check_consistency

STATUSES = ("ok", "diverged")
SELECTIONS = ("last", "best_val")
PERCENTAGES = ("test_acc", "test_top5", "best_test_acc", "selected_test_acc", "best_val_acc")
COUNTS = ["trainable_params", "trainable_params_initial", "feedback_params", "inference_params"]
INTEGERS = ("epochs", "epochs_planned", "num_classes", "blocks", "selected_epoch", *COUNTS)
SECONDS = ("train_time_s", "images_per_s", "eval_time_s")
EPOCH_PERCENTAGES = ("train_acc", "test_acc", "test_top5", "val_acc")
EPOCH_NUMBERS = ("train_loss", "lr", "train_time_s", "images_per_s")  # a diverged loss: null
# Lists and objects nest at most 5 deep in the trainer's record (history[i].weight_alignment.angle_deg).
MAX_DEPTH = 16
COSINE = (
    1 + 1e-6
)  # a cosine's bound, with float rounding (a BP update's cosine is 1.000000000000001)


def number(value, low: float = -math.inf, high: float = math.inf) -> bool:
    """A finite JSON number (not a boolean) from low to high."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )


def integer(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def refusal(path: Path | str, key: str, value, accepted: str) -> ValueError:
    """The error for a bad value: the file, the key, the value (shortened) and what is accepted."""
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return ValueError(f"{path}: bad value {shown} for {key!r}; accepted: {accepted}")


def check_record(record: dict, path: Path | str) -> None:
    """Refuse a record whose values cannot come from the trainer, naming the file and the key."""
    refuse = functools.partial(refusal, path)  # (key, value, accepted) -> the error
    for key in ("dataset", "arch", "method"):
        if not isinstance(record[key], str) or not record[key]:
            raise refuse(key, record[key], "a non-empty string")
    if not integer(record["seed"]):
        raise refuse("seed", record["seed"], "an integer >= 0")
    if record["status"] not in STATUSES:
        raise refuse("status", record["status"], f"one of {', '.join(STATUSES)}")
    if record.get("selection") not in (None, *SELECTIONS):
        raise refuse("selection", record["selection"], f"null or one of {', '.join(SELECTIONS)}")
    if ("selection" in record) != ("selected_test_acc" in record):
        # the trainer writes both or (before the selection existed) neither: with one alone the table
        # could not tell which epoch's accuracy to report
        raise ValueError(
            f"{path}: 'selection' and 'selected_test_acc' come together; one is missing"
        )
    ranges = [(key, 0, 100, "% from 0 to 100") for key in PERCENTAGES]
    ranges += [(key, 0, math.inf, "a finite number >= 0") for key in SECONDS]
    ranges += [("ece", 0, 1, "a number from 0 to 1")]
    for key, low, high, accepted in ranges:
        value = record.get(key)
        if value is not None and not number(value, low, high):
            raise refuse(key, value, f"null or {accepted}")
    for key in INTEGERS:
        value = record.get(key)
        if value is not None and not integer(value):
            raise refuse(key, value, "null or an integer >= 0")
    if record["status"] == "ok" and record["test_acc"] is None and record["history"]:
        raise refuse("test_acc", None, "a number from 0 to 100 for a finished run (status ok)")
    for key, value in record["memory"].items():
        if key not in ("peak_kind", "device") and value is not None and not number(value, 0):
            raise refuse(f"memory.{key}", value, "null or a byte count >= 0")
    for i, entry in enumerate(record["history"]):
        check_epoch(entry, f"history[{i}]", refuse)
    check_by_name(record.get("per_class_acc"), "per_class_acc", 0, 100, refuse)
    check_unmeasured(record, refuse)
    check_robustness(record.get("robustness"), refuse)
    check_declared(record.get("measures"), "measures", "end", refuse)
    check_consistency(record, path, refuse)  # the fields against each other, once each is right


def check_epoch(entry: dict, where: str, refuse: Callable[..., ValueError]) -> None:
    """One history entry: its accuracies and numbers, and the shapes of its per-block, per-layer
    measures (cosines from -1 to 1, ranks and loss terms)."""
    for key in (*EPOCH_PERCENTAGES, *EPOCH_NUMBERS):
        value = entry.get(key)
        in_range = number(value, 0, 100) if key in EPOCH_PERCENTAGES else number(value)
        if value is not None and not in_range:
            accepted = "% from 0 to 100" if key in EPOCH_PERCENTAGES else "a finite number"
            raise refuse(f"{where}.{key}", value, f"null or {accepted}")
    if not integer(entry.get("epoch"), 1):
        raise refuse(f"{where}.epoch", entry.get("epoch"), "an integer >= 1")
    cosines = entry.get("alignment")
    if cosines is not None and not (
        isinstance(cosines, list) and all(c is None or number(c, -COSINE, COSINE) for c in cosines)
    ):
        raise refuse(f"{where}.alignment", cosines, "null or a list of null or cosines (-1 to 1)")
    check_by_name(
        entry.get("update_alignment"), f"{where}.update_alignment", -COSINE, COSINE, refuse
    )
    check_by_name(entry.get("ranks"), f"{where}.ranks", 0, math.inf, refuse)
    check_by_name(entry.get("terms"), f"{where}.terms", -math.inf, math.inf, refuse)
    weights = entry.get("weight_alignment")
    if weights is not None and not isinstance(weights, dict):
        raise refuse(
            f"{where}.weight_alignment", weights, "null or an object of angle_deg and norm_ratio"
        )
    check_declared(entry.get("measures"), f"{where}.measures", "epoch", refuse)
    weights = weights or {}
    check_by_name(weights.get("angle_deg"), f"{where}.weight_alignment.angle_deg", 0, 180, refuse)
    check_by_name(
        weights.get("norm_ratio"), f"{where}.weight_alignment.norm_ratio", 0, math.inf, refuse
    )


def check_by_name(
    values, key: str, low: float, high: float, refuse: Callable[..., ValueError]
) -> None:
    """Null, or an object of null or finite numbers from low to high by name (class, layer, term)."""
    if values is None:
        return
    if not isinstance(values, dict):
        raise refuse(key, values, "null or an object by name")
    for name, value in values.items():
        if value is not None and not number(value, low, high):
            raise refuse(f"{key}.{name}", value, f"null or a finite number from {low} to {high}")


def check_declared(values, key: str, when: str, refuse: Callable[..., ValueError]) -> None:
    """Null, or {declared measure taken `when`: its value}, each value as its declaration accepts."""
    if values is None:
        return
    measures = declare.of(when)
    if not isinstance(values, dict):
        raise refuse(key, values, f"null or an object by measure ({', '.join(measures) or 'none'})")
    for name, value in values.items():
        if name not in measures:
            raise refuse(
                f"{key}.{name}", value, f"a measure taken {when!r}: {', '.join(measures) or 'none'}"
            )
        if not measures[name].accepts(value):
            raise refuse(f"{key}.{name}", value, measures[name].accepted())


def check_unmeasured(record: dict, refuse: Callable[..., ValueError]) -> None:
    """A record's `unmeasured`: null, or {end-of-run measure: the reason it is null} (that measure null)."""
    entry = record.get("unmeasured")
    if entry is None:
        return
    names = (*END_OF_RUN, *declare.of("end"))
    if not isinstance(entry, dict):
        raise refuse(
            "unmeasured", entry, f"null or an object of reasons by measure ({', '.join(names)})"
        )
    for name, reason in entry.items():
        if name not in names:
            raise refuse(f"unmeasured.{name}", reason, f"a reason under one of {', '.join(names)}")
        if not isinstance(reason, str) or not reason:
            raise refuse(f"unmeasured.{name}", reason, "a non-empty string (the reason)")
        key = name if name in END_OF_RUN else f"measures.{name}"
        value = record.get(name) if name in END_OF_RUN else (record.get("measures") or {}).get(name)
        if value is not None:
            raise refuse(key, value, f"null: unmeasured.{name} says it was not measured")


def check_robustness(entry, refuse: Callable[..., ValueError]) -> None:
    """A record's `robustness`: null (not measured, or a record before issue 21), or accuracies in %."""
    if entry is None:
        return
    accepted = f"null or an object with {' and '.join(ATTACKS)} accuracies by budget"
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), dict) for k in ATTACKS):
        raise refuse("robustness", entry, accepted)
    rule = entry.get("rule_gradient")  # optional: the attacks through the rule's own backward
    if rule is not None and not (
        isinstance(rule, dict) and all(isinstance(rule.get(k), dict) for k in ATTACKS)
    ):
        raise refuse("robustness.rule_gradient", rule, accepted)
    values = {"clean_acc": entry.get("clean_acc")}
    for prefix, part in (("", entry), ("rule_gradient.", rule or {})):
        values |= {
            f"{prefix}{kind}.{budget}": acc
            for kind in ATTACKS
            for budget, acc in part.get(kind, {}).items()
        }
    for key, value in values.items():
        if not number(value, 0, 100):
            raise refuse(f"robustness.{key}", value, "a number from 0 to 100")


def once(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are each written once (json.loads keeps the last of two silently)."""
    data = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"key {key!r} written twice in one object; accepted: each key once")
        data[key] = value
    return data


def depth(data: Any) -> int:
    """How deeply lists and objects nest in `data` (a number or string: 0), counted without recursion
    and only up to MAX_DEPTH + 1."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        if not isinstance(value, (dict, list, tuple)):
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:
            stack.extend(
                (child, level + 1)
                for child in (value.values() if isinstance(value, dict) else value)
            )
    return deepest
