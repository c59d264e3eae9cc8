"""End-of-run calibration and per-class accuracy (bench/measure/calibration.py): ECE against a hand computation,
per-class accuracy against the overall one, in every record; old records still aggregate."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.data.tensors import TensorData
from bench.measure.calibration import (
    ECE_BINS,
    calibration_error,
    logits_and_labels,
    per_class_accuracy,
)
from bench.report.table import aggregate
from bench.run.speed import Speed


def _ece_by_hand(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Guo et al.'s ECE: confidence = max prob; equal-width bins (lo, hi]; sum of |acc - conf| x share."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = (predicted == labels).astype(float)
    total = 0.0
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def final_evaluation(model, data, batch_size, speed) -> dict:
    """ECE and per-class accuracy of `model` on data's test split, as bench.measure.end_of_run.end_of_run takes them."""
    logits, labels = logits_and_labels(model, data, batch_size, speed)
    return {
        "ece": calibration_error(logits, labels),
        "per_class_acc": per_class_accuracy(logits, labels, data.classes),
    }


class Fixed(nn.Module):
    """Returns stored logits for the images in order: a model whose outputs the test chooses."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.at = logits, 0

    def forward(self, x):
        out = self.logits[self.at : self.at + len(x)]
        self.at += len(x)
        return out


def test_ece_equals_a_hand_computation_and_per_class_accuracy_adds_up():
    g = torch.Generator().manual_seed(0)
    n, k = 300, 4
    logits = torch.randn(n, k, generator=g) * 2
    labels = torch.randint(0, k, (n,), generator=g)
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    data = TensorData("toy", images[:8], labels[:8], images, labels, ["a", "b", "c", "d"])
    result = final_evaluation(Fixed(logits), data, batch_size=64, speed=Speed())
    probs = torch.softmax(logits, 1).numpy()
    assert result["ece"] == pytest.approx(_ece_by_hand(probs, labels.numpy()), abs=1e-5)
    assert 0 < result["ece"] < 1
    counts = torch.bincount(labels, minlength=k).numpy()
    overall = 100 * (logits.argmax(1) == labels).float().mean().item()
    weighted = sum(result["per_class_acc"][c] * counts[i] for i, c in enumerate("abcd")) / n
    assert weighted == pytest.approx(overall)
    assert list(result["per_class_acc"]) == ["a", "b", "c", "d"]


def test_a_confident_and_always_right_model_has_ece_near_0_and_a_wrong_one_near_1():
    labels = torch.arange(40) % 4
    right, wrong = (
        torch.nn.functional.one_hot(labels, 4).float() * 50,
        torch.nn.functional.one_hot((labels + 1) % 4, 4).float() * 50,
    )
    images = torch.zeros(40, 1, 2, 2, dtype=torch.uint8)
    data = TensorData("toy", images[:8], labels[:8], images, labels, list("abcd"))
    assert final_evaluation(Fixed(right), data, 16, Speed())["ece"] == pytest.approx(0, abs=1e-6)
    assert final_evaluation(Fixed(wrong), data, 16, Speed())["ece"] == pytest.approx(1, abs=1e-6)


def test_a_run_records_ece_per_class_accuracy_and_evaluation_time_and_the_table_shows_ece(
    fa_digits_run, tmp_path
):
    runs, record = fa_digits_run
    assert 0 <= record["ece"] <= 1 and record["eval_time_s"] > 0
    per_class = record["per_class_acc"]
    assert len(per_class) == 10 and all(0 <= v <= 100 for v in per_class.values())
    assert sum(per_class.values()) / 10 == pytest.approx(
        record["test_acc"]
    )  # digits: 36 test images per class
    table = aggregate(runs, "digits", None, out_dir=tmp_path / "table")
    assert table["ece"].iloc[0] == pytest.approx(record["ece"])
    assert "| ECE |" in (tmp_path / "table" / "digits_table.md").read_text()


def test_records_without_ece_still_aggregate_with_an_empty_column(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic_records import write_record

    write_record(tmp_path, "mlp3", "bp", 0, 90.0)
    table = aggregate(tmp_path, "toy", None, out_dir=tmp_path / "out")
    assert math.isnan(table["ece"].iloc[0])
    bad = write_record(tmp_path, "mlp3", "dfa", 0, 50.0)
    bad["ece"] = 1.5
    (tmp_path / "toy" / "mlp3" / "dfa" / "seed0" / "record.json").write_text(json.dumps(bad))
    with pytest.raises(
        ValueError, match="bad value 1.5 for 'ece'; accepted: null or a number from 0 to 1"
    ):
        aggregate(tmp_path, "toy", None, out_dir=tmp_path / "out2")
