"""No measurement turns an undefined value into a number (issue 26, class 1), and an end-of-run measure
that cannot be computed is null with its reason, never a failure of a trained run (class 2): one test per
measure family on known inputs (NaN and infinite tensors, zero vectors, empty classes), then a diverged
run and a one-class dataset end to end."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bench.cli import main
from bench.config.recipe import RECIPE
from bench.data.tensors import TensorData
from bench.layers.svd.factored import energy_rank
from bench.measure.calibration import calibration_error, per_class_accuracy
from bench.measure.end_of_run import end_of_run
from bench.measure.memory import memory_breakdown
from bench.measure.network import (
    Undefined,
    _cosine,
    _mean_cosine,
    alignment_with_bp,
    clamped_cosine,
    param_counts,
    rate,
    update_alignment,
)
from bench.measure.robustness import accuracy, robustness
from bench.measure.weight_alignment import angle_and_ratio, weight_alignment
from bench.record import Record
from bench.run import stop
from bench.run.epoch import evaluate
from bench.run.speed import Speed
from tests.conftest import make

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_records import write_record  # noqa: E402

NAN, INF = math.nan, math.inf
RECIPE_DEFAULTS = {key: option.default for key, option in RECIPE.items()}


def _poison(model: nn.Module, value: float = NAN) -> nn.Module:
    """`model` with every weight set to `value` (a diverged network)."""
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def _toy_data(n_test: int = 24) -> TensorData:
    """Three classes of random 3x4x4 images; class "c" has no test image."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_test + 30, 3, 4, 4), generator=g, dtype=torch.uint8)
    labels = torch.cat([torch.arange(30) % 3, torch.arange(n_test) % 2])
    return TensorData("toy", images[:30], labels[:30], images[30:], labels[30:], ["a", "b", "c"])


