"""Weight alignment (bench/measure/weight_alignment.py): angles and norm ratios on matrices with known angles, on
swapped layers, per epoch in the history, and undefined where a rule has no per-layer feedback weight."""

import math
import re

import pytest
import torch
from torch import nn

from bench.layers import register_feedback, swap_layers
from bench.measure.weight_alignment import angle_and_ratio, weight_alignment
from bench.report.records import layer_mean
from tests.conftest import make


@pytest.mark.parametrize(
    "weight, feedback, angle, ratio",
    [
        ([[1.0, 0.0]], [[1.0, 1.0]], 45.0, math.sqrt(2)),
        ([[1.0, 0.0]], [[0.0, 3.0]], 90.0, 3.0),
        ([[1.0, 2.0], [3.0, 4.0]], [[-2.0, -4.0], [-6.0, -8.0]], 180.0, 2.0),
        ([[1.0, 2.0], [3.0, 4.0]], [[0.5, 1.0], [1.5, 2.0]], 0.0, 0.5),
        ([[1.0, 0.0, 0.0]], [[1.0, math.sqrt(3), 0.0]], 60.0, 2.0),
    ],
)
def test_angle_and_norm_ratio_of_matrices_with_known_angles(weight, feedback, angle, ratio):
    found_angle, found_ratio = angle_and_ratio(torch.tensor(weight), torch.tensor(feedback))
    assert found_angle == pytest.approx(angle, abs=1e-6) and found_ratio == pytest.approx(ratio)


def test_a_zero_feedback_has_no_angle_and_shapes_must_match():
    assert angle_and_ratio(torch.ones(2, 2), torch.zeros(2, 2)) == (None, 0.0)
    with pytest.raises(ValueError, match="the angle needs one shape"):
        angle_and_ratio(torch.ones(2, 3), torch.ones(3, 2))


def test_the_angle_of_a_swapped_conv_layer_is_that_of_its_flattened_kernels():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten())
    weight = net[0].weight.detach().clone()
    rotated = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    rotated -= (
        (rotated.flatten() @ weight.flatten()) / weight.flatten().norm() ** 2 * weight
    )  # orthogonal to W
    feedback = weight + rotated * (
        weight.norm() / rotated.norm()
    )  # 45 degrees from W, norm sqrt(2) ||W||
    swap_layers(
        net, lambda layer: layer.B, attach=lambda layer: register_feedback(layer, "B", feedback)
    )
    measured = weight_alignment(net)
    assert measured["angle_deg"]["0"] == pytest.approx(45.0, abs=1e-4)
    assert measured["norm_ratio"]["0"] == pytest.approx(math.sqrt(2), rel=1e-5)


def test_sign_symmetry_feedback_is_closer_to_w_than_random_feedback():
    # usf's B = sign(W) sigma is within 90 degrees of W by construction; fa's fixed random B is near 90.
    usf, fa = weight_alignment(make("mlp3", "usf")[0]), weight_alignment(make("mlp3", "fa")[0])
    assert (
        set(usf["angle_deg"])
        == set(fa["angle_deg"])
        == {"blocks.0.1", "blocks.1.0", "blocks.2.0", "head"}
    )
    assert all(a < 60 for a in usf["angle_deg"].values())
    assert all(80 < a < 100 for a in fa["angle_deg"].values())


@pytest.mark.parametrize("rule", ["bp", "dfa", "ssa", "drtp"])
def test_rules_without_per_layer_feedback_weights_have_no_weight_alignment(rule):
    assert weight_alignment(make("mlp3", rule)[0]) is None


def test_layer_mean_of_an_epochs_weight_alignment():
    alignment = {"angle_deg": {"a": 80.0, "b": None, "c": 60.0}, "norm_ratio": {"a": 1.0}}
    assert layer_mean(alignment, "angle_deg") == 70.0 and layer_mean(alignment, "norm_ratio") == 1.0
    assert layer_mean(None, "angle_deg") is None and layer_mean({}, "angle_deg") is None


def test_kp_feedback_turns_toward_w_over_training(tmp_path):
    # Kolen-Pollack: B gets W's update and both decay, so W - B shrinks and the angle falls (Akrout 2019).
    import bench.run.train as trainer
    from bench.config.files import load_config
    from bench.config.spec import make_spec

    spec = make_spec(
        "digits",
        "mlp3",
        "kp",
        0,
        {
            "epochs": 3,
            "batch_size": 64,
            "probe_size": 32,
            "device": "cpu",
            "weight_decay": 0.05,
            "attack_subset": 0,
        },
        load_config(check_data=False).variants,
    )
    record = trainer.run(spec, tmp_path / "kp")
    angles = [layer_mean(h.weight_alignment, "angle_deg") for h in record.history]
    assert angles[-1] < angles[0] < 90


@pytest.mark.parametrize(
    "change, key",
    [
        (
            lambda r: r["history"][0].update(weight_alignment={"angle_deg": {"head": 500.0}}),
            "history[0].weight_alignment.angle_deg.head",
        ),
        (
            lambda r: r["history"][1].update(weight_alignment={"norm_ratio": {"head": -1.0}}),
            "history[1].weight_alignment.norm_ratio.head",
        ),
        (lambda r: r["history"][0].update(weight_alignment=[90.0]), "history[0].weight_alignment"),
        (lambda r: r.update(per_class_acc={"cat": 150.0}), "per_class_acc.cat"),
        (lambda r: r.update(per_class_acc={"cat": float("nan")}), "per_class_acc.cat"),
    ],
)
def test_a_hand_edited_per_layer_or_per_class_value_is_refused_naming_it(tmp_path, change, key):
    import sys
    from pathlib import Path

    from bench.report.table import aggregate

    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic_records import rewrite_record, write_record

    record = write_record(tmp_path, "mlp3", "fa", 0, 50.0)
    record["history"][0]["weight_alignment"] = {
        "angle_deg": {"head": 80.0},
        "norm_ratio": {"head": 1.0},
    }
    record["per_class_acc"] = {"cat": 40.0, "dog": None} | {f"c{i}": 50.0 for i in range(8)}
    rewrite_record(tmp_path, record)
    aggregate(tmp_path, "toy", None, out_dir=tmp_path / "ok")  # in range: accepted
    change(record)
    rewrite_record(tmp_path, record)
    with pytest.raises(ValueError, match=f"for '{re.escape(key)}'"):
        aggregate(tmp_path, "toy", None, out_dir=tmp_path / "bad")
