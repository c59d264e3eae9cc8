"""What the trainer writes: the Record of a finished run (make_record; bench/record/types.py is its type), the
epoch its table reports (selected_epoch), and the per-epoch log.csv beside it."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from bench.config.spec import RunSpec
from bench.files import finite, write_atomic
from bench.measure import declare, memory
from bench.measure import network as measure
from bench.models import convolutional
from bench.record import SCHEMA_VERSION, Record

LOG_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "test_acc",
    "test_top5",
    "lr",
    "train_time_s",
    "images_per_s",
]


def write_log_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch: the fixed columns, the epoch's local loss terms as term_<name>, then each
    declared per-epoch measure (bench/measure/declare.py): a number as <name>, a per-block list as
    <name>_block<i> (from 1)."""
    terms = sorted({k for h in history for k in h.get("terms", {})})
    measures = [
        name for name in declare.of("epoch") if any(name in h.get("measures", {}) for h in history)
    ]
    widths = {name: _width(history, name) for name in measures}
    header = LOG_COLUMNS + [f"term_{t}" for t in terms]
    for name in measures:
        header += (
            [name]
            if widths[name] is None
            else [f"{name}_block{i + 1}" for i in range(widths[name])]
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for h in history:
        row = [h.get(c, "") for c in LOG_COLUMNS] + [h.get("terms", {}).get(t, "") for t in terms]
        for name in measures:
            value = h.get("measures", {}).get(name)
            cells = [value] if widths[name] is None else list(value or []) + [None] * widths[name]
            row += ["" if v is None else v for v in cells[: widths[name] or 1]]
        writer.writerow(row)
    write_atomic(path, buffer.getvalue().encode())


def _width(history: list[dict], name: str) -> int | None:
    """How many log columns a per-block measure takes (its longest list), None for a number (one)."""
    lists = [v for h in history if isinstance(v := h.get("measures", {}).get(name), list)]
    return max(map(len, lists)) if lists else None


def selected_epoch(history: list[dict]) -> dict:
    """Which epoch's test accuracy the tables report: the best on validation where the run has a validation
    split (BioTorch's protocol: the best-validation checkpoint scored on test; the first epoch of the best),
    else the last epoch."""
    if not history:
        return {"selection": "last", "selected_epoch": None, "selected_test_acc": None}
    if "val_acc" not in history[-1]:
        return {
            "selection": "last",
            "selected_epoch": history[-1]["epoch"],
            "selected_test_acc": history[-1]["test_acc"],
        }
    best = max(
        history,
        key=lambda h: (h["val_acc"] if math.isfinite(h["val_acc"]) else -math.inf, -h["epoch"]),
    )
    return {
        "selection": "best_val",
        "selected_epoch": best["epoch"],
        "selected_test_acc": best["test_acc"],
        "best_val_acc": best["val_acc"],
    }


def make_record(
    spec: RunSpec, state: dict, model, optimizer, data, device, measured: dict | None = None
) -> Record:
    """The run's record, from the training state, the network and the end-of-run measures (`measured`:
    bench/measure/end_of_run.py end_of_run), checked as every reader checks it. NaN and infinities are None in it,
    as in record.json (a diverged loss, an undefined cosine), so the run returns what a reader reads."""
    history = state["history"]
    last = history[-1] if history else {}
    train_time = sum(h["train_time_s"] for h in history)
    images = sum(h["images_per_s"] * h["train_time_s"] for h in history)
    record = {
        "schema_version": SCHEMA_VERSION,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "method": spec.method,
        "impl": spec.impl,
        "seed": spec.seed,
        "recipe": spec.recipe,
        "options": spec.options,
        "config_hash": spec.config_hash(),
        "status": state["status"],
        "epochs": state["epoch"],
        "epochs_planned": spec.recipe["epochs"],
        "num_classes": data.num_classes,
        # the network's facts, so no reader builds one to learn them
        "blocks": len(model.blocks),
        "convolutional": convolutional(spec.arch),
        **measure.converted_layers(model),
        "test_acc": last.get("test_acc"),
        "test_top5": last.get("test_top5") if data.num_classes > 5 else None,
        # a diverged epoch's NaN accuracy is undefined, never the best (max would keep a leading NaN)
        "best_test_acc": max(
            (h["test_acc"] for h in history if math.isfinite(h["test_acc"])), default=None
        ),
        **selected_epoch(history),
        "train_time_s": train_time,
        "images_per_s": images / train_time if train_time else None,
        **measure.param_counts(model),
        "trainable_params_initial": state["trainable_params_initial"],
        "memory": memory.memory_breakdown(
            model,
            optimizer,
            last.get("saved_activations", 0),
            device,
            max(
                (h["peak_memory"] for h in history if h.get("peak_memory") is not None),
                default=None,
            ),
        ),
        "history": history,
        "provenance": state["provenance"],
        **(measured or {}),
    }
    return Record.from_json(finite(record), "the trainer's record")
