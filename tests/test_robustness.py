"""Adversarial robustness after training (bench/measure/robustness.py): the attacks against a closed-form reference
on a linear model, the true gradient whatever rule trained the network, the seeded subset, the record,
the table, the figure, and a missing package refused before training."""

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.config.recipe import RECIPE
from bench.data.tensors import TensorData
from bench.measure.end_of_run import require_packages
from bench.measure.robustness import attack_subset, robustness
from bench.models import build
from bench.record.check import ATTACKS
from bench.report.table import aggregate
from bench.run.speed import Speed
from tests.conftest import make

RECIPE_DEFAULTS = {key: option.default for key, option in RECIPE.items()}


def _toy_data(n_test: int = 64, seed: int = 0) -> TensorData:
    """Two classes of random 3x4x4 uint8 images, normalised with their training split's statistics."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_test + 32, 3, 4, 4), generator=g, dtype=torch.uint8)
    labels = torch.arange(n_test + 32) % 2
    return TensorData("toy", images[:32], labels[:32], images[32:], labels[32:], ["a", "b"])


class Linear(nn.Module):
    """logits = W x + b on the flattened normalised image: its input gradient has a closed form."""

    def __init__(self, seed: int = 1):
        super().__init__()
        self.fc = nn.Linear(48, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(2, 48, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return self.fc(x.flatten(1))


def _recipe(**changes) -> dict:
    return RECIPE_DEFAULTS | {"eval_batch_size": 16} | changes


def test_attacks_on_a_two_class_linear_model_match_the_closed_form_worst_case():
    # For two classes, dCE/dx at x has the sign of (w_other - w_true) / std everywhere, so the L-inf worst
    # case in the budget is x + eps sign(w_other - w_true), clipped to the image range: FGSM reaches it in
    # one step, PGD from any random start (its steps sum to 2.5 eps > 2 eps) and stays there.
    data, model = _toy_data(), Linear()
    entry = robustness(model, data, _recipe(attack_subset=1000), Speed())
    x01 = data.test_x.float() / 255
    w = model.fc.weight.detach().view(2, 3, 4, 4)
    y = data.test_y
    direction = torch.sign(w[1 - y] - w[y])
    for budget in ("1", "2", "4", "8"):
        adversarial = (x01 + float(budget) / 255 * direction).clamp(0, 1)
        with torch.no_grad():
            expected = (
                100.0
                * (model(data.normalise((adversarial * 255))).argmax(1) == y).float().mean().item()
            )
        for kind in ATTACKS:
            assert entry[kind][budget] == pytest.approx(expected, abs=100 / len(y) + 1e-9), (
                kind,
                budget,
            )
    with torch.no_grad():
        clean = 100.0 * (model(data.normalise(data.test_x)).argmax(1) == y).float().mean().item()
    assert entry["clean_acc"] == pytest.approx(clean)
    assert (
        entry["pgd"]["8"] <= entry["pgd"]["1"] <= clean
    )  # a larger budget never helps the network


def _normalise_float(data, x01):
    return (x01 - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)


def test_pgd_matches_a_hand_written_pgd_on_a_small_mlp():
    # The reference computed another way: Madry's PGD written out here (same start, step and clipping).
    data = _toy_data(n_test=48)
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 2))
    recipe = _recipe(attack_subset=1000, attack_eps=[4.0], attack_steps=5)
    entry = robustness(model, data, recipe, Speed())
    eps, steps = 4 / 255, 5
    x01, y = data.test_x.float() / 255, data.test_y
    torch.manual_seed(0)  # START_SEED: the one random start
    adv = (x01 + torch.empty_like(x01).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(_normalise_float(data, adv)), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + 2.5 * eps / steps * grad.sign()
        adv = (x01 + (adv - x01).clamp(-eps, eps)).clamp(0, 1)
    with torch.no_grad():
        expected = 100.0 * (model(_normalise_float(data, adv)).argmax(1) == y).float().mean().item()
    assert entry["pgd"]["4"] == pytest.approx(expected, abs=100 / len(y) + 1e-9)


@pytest.mark.parametrize("rule", ["fa", "usf", "kp"])
def test_the_attack_uses_the_true_gradient_whatever_rule_trained_the_network(rule):
    # The same weights with the rule's feedback backward, and in a plain network: the same attacked accuracy.
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (104, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(104) % 10
    data = TensorData(
        "toy", images[:64], labels[:64], images[64:], labels[64:], [str(c) for c in range(10)]
    )
    prepared, _ = make("mlp3", rule)
    plain = build("mlp3", (1, 8, 8), 10)
    plain.load_state_dict(
        {k: v for k, v in prepared.state_dict().items() if k in plain.state_dict()}
    )
    recipe = _recipe(
        attack_subset=1000, attack_eps=[8.0], attack_steps=3, attack_rule_gradient=True
    )
    swapped, reference = (
        robustness(prepared, data, recipe, Speed()),
        robustness(plain, data, recipe, Speed()),
    )
    for kind in ATTACKS:
        assert swapped[kind] == reference[kind], kind
    assert (
        reference["rule_gradient"] is None
    )  # no feedback layers: no second gradient to attack with
    assert set(swapped["rule_gradient"]) == set(ATTACKS)  # BioTorch's setting, measured beside it


def test_the_attacked_subset_is_a_fixed_draw_whatever_the_batch_size():
    data = _toy_data(n_test=50)
    x1, y1 = attack_subset(data, 20, 7)
    x2, y2 = attack_subset(copy.deepcopy(data), 20, 50)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and len(y1) == 20
    assert len(attack_subset(data, 10_000, 16)[1]) == 50  # more than the split: the whole split


def test_no_attack_when_the_subset_is_zero():
    assert robustness(Linear(), _toy_data(), _recipe(attack_subset=0), Speed()) is None


def test_a_missing_attack_package_is_refused_before_training(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # importing it now raises ImportError
    with pytest.raises(
        ValueError,
        match="attack_subset: 1000 asks for the robustness attacks.*pip install torchattacks",
    ):
        require_packages(_recipe())
    require_packages(_recipe(attack_subset=0))  # not asked for: no package needed


def test_a_digits_run_records_robustness_and_the_table_and_figure_show_it(fa_digits_run, tmp_path):
    runs, record = fa_digits_run
    entry = record["robustness"]
    assert entry["subset"] == 100 and set(entry["pgd"]) == {"1", "2", "4", "8"}
    assert entry["time_s"] > 0 and record["eval_time_s"] >= entry["time_s"]
    table = aggregate(runs, "digits", None, out_dir=tmp_path / "table")
    assert table["pgd_acc"].iloc[0] == pytest.approx(entry["pgd"]["2"])
    assert "| PGD acc @2/255 (%) |" in (tmp_path / "table" / "digits_table.md").read_text()
    assert (
        main(
            [
                "plot",
                "--runs-dir",
                str(runs),
                "--dataset",
                "digits",
                "--out-dir",
                str(tmp_path / "figures"),
            ]
        )
        == 0
    )
    assert (tmp_path / "figures" / "digits_robustness.png").stat().st_size > 10_000


def test_records_without_robustness_aggregate_and_a_bad_value_is_refused(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic_records import write_record

    write_record(tmp_path, "mlp3", "bp", 0, 90.0)
    assert math.isnan(aggregate(tmp_path, "toy", None, out_dir=tmp_path / "out")["pgd_acc"].iloc[0])
    bad = write_record(tmp_path, "mlp3", "dfa", 0, 50.0)
    bad["robustness"] = {"clean_acc": 50.0, "fgsm": {"2": 40.0}, "pgd": {"2": 150.0}}
    (tmp_path / "toy" / "mlp3" / "dfa" / "seed0" / "record.json").write_text(json.dumps(bad))
    with pytest.raises(
        ValueError,
        match=r"bad value 150.0 for 'robustness.pgd.2'; accepted: a number from 0 to 100",
    ):
        aggregate(tmp_path, "toy", None, out_dir=tmp_path / "out2")
