"""Shared fixtures: tiny models, batches and the discovered methods."""

import pytest
import torch

from bench.method import call_hook, discover
from bench.models import build
from bench.run.train import derive_seed

torch.set_num_threads(2)


@pytest.fixture
def batch():
    """A fixed batch of 16 random 1x8x8 images over 10 classes (every class present)."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(16, 1, 8, 8, generator=g)
    y = torch.arange(16) % 10
    return x, y


def make(arch: str, method: str, seed: int = 0, **options):
    """A fresh seeded model of `arch` for 8x8 inputs, prepared by `method` with `options`."""
    torch.manual_seed(seed)
    model = build(arch, (1, 8, 8), 10)
    rule = discover()[method](**options)
    # Feedback from its own stream, as the trainer does: seeded like the init, fa's B would be W's copy.
    feedback = torch.Generator().manual_seed(derive_seed(seed, "feedback"))
    model = call_hook(
        rule.prepare, model, 10, feedback, in_shape=(1, 8, 8)
    )  # as the trainer calls it
    rule.generator.manual_seed(derive_seed(seed, "method"))
    return model, rule


@pytest.fixture
def methods():
    return discover()


def run_killed_in_epoch_2(monkeypatch, run_spec, out):
    """Train `run_spec` into `out` and kill it (KeyboardInterrupt) as epoch 2 starts: epoch 1's checkpoint stays."""
    import bench.run.train as trainer

    real_epoch = trainer.run_epoch

    def die(training, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return real_epoch(training, epoch)

    monkeypatch.setattr(trainer, "run_epoch", die)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(run_spec, out)
    monkeypatch.setattr(trainer, "run_epoch", real_epoch)


@pytest.fixture(scope="session")
def fa_digits_run(tmp_path_factory):
    """(runs folder, record) of one `python -m bench train` of fa on digits (1 epoch, 100 images
    attacked), shared by the tests of the end-of-run measures, which only read it."""
    import json

    from bench.cli import main

    runs = tmp_path_factory.mktemp("fa_digits") / "runs"
    out = runs / "digits" / "mlp3" / "fa" / "seed0"
    sets = ["epochs=1", "probe_size=32", "attack_subset=100"]
    command = [
        "train",
        "--dataset",
        "digits",
        "--arch",
        "mlp3",
        "--method",
        "fa",
        "--out",
        str(out),
    ]
    assert main([*command, *(x for pair in sets for x in ("--set", pair))]) == 0
    return runs, json.loads((out / "record.json").read_text())
