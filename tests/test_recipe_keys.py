"""The recipe keys of issue 17 (choices the paper leaves open): each default unchanged, each setting doing
what its help says, bad values refused by key. weight_init, batchnorm_fc, conv_bias, schedule_unit,
keep_last_batch, norm_mean / norm_std."""

import json
import math

import pytest
import torch
import yaml
from torch import nn

import bench.run.train as trainer
from bench import data as datasets
from bench.cli import main
from bench.config.recipe import RECIPE
from bench.config.spec import make_spec
from bench.data.augment import Augment, AugmentedData
from bench.data.tensors import TensorData, batch_bounds
from bench.layout import REPO
from bench.models import ARCHS, SCHEMES, build
from bench.run import optim
from bench.run.epoch import train_epoch

DIGITS_TRAIN = 1437  # scikit-learn's digits: 1,797 images, 36 per class held out for test
CIFAR_SHAPE = (3, 32, 32)


def test_new_keys_default_to_what_the_suite_did_before():
    defaults = {
        key: RECIPE[key].default
        for key in (
            "weight_init",
            "batchnorm_fc",
            "conv_bias",
            "schedule_unit",
            "keep_last_batch",
            "norm_mean",
            "norm_std",
        )
    }
    assert defaults == {
        "weight_init": "default",
        "batchnorm_fc": True,
        "conv_bias": True,
        "schedule_unit": "epoch",
        "keep_last_batch": False,
        "norm_mean": [],
        "norm_std": [],
    }
    torch.manual_seed(0)
    before = build("smallconv", CIFAR_SHAPE, 10, batchnorm=True)
    torch.manual_seed(0)
    after = build(
        "smallconv",
        CIFAR_SHAPE,
        10,
        batchnorm=True,
        batchnorm_fc=True,
        conv_bias=True,
        weight_init="default",
    )
    assert all(
        torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values())
    )


# --- weight_init -------------------------------------------------------------------------------------


def _expected_std(scheme: str, fan_in: int, fan_out: int) -> float:
    """The std each scheme's distribution has (uniform on [-b, b] has std b / sqrt 3)."""
    return {
        "kaiming_normal": math.sqrt(2 / fan_in),
        "kaiming_uniform": math.sqrt(2 / fan_in),
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
        "xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
    }[scheme]


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "default"])
def test_weight_init_redraws_every_block_layer_with_its_std_and_keeps_the_head(scheme):
    torch.manual_seed(3)
    plain = build("smallconv", CIFAR_SHAPE, 10)
    torch.manual_seed(3)
    drawn = build("smallconv", CIFAR_SHAPE, 10, weight_init=scheme)
    layers = [
        (a, b)
        for a, b in zip(plain.blocks.modules(), drawn.blocks.modules())
        if isinstance(a, (nn.Conv2d, nn.Linear))
    ]
    assert len(layers) == 4
    for before, after in layers:
        weight = after.weight
        receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
        fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
        assert weight.std().item() == pytest.approx(
            _expected_std(scheme, fan_in, fan_out), rel=0.12
        )
        assert not torch.equal(before.weight, weight)
        assert torch.count_nonzero(after.bias) == 0
    uniform = (
        "uniform" in scheme
    )  # a uniform draw stays inside its bound sqrt(3) std; a normal one leaves it
    big = drawn.blocks[3][1].weight
    bound = math.sqrt(3) * _expected_std(scheme, big.shape[1], big.shape[0])
    assert (big.abs().max().item() <= bound * 1.0001) == uniform
    assert torch.equal(plain.head.weight, drawn.head.weight) and torch.equal(
        plain.head.bias, drawn.head.bias
    )


