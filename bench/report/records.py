"""The records a report reads: record.json files found, checked and keyed by run, and the values of one
record that the reports show (the accuracy a table reports, the update alignment, the robust accuracy).

Every report module reads records through here and summarises them through bench/report/summary.py.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from bench import layout
from bench.record import SCHEMA_VERSION
from bench.robustness import ATTACKS, TABLE_BUDGET

log = logging.getLogger(__name__)

Run = tuple[str, str, int]  # (arch, method, seed)
STATUSES = ("ok", "diverged")
PERCENTAGES = ("test_acc", "test_top5", "best_test_acc", "selected_test_acc", "best_val_acc")
COUNTS = ["trainable_params", "trainable_params_initial", "feedback_params", "inference_params"]


def read_record(path: Path) -> dict:
    """One record.json, checked for the schema version and the fields a table needs."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable record.json ({error})") from None
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {record.get('schema_version')!r}; accepted: {SCHEMA_VERSION}"
        )
    for key in ("dataset", "arch", "method", "seed", "status", "test_acc", "memory", "history"):
        if key not in record:
            raise ValueError(f"{path}: record has no {key!r}")
    check_record(record, path)
    return record


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


def find_records(runs_dir: Path | str, dataset: str) -> dict[Run, dict]:
    """Every record of `dataset` under runs_dir (bench.layout's run folders), keyed by (arch, method, seed)."""
    found = {}
    for path, arch, method, seed in layout.find_records(runs_dir, dataset):
        record = read_record(path)
        key = (record["arch"], record["method"], record["seed"])
        if (record["dataset"], *key) != (dataset, arch, method, seed):
            raise ValueError(
                f"{path}: record is for {record['dataset']}/{'/'.join(map(str, key))}, "
                "not the run its folder names"
            )
        found[key] = record
    return found


def collect(
    runs_dir: Path | str,
    dataset: str,
    expected: list[Run] | None = None,
    allow_missing: bool = False,
) -> tuple[dict[Run, dict], list[Run]]:
    """(records by run, missing runs). With `expected`, only planned runs count; a missing one is an error
    naming the record paths unless `allow_missing`."""
    found = find_records(runs_dir, dataset)
    if expected is None:
        return found, []
    expected = [(a, m, int(s)) for a, m, s in expected]
    extra = len(set(found) - set(expected))
    if extra:
        log.info("%s: %d record(s) outside the planned grid are not in the table", dataset, extra)
    missing = [run for run in expected if run not in found]
    if missing and not allow_missing:
        paths = [str(layout.record_path(runs_dir, dataset, *run)) for run in missing]
        more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
        raise FileNotFoundError(
            f"{len(missing)} planned run(s) of {dataset} have no record: "
            f"{', '.join(paths[:10])}{more}; run them, or pass --allow-missing"
        )
    return {run: found[run] for run in expected if run in found}, missing


def reported_acc(record: dict) -> float | None:
    """The test accuracy a table reports: at the record's selected epoch (the best on validation where the run
    held a validation split, `selection: best_val`), else at the last epoch."""
    return record.get("selected_test_acc", record["test_acc"])


def robust_acc(record: dict, kind: str = "pgd", budget: str = TABLE_BUDGET) -> float | None:
    """The record's accuracy (%) under attack `kind` at `budget` (1/255 units), None where not measured."""
    return ((record.get("robustness") or {}).get(kind) or {}).get(budget)


def final_update_alignment(record: dict) -> float | None:
    """The last epoch's update alignment, mean over the hidden layers where it is defined (None: not measured).

    Per layer it is the cosine between the rule's parameter update and the true BP gradient on the probe
    batch (bench/measure.py update_alignment): 1 for BP, below 1 for any rule that departs from it. The
    head is left out: every local rule trains it with its true gradient, so its 1 would lift them all.
    """
    return mean_update_alignment(record["history"][-1]) if record.get("history") else None


def mean_update_alignment(entry: dict) -> float | None:
    """One history entry's update alignment, mean over its hidden layers (not the head) where defined."""
    layers = entry.get("update_alignment") or {}
    defined = [
        v
        for name, v in layers.items()
        if name != "head" and not name.startswith("head.") and v is not None and math.isfinite(v)
    ]
    return sum(defined) / len(defined) if defined else None
