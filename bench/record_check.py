"""The values of a record.json checked before it becomes a Record (bench/record.py): a table must never
average NaN, 150 % or `true` into a result, so a hand-edited or foreign file is refused naming the file
and the key."""

from __future__ import annotations

import math
from pathlib import Path

from bench.robustness import ATTACKS

STATUSES = ("ok", "diverged")
PERCENTAGES = ("test_acc", "test_top5", "best_test_acc", "selected_test_acc", "best_val_acc")
COUNTS = ["trainable_params", "trainable_params_initial", "feedback_params", "inference_params"]
EPOCH_PERCENTAGES = ("train_acc", "test_acc", "test_top5", "val_acc")
EPOCH_NUMBERS = ("train_loss", "lr", "train_time_s", "images_per_s")  # NaN: a diverged epoch


def check_record(record: dict, path: Path | str) -> None:
    """Refuse a record whose values cannot come from the trainer (a hand-edited or foreign file), naming
    the file and the key: a table must never average NaN, 150 % or `true` into a result."""

    def bad(key: str, accepted: str) -> ValueError:
        return ValueError(
            f"{path}: bad value {record.get(key)!r} for {key!r}; accepted: {accepted}"
        )

    def is_number(value) -> bool:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )

    for key in ("dataset", "arch", "method"):
        if not isinstance(record[key], str) or not record[key]:
            raise bad(key, "a non-empty string")
    if (
        not isinstance(record["seed"], int)
        or isinstance(record["seed"], bool)
        or record["seed"] < 0
    ):
        raise bad("seed", "an integer >= 0")
    if record["status"] not in STATUSES:
        raise bad("status", f"one of {', '.join(STATUSES)}")
    for key in PERCENTAGES:
        value = record.get(key)
        if value is not None and not (is_number(value) and 0 <= value <= 100):
            raise bad(key, "null or a number from 0 to 100")
    if record["status"] == "ok" and record["test_acc"] is None and record.get("history"):
        raise bad("test_acc", "a number from 0 to 100 for a finished run (status ok)")
    for key in ("epochs", "epochs_planned", *COUNTS):
        value = record.get(key)
        if value is not None and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ):
            raise bad(key, "null or an integer >= 0")
    for key in ("train_time_s", "images_per_s"):
        value = record.get(key)
        if value is not None and not (is_number(value) and value >= 0):
            raise bad(key, "null or a finite number >= 0")
    if not isinstance(record["history"], list) or not all(
        isinstance(h, dict) for h in record["history"]
    ):
        raise bad("history", "a list of per-epoch objects")
    for i, entry in enumerate(record["history"]):
        check_epoch(entry, i, path)
    ece = record.get("ece")
    if ece is not None and not (is_number(ece) and 0 <= ece <= 1):
        raise bad("ece", "null or a number from 0 to 1")
    check_robustness(record.get("robustness"), path)
    check_named_values(record, path)
    if not isinstance(record["memory"], dict):
        raise bad("memory", "an object of byte counts")
    for key, value in record["memory"].items():
        if (
            key not in ("peak_kind", "device")
            and value is not None
            and not (is_number(value) and value >= 0)
        ):
            raise ValueError(
                f"{path}: bad value {value!r} for 'memory.{key}'; accepted: null or a byte count >= 0"
            )


def check_epoch(entry: dict, i: int, path: Path | str) -> None:
    """One history entry's accuracies (null, NaN or % from 0 to 100) and numbers (null or a number)."""

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    for key in (*EPOCH_PERCENTAGES, *EPOCH_NUMBERS):
        value = entry.get(key)
        if value is None:
            continue
        in_range = number(value) and (
            key not in EPOCH_PERCENTAGES or not math.isfinite(value) or 0 <= value <= 100
        )
        if not in_range:
            accepted = "a number from 0 to 100" if key in EPOCH_PERCENTAGES else "a number"
            raise ValueError(
                f"{path}: bad value {value!r} for 'history[{i}].{key}'; accepted: null or {accepted}"
            )
    epoch = entry.get("epoch")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1):
        raise ValueError(
            f"{path}: bad value {epoch!r} for 'history[{i}].epoch'; accepted: an integer >= 1"
        )


def _in_range(value, low: float, high: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and low <= value <= high


def check_named_values(record: dict, path: Path | str) -> None:
    """A record's per-class accuracies and each epoch's per-layer weight alignment: null, or objects of
    null or numbers in range (% from 0 to 100; degrees from 0 to 180; norm ratios finite and >= 0)."""
    groups = {"per_class_acc": (record.get("per_class_acc"), 0, 100, "% from 0 to 100")}
    for i, entry in enumerate(record["history"]):
        alignment = entry.get("weight_alignment")
        if alignment is not None and not isinstance(alignment, dict):
            raise ValueError(
                f"{path}: bad value {alignment!r} for 'history[{i}].weight_alignment'; accepted: "
                "null or an object with angle_deg and norm_ratio by layer"
            )
        alignment = alignment or {}
        groups[f"history[{i}].weight_alignment.angle_deg"] = (
            alignment.get("angle_deg"),
            0,
            180,
            "degrees from 0 to 180",
        )
        groups[f"history[{i}].weight_alignment.norm_ratio"] = (
            alignment.get("norm_ratio"),
            0,
            math.inf,
            "a finite number >= 0",
        )
    for key, (values, low, high, accepted) in groups.items():
        if values is not None and not isinstance(values, dict):
            raise ValueError(
                f"{path}: bad value {values!r} for {key!r}; accepted: null or an object by name"
            )
        for name, value in (values or {}).items():
            if value is not None and not (_in_range(value, low, high) and math.isfinite(value)):
                raise ValueError(
                    f"{path}: bad value {value!r} for '{key}.{name}'; accepted: null or {accepted}"
                )


def check_robustness(entry, path: Path | str) -> None:
    """A record's `robustness`: null (not measured, or a record before issue 21), or accuracies in %."""
    if entry is None:
        return
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), dict) for k in ATTACKS):
        raise ValueError(
            f"{path}: bad value for 'robustness'; accepted: null or an object with "
            f"{' and '.join(ATTACKS)} accuracies by budget"
        )
    rule = entry.get("rule_gradient")  # optional: the attacks through the rule's own backward
    if rule is not None and not (
        isinstance(rule, dict) and all(isinstance(rule.get(k), dict) for k in ATTACKS)
    ):
        raise ValueError(
            f"{path}: bad value for 'robustness.rule_gradient'; accepted: null or an object with "
            f"{' and '.join(ATTACKS)} accuracies by budget"
        )
    values = {"clean_acc": entry.get("clean_acc")}
    for prefix, part in (("", entry), ("rule_gradient.", rule or {})):
        values |= {
            f"{prefix}{kind}.{budget}": acc
            for kind in ATTACKS
            for budget, acc in part.get(kind, {}).items()
        }
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise ValueError(
                f"{path}: bad value {value!r} for 'robustness.{key}'; accepted: a number from 0 to 100"
            )