def test_weight_init_is_seeded_and_reaches_the_rules_prepare(tmp_path):
    """The trainer re-draws before `prepare`: SSA's factors are the SVD of the re-drawn weight."""
    spec = make_spec(
        "digits", "smallconv", "ssa", 0, {"weight_init": "kaiming_normal", "device": "cpu"}, {}
    )
    again = make_spec(
        "digits", "smallconv", "ssa", 0, {"weight_init": "kaiming_normal", "device": "cpu"}, {}
    )
    default = make_spec("digits", "smallconv", "ssa", 0, {"device": "cpu"}, {})
    model = trainer.setup(spec, None)[3]
    same = trainer.setup(again, None)[3]
    other = trainer.setup(default, None)[3]
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values())
    )
    layer = model.blocks[0][0]
    weight = (layer.U * layer.s) @ layer.V.T if hasattr(layer, "U") else None
    assert weight is not None
    fan_in = weight.shape[1]
    assert weight.std().item() == pytest.approx(
        math.sqrt(2 / fan_in), rel=0.35
    )  # 32 x 9: a small sample
    assert not torch.equal(model.blocks[0][0].s, other.blocks[0][0].s)


# --- batchnorm_fc and conv_bias, over every arch (the structure keys ensure a property) ----------------


def _block_layers(model, kind):
    return [m for m in model.blocks.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_conv_bias_false_leaves_no_hidden_conv_with_a_bias(arch):
    shape = (3, 64, 64) if arch == "resnet18" else CIFAR_SHAPE
    model = build(arch, shape, 10, batchnorm=True, conv_bias=False)
    assert all(conv.bias is None for conv in _block_layers(model, nn.Conv2d))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_batchnorm_fc_false_leaves_no_batchnorm_after_a_hidden_linear(arch):
    shape = (3, 64, 64) if arch == "resnet18" else CIFAR_SHAPE
    model = build(arch, shape, 10, batchnorm=True, batchnorm_fc=False)
    assert not _block_layers(model, nn.BatchNorm1d)
    with_fc = build(arch, shape, 10, batchnorm=True)
    assert len(_block_layers(with_fc, nn.BatchNorm2d)) == len(_block_layers(model, nn.BatchNorm2d))


@pytest.mark.parametrize("arch", ["smallconv", "lenet"])
def test_the_small_convnets_take_both_structure_keys(arch):
    default = build(arch, CIFAR_SHAPE, 10, batchnorm=True)
    assert all(conv.bias is not None for conv in _block_layers(default, nn.Conv2d))
    assert len(_block_layers(default, nn.BatchNorm1d)) == 1
    matched = build(arch, CIFAR_SHAPE, 10, batchnorm=True, batchnorm_fc=False, conv_bias=False)
    assert len(_block_layers(matched, nn.BatchNorm2d)) == 3
    assert (
        _block_layers(matched, nn.Linear)[0].bias is not None
    )  # the FC keeps its bias (no BN after it)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    width = _block_layers(matched, nn.Linear)[0].out_features  # smallconv 512, lenet 256
    assert (
        params(default) - params(matched) == (32 + 64 + 128) + 2 * width
    )  # conv biases, BN1d weight + bias


# --- schedule_unit -----------------------------------------------------------------------------------


def test_per_step_cosine_is_torchs_cosine_annealing_stepped_per_batch():
    recipe = {"lr": 0.1, "schedule": "cosine", "epochs": 3, "schedule_unit": "step"}
    steps = 7
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3 * steps)
    for epoch in range(3):
        for step in range(steps):
            assert optim.lr_at(recipe, epoch, step, steps) == pytest.approx(
                optimizer.param_groups[0]["lr"]
            )
            optimizer.step()
            torch_schedule.step()
    per_epoch = {**recipe, "schedule_unit": "epoch"}
    assert (
        optim.lr_at(per_epoch, 1, 5, steps)
        == optim.lr_at(per_epoch, 1, 0, steps)
        == pytest.approx(0.075)
    )
    for schedule in ("step", "multistep", "constant"):  # epoch-based milestones either way
        other = {
            "lr": 0.1,
            "schedule": schedule,
            "epochs": 3,
            "step_size": 1,
            "gamma": 0.5,
            "milestones": [1],
        }
        assert optim.lr_at({**other, "schedule_unit": "step"}, 1, 5, steps) == optim.lr_at(other, 1)


