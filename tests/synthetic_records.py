"""Synthetic record.json files, shaped like the trainer's, for the table and figure tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_record(
    runs: Path,
    arch: str,
    method: str,
    seed: int,
    acc: float,
    *,
    dataset: str = "toy",
    status: str = "ok",
    commit: str = "c0ffee",
    epochs: int = 3,
    params: int = 1000,
    ranks: dict | None = None,
) -> dict:
    """Write runs/dataset/arch/method/seed{seed}/record.json; accuracy rises linearly to `acc` at the end
    (the record's fields agree with its history, as the trainer's do)."""
    history = []
    for epoch in range(1, epochs + 1):
        reached = acc * epoch / epochs if epoch < epochs else acc  # the last epoch's: exactly acc
        history.append(
            {
                "epoch": epoch,
                "train_loss": 1.0 / epoch,
                "train_acc": reached,
                "test_acc": reached,
                "test_top5": 100.0,
                "lr": 1e-3,
                "train_time_s": 1.0,
                "images_per_s": 100.0,
                "saved_activations": 3_000_000,
                "terms": {},
                "alignment": [1.0, 1.0] if method == "bp" else [0.1 * epoch, 0.3 * epoch],
                "ranks": {k: v - epoch for k, v in ranks.items()} if ranks else {},
                "trainable_params": params,
            }
        )
    if status == "diverged":  # the trainer's diverged run ends at its first non-finite loss (null)
        history[-1]["train_loss"] = None
    record = {
        "schema_version": 1,
        "dataset": dataset,
        "arch": arch,
        "method": method,
        "impl": method.split("-")[0],
        "seed": seed,
        "recipe": {"epochs": epochs},
        "options": {},
        "status": status,
        "epochs": epochs,
        "epochs_planned": epochs,
        "num_classes": 10,
        "test_acc": acc,
        "test_top5": 100.0,
        "best_test_acc": acc,
        "train_time_s": 1.0 * epochs,
        "images_per_s": 100.0,
        "trainable_params": params,
        "trainable_params_initial": params + 10,
        "feedback_params": 0 if method == "bp" else 50,
        "inference_params": params,
        "memory": {
            "params": 4_000_000,
            "grads": 4_000_000,
            "optimizer_state": 8_000_000,
            "saved_activations": 3_000_000,
            "peak": 100_000_000,
            "peak_kind": "process_peak_rss",
            "device": "cpu",
        },
        "history": history,
        "provenance": {"git_commit": commit, "git_dirty": False},
    }
    folder = runs / dataset / arch / method / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record))
    return record


def rewrite_record(runs: Path, record: dict) -> None:
    """Write `record` (changed by a test) back to its run folder under `runs`."""
    folder = runs / record["dataset"] / record["arch"] / record["method"] / f"seed{record['seed']}"
    (folder / "record.json").write_text(json.dumps(record))


def typed_record(**fields):
    """A Record (bench/record/types.py) of one toy run with no history; `fields` replace the defaults."""
    from bench.record import Memory, Record

    defaults = dict(dataset="toy", arch="mlp", method="bp", seed=0, status="ok", test_acc=50.0)
    return Record(**(defaults | {"memory": Memory(), "history": ()} | fields))