class Linear(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(48, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


# ---- update alignment (the example) -----------------------------------------------------


def test_update_alignment_cosine_is_nan_for_non_finite_and_zero_vectors_never_1():
    ones, nan = torch.ones(4, dtype=torch.float64), torch.full((4,), NAN, dtype=torch.float64)
    inf = torch.tensor([INF, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert clamped_cosine(NAN) != clamped_cosine(NAN)  # NaN; max(-1, min(1, nan)) is 1.0
    assert _is_nan(_cosine(nan, nan))  # torch.equal is False for NaN: the clamp made it 1.0
    assert _is_nan(_cosine(inf, inf))  # torch.equal is True for equal infinities
    assert _is_nan(_cosine(ones, inf)) and _is_nan(_cosine(nan, ones))
    assert _is_nan(_cosine(torch.zeros(4, dtype=torch.float64), ones))
    assert _cosine(ones, ones) == 1.0
    half = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    assert _cosine(half, torch.tensor([1.0, 1.0, 0, 0], dtype=torch.float64)) == pytest.approx(
        1 / math.sqrt(2)
    )
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 10
    for rule in ("bp", "fa"):
        model, method = make("mlp3", rule)
        finite = update_alignment(model, method, x, y)
        assert all(-1 <= c <= 1 for c in finite.values()), rule
        found = update_alignment(_poison(model), method, x, y)
        assert set(found) == set(finite) and all(map(_is_nan, found.values())), (rule, found)


# ---- signal alignment ---------------------------------------------------------------------------


def test_signal_alignment_is_nan_where_a_sample_is_not_finite():
    true = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    signal = torch.tensor([[1.0, 1.0], [INF, 0.0], [0.0, 2.0]])
    # the infinite sample's true gradient is 0: its product was NaN and it was left out as "fitted"
    assert _is_nan(_mean_cosine(signal, true))
    assert _is_nan(_mean_cosine(torch.full((3, 2), NAN), true))
    fitted = torch.tensor([[1.0, 1.0], [5.0, 0.0], [0.0, 2.0]])
    assert _mean_cosine(fitted, true) == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    model, method = make("mlp3", "dfa")
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 10
    assert not any(map(_is_nan, alignment_with_bp(model, method, x, y)))
    assert all(map(_is_nan, alignment_with_bp(_poison(model, INF), method, x, y)))


# ---- weight angles and norm ratios --------------------------------------------------------------


def test_weight_angle_and_norm_ratio_are_undefined_for_non_finite_weights():
    ones = torch.ones(2, 2)
    inf = torch.tensor([[INF, 1.0], [1.0, 1.0]])
    assert angle_and_ratio(inf, ones) == (None, None)  # was 0 degrees and a ratio of 0.0
    assert angle_and_ratio(ones, inf) == (None, None)  # was 0 degrees
    assert angle_and_ratio(ones, torch.full((2, 2), NAN)) == (None, None)  # the ratio was NaN
    assert angle_and_ratio(torch.zeros(2, 2), ones) == (
        None,
        None,
    )  # zero weight: no angle, no ratio
    assert angle_and_ratio(ones, 2 * ones) == (pytest.approx(0, abs=1e-5), pytest.approx(2.0))
    model, _ = make("mlp3", "fa")
    found = weight_alignment(_poison(model, INF))
    assert found["angle_deg"] and all(v is None for v in found["angle_deg"].values())
    assert all(v is None for v in found["norm_ratio"].values())


# ---- calibration and per-class accuracy ---------------------------------------------------------


def test_calibration_and_per_class_accuracy_are_undefined_without_finite_outputs_or_classes():
    labels = torch.tensor([0, 1, 0, 1])
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0]])
    assert per_class_accuracy(logits, labels, ["a", "b", "c"]) == {"a": 50.0, "b": 100.0, "c": None}
    assert 0 < calibration_error(logits, labels) < 1
    diverged = logits.clone()
    diverged[2] = NAN  # argmax of NaN logits is 0: class "a" would count as right
    with pytest.raises(Undefined, match="1 of 4 test images give non-finite outputs"):
        calibration_error(diverged, labels)
    with pytest.raises(Undefined, match="per-class accuracy is undefined"):
        per_class_accuracy(diverged, labels)
    with pytest.raises(Undefined, match="non-finite"):
        calibration_error(torch.full((4, 3), INF), labels)
    with pytest.raises(Undefined, match="the network has 1 class"):
        calibration_error(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(Undefined, match="no test images"):
        per_class_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


# ---- robustness ---------------------------------------------------------------------------------


def test_robustness_is_undefined_for_non_finite_outputs_and_leaves_the_model_as_it_was():
    x, y = torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    model = Linear()
    assert 0 <= accuracy(model, x, y, 4) <= 100
    with pytest.raises(Undefined, match="no test images"):
        accuracy(model, x[:0], y[:0], 4)
    with pytest.raises(Undefined, match="6 of 6 images of the attack subset give non-finite"):
        accuracy(_poison(Linear()), x, y, 4)  # argmax 0: class 0's two images counted right
    diverged = _poison(Linear())
    diverged.train()
    recipe = RECIPE_DEFAULTS | {"eval_batch_size": 8, "attack_subset": 10}
    with pytest.raises(Undefined, match="robustness is undefined"):
        robustness(diverged, _toy_data(), recipe, Speed())
    assert diverged.training  # restored although the clean accuracy raised


# ---- ranks, memory, parameter counts, throughput ------------------------------------------------


def test_test_accuracy_of_non_finite_outputs_is_undefined_never_class_0():
    model, data = Linear(), _toy_data()
    top1, top5 = evaluate(model, data, 8)
    assert 0 <= top1 <= top5 <= 100
    assert all(map(_is_nan, evaluate(_poison(model), data, 8)))  # argmax of NaN logits is class 0


def test_ranks_memory_and_rates_give_no_number_for_an_undefined_value():
    # a layer with a NaN singular value keeps its rank (it was cut to 1: NaN compared as no energy)
    assert energy_rank(torch.tensor([3.0, NAN, 1.0]), 0.01) == 3
    assert energy_rank(torch.tensor([3.0, INF, 1.0]), 0.01) == 3
    assert energy_rank(torch.tensor([4.0, 3.0, 0.0]), 0.01) == 2
    assert _is_nan(rate(1000, 0.0)) and _is_nan(rate(1000, NAN)) and rate(1000, 4.0) == 250
    model, _ = make("mlp3", "bp")
    counts = param_counts(model)
    assert param_counts(_poison(model)) == counts  # counts are facts of the shapes, defined always
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cuda = memory_breakdown(model, optimizer, 0, torch.device("cuda"), None)
    assert cuda["peak"] is None  # no training peak measured: null, it was 0
    assert memory_breakdown(model, optimizer, 0, torch.device("cuda"), 512)["peak"] == 512


# ---- end of run: null with the reason -----------------------------------------------------------


def test_end_of_run_records_each_measure_it_cannot_compute_as_null_with_its_reason(
    monkeypatch, caplog
):
    import bench.measure.end_of_run

    data, recipe = _toy_data(), RECIPE_DEFAULTS | {"eval_batch_size": 8, "attack_subset": 10}
    measured = end_of_run(Linear(), data, recipe, Speed())
    assert measured["unmeasured"] is None and 0 <= measured["ece"] <= 1
    assert measured["per_class_acc"]["c"] is None and measured["robustness"]["subset"] == 10
    diverged = end_of_run(_poison(Linear()), data, recipe, Speed())
    assert diverged["ece"] is diverged["per_class_acc"] is diverged["robustness"] is None
    assert set(diverged["unmeasured"]) == {"ece", "per_class_acc", "robustness"}
    assert "24 of 24 test images give non-finite outputs" in diverged["unmeasured"]["ece"]
    assert diverged["eval_time_s"] >= 0

    def broken(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(bench.measure.end_of_run, "robustness", broken)
    measured = end_of_run(Linear(), data, recipe, Speed())
    assert measured["unmeasured"] == {"robustness": "failed: RuntimeError: out of memory"}
    assert measured["robustness"] is None and measured["ece"] is not None
    assert "end-of-run robustness not measured: failed: RuntimeError" in caplog.text

    def stopped(*args):
        raise stop.Terminated()

    monkeypatch.setattr(bench.measure.end_of_run, "robustness", stopped)
    with pytest.raises(stop.Terminated):  # a SIGTERM still stops the run
        end_of_run(Linear(), data, recipe, Speed())


def test_a_record_names_why_a_measure_is_null_and_the_reason_is_checked(tmp_path):
    record = write_record(tmp_path, "mlp3", "bp", 0, 90.0)
    reason = "the network has 1 class: calibration error is undefined for fewer than 2 classes"
    read = Record.from_json(record | {"ece": None, "unmeasured": {"ece": reason}})
    assert read.unmeasured == {"ece": reason}
    for bad, message in [
        ({"ece": 3}, "bad value 3 for 'unmeasured.ece'; accepted: a non-empty string"),
        ({"ece": ""}, "'unmeasured.ece'; accepted: a non-empty string"),
        ({"acc": "x"}, "'unmeasured.acc'; accepted: a reason under one of ece, per_class_acc"),
        ("why", "bad value 'why' for 'unmeasured'; accepted: null or an object"),
    ]:
        with pytest.raises(ValueError, match=message):
            Record.from_json(record | {"unmeasured": bad}, "r.json")
    with pytest.raises(ValueError, match="bad value 0.5 for 'ece'; accepted: null: unmeasured.ece"):
        Record.from_json(record | {"ece": 0.5, "unmeasured": {"ece": reason}}, "r.json")


# ---- whole runs ---------------------------------------------------------------------------------


def _train(out: Path, dataset: str, method: str, *sets: str, data_dir: Path | None = None) -> dict:
    command = [
        "train",
        "--dataset",
        dataset,
        "--arch",
        "mlp3",
        "--method",
        method,
        "--out",
        str(out),
    ]
    command += ["--data-dir", str(data_dir)] if data_dir else []
    assert main([*command, *(x for pair in sets for x in ("--set", pair))]) == 0
    return json.loads((out / "record.json").read_text())


def test_a_diverged_run_records_null_alignments_and_end_of_run_measures_with_reasons(tmp_path):
    sets = (
        "optimizer=sgd",
        "lr=1e12",
        "momentum=0",
        "epochs=2",
        "probe_size=32",
        "attack_subset=50",
    )
    record = _train(tmp_path / "fa", "digits", "fa", *sets)
    assert record["status"] == "diverged"
    last = record["history"][-1]
    assert last["update_alignment"] and set(last["update_alignment"].values()) == {None}
    assert last["alignment"] == [None, None, None]
    assert last["test_acc"] is last["test_top5"] is record["test_acc"] is None  # argmax of NaN
    assert set(last["weight_alignment"]["angle_deg"].values()) == {None}
    assert record["ece"] is record["per_class_acc"] is record["robustness"] is None
    assert set(record["unmeasured"]) == {"ece", "per_class_acc", "robustness"}
    assert all(
        "non-finite outputs (a diverged network)" in r for r in record["unmeasured"].values()
    )


def test_an_epoch_whose_loss_is_finite_but_whose_network_is_not_ends_the_run_as_diverged(
    tmp_path, monkeypatch
):
    """The epoch's last step can leave NaN weights behind a finite mean loss: the run is diverged then
    too (an ok record needs a test accuracy), and the record reads."""
    import bench.run.train as trainer

    real = trainer.evaluate
    calls = []

    def nan_in_epoch_2(model, data, *args):
        calls.append(1)
        return (NAN, NAN) if len(calls) == 2 else real(model, data, *args)

    monkeypatch.setattr(trainer, "evaluate", nan_in_epoch_2)
    record = _train(tmp_path / "bp", "digits", "bp", "epochs=3", "attack_subset=0")
    assert record["status"] == "diverged" and record["epochs"] == 2
    assert record["history"][-1]["train_loss"] is not None
    assert record["test_acc"] is None and record["best_test_acc"] is not None
    assert Record.from_json(record).status == "diverged"


def _one_class_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 6)):
        (root / "solo" / split / "cat").mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "solo" / split / "cat" / f"{i:02d}.png")


def test_a_one_class_dataset_finishes_with_a_null_ece_and_its_reason_and_reruns(tmp_path):
    _one_class_folder(tmp_path / "data")
    sets = ("epochs=1", "batch_size=8", "probe_size=8", "attack_subset=6")
    out = tmp_path / "run"
    first = _train(out, "solo", "bp", *sets, data_dir=tmp_path / "data")
    assert first["status"] == "ok" and first["ece"] is None
    assert first["unmeasured"] == {
        "ece": "the network has 1 class: calibration error is undefined for fewer than 2 classes"
    }
    assert first["per_class_acc"] == {"cat": 100.0} and first["robustness"]["clean_acc"] == 100.0
    again = _train(out, "solo", "bp", *sets, data_dir=tmp_path / "data")  # it failed on every rerun
    assert again["ece"] is None and again["unmeasured"] == first["unmeasured"]