class RecordingSGD(torch.optim.SGD):
    """SGD that notes the learning rate of every step it takes."""

    seen: list = []

    def step(self, closure=None):
        RecordingSGD.seen.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_the_trainer_applies_the_schedule_per_step_or_per_epoch(unit, tmp_path, monkeypatch):
    RecordingSGD.seen = []
    monkeypatch.setattr(
        trainer, "make_optimizer", lambda params, recipe: RecordingSGD(params, lr=recipe["lr"])
    )
    spec = make_spec(
        "digits",
        "mlp3",
        "bp",
        0,
        {
            "epochs": 2,
            "batch_size": 256,
            "lr": 0.01,
            "device": "cpu",
            "probe_size": 32,
            "schedule_unit": unit,
        },
        {},
    )
    trainer.run(spec, tmp_path / "run")
    steps = DIGITS_TRAIN // 256
    assert len(RecordingSGD.seen) == 2 * steps
    if unit == "epoch":
        expected = [0.01] * steps + [0.005] * steps
    else:
        expected = [
            0.01 * 0.5 * (1 + math.cos(math.pi * t / (2 * steps))) for t in range(2 * steps)
        ]
    assert RecordingSGD.seen == pytest.approx(expected)


# --- keep_last_batch ---------------------------------------------------------------------------------


def _tiny(n: int, augmented: bool) -> TensorData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 3
    if augmented:
        return AugmentedData(
            "tiny", x, y, x[:4], y[:4], ["a", "b", "c"], augment=Augment(pad=1, flip=True)
        )
    return TensorData("tiny", x, y, x[:4], y[:4], ["a", "b", "c"])


@pytest.mark.parametrize("augmented", [False, True])
def test_keep_last_batch_serves_every_image_once_and_the_default_drops_the_remainder(augmented):
    data = _tiny(23, augmented)
    kept = [
        len(y) for _, y in data.train_batches(8, torch.Generator().manual_seed(1), keep_last=True)
    ]
    dropped = [len(y) for _, y in data.train_batches(8, torch.Generator().manual_seed(1))]
    assert kept == [8, 8, 7] and dropped == [8, 8]
    labels = torch.cat(
        [y for _, y in data.train_batches(8, torch.Generator().manual_seed(1), keep_last=True)]
    )
    assert sorted(labels.tolist()) == sorted(data.train_y.tolist())  # each image exactly once
    first = [y for _, y in data.train_batches(8, torch.Generator().manual_seed(1))]
    assert all(
        torch.equal(a, b) for a, b in zip(first, labels.split(8))
    )  # same order as without keep_last


def test_a_remainder_of_one_image_is_not_a_batch():
    assert batch_bounds(17, 8, keep_last=True) == [(0, 8), (8, 16)]
    assert batch_bounds(18, 8, keep_last=True) == [(0, 8), (8, 16), (16, 18)]
    assert batch_bounds(16, 8, keep_last=True) == batch_bounds(16, 8) == [(0, 8), (8, 16)]


def test_the_trainer_trains_on_the_last_batch_and_counts_its_images(tmp_path):
    spec = make_spec(
        "digits",
        "mlp3",
        "bp",
        0,
        {"epochs": 1, "batch_size": 64, "device": "cpu", "probe_size": 32, "keep_last_batch": True},
        {},
    )
    device, data, _, model, method = trainer.setup(spec, None)
    optimizer = optim.make_optimizer(model.parameters(), spec.recipe)
    stats = train_epoch(
        model, method, optimizer, data, 64, torch.Generator().manual_seed(0), device, keep_last=True
    )
    assert stats["images"] == DIGITS_TRAIN
    assert optim.steps_per_epoch(data, 64, True) == DIGITS_TRAIN // 64 + 1
    dropped = train_epoch(
        model, method, optimizer, data, 64, torch.Generator().manual_seed(0), device
    )
    assert dropped["images"] == DIGITS_TRAIN // 64 * 64


def test_keep_last_batch_on_a_streamed_dataset_is_refused_before_anything_is_written(
    tmp_path, monkeypatch
):
    class Streamed:  # not a TensorData: what bench.data.load returns for a stream
        name, train_y, in_shape, num_classes = "big", torch.zeros(10), (3, 8, 8), 3

    monkeypatch.setattr(datasets, "load", lambda *args, **kwargs: Streamed())
    spec = make_spec("digits", "mlp3", "bp", 0, {"keep_last_batch": True, "device": "cpu"}, {})
    with pytest.raises(ValueError, match="'keep_last_batch' needs a dataset held on the device"):
        trainer.run(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- norm_mean / norm_std ----------------------------------------------------------------------------


def test_constant_normalisation_replaces_the_training_statistics(tmp_path):
    spec = make_spec(
        "digits",
        "mlp3",
        "bp",
        0,
        {"norm_mean": [0.25], "norm_std": [0.5], "device": "cpu", "val_split": 100},
        {},
    )
    _, data, validation, _, _ = trainer.setup(spec, None)
    raw = data.train_x[:5]
    assert torch.allclose(data.normalise(raw), (raw.float() / 255 - 0.25) / 0.5)
    assert torch.allclose(
        validation.normalise(raw), (raw.float() / 255 - 0.25) / 0.5
    )  # validation too
    plain = trainer.setup(make_spec("digits", "mlp3", "bp", 0, {"device": "cpu"}, {}), None)[1]
    assert not torch.allclose(plain.normalise(raw), data.normalise(raw))


def test_augmented_data_normalises_with_the_constants():
    data = _tiny(16, augmented=True)
    datasets.set_normalisation(data, [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261])
    x = data.train_x[:2]
    expected = (
        x.float() / 255 - torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    ) / torch.tensor([0.247, 0.243, 0.261]).view(1, 3, 1, 1)
    assert torch.allclose(data.normalise(x), expected, atol=1e-5)


@pytest.mark.parametrize(
    "sets,message",
    [
        (["norm_mean=[0.5]"], "bad values [0.5] for 'norm_mean' and [] for 'norm_std'"),
        (["norm_mean=[0.5]", "norm_std=[0.2, 0.2]"], "one number per channel each"),
        (
            ["norm_std=[0]", "norm_mean=[0.5]"],
            "bad value [0.0] for 'norm_std'; accepted: a list of finite numbers > 0.0",
        ),
        (
            ["norm_mean=[1.5]", "norm_std=[0.2]"],
            "'norm_mean'; accepted: a list of finite numbers >= 0.0 and <= 1.0",
        ),
        (["norm_mean=[.nan]", "norm_std=[0.2]"], "'norm_mean'; accepted: a list of finite numbers"),
        (
            ["norm_mean=[0.1, 0.1, 0.1]", "norm_std=[0.2, 0.2, 0.2]"],
            "accepted: 1 numbers, one per channel of digits",
        ),
        (
            ["weight_init=orthogonal"],
            "bad value 'orthogonal' for 'weight_init'; accepted: one of default, kaiming_normal",
        ),
        (
            ["schedule_unit=batch"],
            "bad value 'batch' for 'schedule_unit'; accepted: one of epoch, step",
        ),
        (["keep_last_batch=sometimes"], "bad value 'sometimes' for 'keep_last_batch'"),
        (["conv_bias=2"], "bad value 2 for 'conv_bias'"),
        (["batchnorm_fc=no_fc"], "bad value 'no_fc' for 'batchnorm_fc'"),
    ],
)
def test_bad_values_of_the_new_keys_exit_2_naming_the_key_and_write_nothing(
    sets, message, tmp_path, capsys
):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--arch", "mlp3", "--method", "bp", "--out", str(out)]
    assert main([*args, *[x for pair in sets for x in ("--set", pair)]]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_run_with_every_key_set_records_them(tmp_path):
    out = tmp_path / "run"
    sets = [
        "epochs=1",
        "batch_size=64",
        "probe_size=32",
        "batchnorm=true",
        "batchnorm_fc=false",
        "conv_bias=false",
        "weight_init=kaiming_normal",
        "schedule_unit=step",
        "keep_last_batch=true",
        "norm_mean=[0.3]",
        "norm_std=[0.3]",
    ]
    argv = [
        "train",
        "--dataset",
        "digits",
        "--arch",
        "smallconv",
        "--method",
        "dfa",
        "--out",
        str(out),
    ]
    assert main([*argv, *[x for pair in sets for x in ("--set", pair)]]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "ok"
    assert {
        k: record["recipe"][k]
        for k in (
            "batchnorm_fc",
            "conv_bias",
            "weight_init",
            "schedule_unit",
            "keep_last_batch",
            "norm_mean",
            "norm_std",
        )
    } == {
        "batchnorm_fc": False,
        "conv_bias": False,
        "weight_init": "kaiming_normal",
        "schedule_unit": "step",
        "keep_last_batch": True,
        "norm_mean": [0.3],
        "norm_std": [0.3],
    }
    assert record["history"][0]["images_per_s"] * record["history"][0][
        "train_time_s"
    ] == pytest.approx(DIGITS_TRAIN)


# --- the reference-match config ----------------------------------------------------------------------


def test_reference_match_config_is_the_independent_recipe_and_the_suites_beside_it(tmp_path):
    from bench.config import grid
    from bench.config.files import load_config
    from bench.config.schema import validate
    from bench.config.spec import resolve_variant

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    own = yaml.safe_load((REPO / "config" / "reference_match.yaml").read_text())
    config["variants"].update(own.pop("variants"))
    config.update(own)
    (tmp_path / "cifar10-jpeg" / "train").mkdir(
        parents=True
    )  # the image folder, as the grid checks it
    config["data_dir"] = str(tmp_path)
    cifar = grid.grids(validate(config))["cifar10-jpeg"]
    assert cifar.seeds == (0, 1) and len(cifar.runs()) == 6 * 2
    reference = {
        "weight_init": "kaiming_normal",
        "batchnorm_fc": False,
        "conv_bias": False,
        "schedule_unit": "step",
        "keep_last_batch": True,
        "norm_mean": [0.4914, 0.4822, 0.4465],
        "norm_std": [0.247, 0.243, 0.261],
    }
    shared = {
        "epochs": 4,
        "batch_size": 128,
        "optimizer": "adamw",
        "lr": 0.001,
        "weight_decay": 0.01,
        "schedule": "cosine",
        "crop_pad": 4,
        "flip": True,
        "batchnorm": True,
    }
    variants = {**load_config(check_data=False).variants, **config["variants"]}
    for plain, matched in (
        ("bp", "bp-ref_recipe"),
        ("dfa", "dfa-ref_recipe"),
        ("ssa-match", "ssa-match-ref_recipe"),
    ):
        assert cifar.recipe_for(plain) == shared and cifar.recipe_for(matched) == {
            **shared,
            **reference,
        }
        assert resolve_variant(plain, variants) == resolve_variant(
            matched, variants
        )  # same rule, same options
    assert resolve_variant("ssa-match", variants) == (
        "ssa",
        {"rank_epochs": [], "lambda_align": 1.0, "align_on": "all", "lambda_orth": 0.1},
        {},  # no recipe keys of its own
    )


def test_the_docs_document_every_recipe_key():
    """README.md and docs/*.md together: the recipe table is in docs/running.md, the speed options in docs/speed.md."""
    docs = "\n".join(
        path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    )
    assert [key for key in RECIPE if f"`{key}`" not in docs] == []
