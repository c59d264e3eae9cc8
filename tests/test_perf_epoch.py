"""`perf epoch`: the suite's training epoch against a plain torchvision-DataLoader loop, on tiny inputs."""

import json
import math
import os
from pathlib import Path

import pytest

from bench.cli import main as cli


def _epoch(tmp_path, *extra):
    out = tmp_path / "epoch.json"
    assert (
        cli(
            [
                "perf",
                "epoch",
                "--device",
                "cpu",
                "--arch",
                "smallconv",
                "--batch-size",
                "32",
                "--warmup",
                "1",
                "--workers",
                "0",
                "--out",
                str(out),
                *extra,
            ]
        )
        == 0
    )
    return json.loads(out.read_text())


def test_perf_epoch_times_both_loops_over_the_same_images(tmp_path):
    suite, plain = _epoch(tmp_path, "--images", "100")
    assert suite["path"] == "suite trainer (bp)" and plain["path"].startswith("plain loop")
    assert suite["images"] == plain["images"] == 96  # 3 full batches of 32: both drop the remainder
    assert (
        suite["speedup"] == pytest.approx(plain["epoch_s"] / suite["epoch_s"])
        and plain["speedup"] is None
    )
    # channels_last's auto is on for CPU; the plain loop has no speed options
    assert suite["speed"] == {
        "channels_last": True,
        "autocast": False,
        "cudnn_benchmark": False,
        "compile": False,
    }
    # both really trained with cross-entropy on 10 random classes: a mean loss near ln 10 at the start
    for row in (suite, plain):
        assert abs(row["train_loss"] - math.log(10)) < 0.5 and row["epoch_s"] > 0


def test_perf_epoch_set_forces_a_speed_option_of_the_suite_side(tmp_path):
    suite, _ = _epoch(tmp_path, "--images", "64", "--set", "channels_last=off", "--method", "dfa")
    assert suite["path"] == "suite trainer (dfa)" and suite["speed"]["channels_last"] is False


def test_perf_epoch_bad_input_exits_2_naming_what_is_accepted(capsys, tmp_path):
    out = ["--out", str(tmp_path / "epoch.json")]
    assert cli(["perf", "epoch", "--device", "cpu", "--arch", "resnet33", *out]) == 2
    assert "unknown arch 'resnet33'" in capsys.readouterr().err
    assert (
        cli(["perf", "epoch", "--device", "cpu", "--images", "10", "--batch-size", "32", *out]) == 2
    )
    assert "smaller than one batch" in capsys.readouterr().err
    assert cli(["perf", "epoch", "--device", "cpu", "--set", "lr=1", *out]) == 2
    assert "unknown --set key 'lr'" in capsys.readouterr().err
    assert cli(["perf", "epoch", "--device", "cpu", "--dataset", "cifar10-jpeg", *out]) == 2
    assert "needs --data-dir" in capsys.readouterr().err
    # a bad variant is refused before any image is decoded (the folder does not even exist)
    assert (
        cli(
            [
                "perf",
                "epoch",
                "--device",
                "cpu",
                "--method",
                "ssaa",
                "--data-dir",
                str(tmp_path / "none"),
                "--dataset",
                "cifar10-jpeg",
                *out,
            ]
        )
        == 2
    )
    assert "unknown method 'ssaa'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def _real_data_dir():
    root = os.environ.get("BENCH_DATA_DIR")
    return root if root and (Path(root) / "cifar10-jpeg" / "train").is_dir() else None


@pytest.mark.skipif(
    _real_data_dir() is None, reason="set BENCH_DATA_DIR to a folder holding cifar10-jpeg/"
)
def test_perf_epoch_on_real_cifar10_jpegs(tmp_path):
    suite, plain = _epoch(
        tmp_path, "--images", "128", "--data-dir", _real_data_dir(), "--dataset", "cifar10-jpeg"
    )
    assert suite["source"].endswith("cifar10-jpeg") and suite["images"] == plain["images"] == 128


def test_perf_epoch_times_the_step_the_trainer_would_take(monkeypatch):
    # a run with locality: blockwise trains with bench/run/blockwise.py's step, not the rule's graph step
    import torch

    import bench.run.blockwise as blockwise
    from bench.config.spec import make_spec
    from bench.perf.epoch import suite_epoch, synthetic_images

    calls = []
    real = blockwise.blockwise_step

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(blockwise, "blockwise_step", counted)
    spec = make_spec(
        "synthetic", "smallconv", "dfa", 0, {"locality": "blockwise", "batch_size": 32}, {}
    )
    images, labels = synthetic_images(64, 10)
    row = suite_epoch(spec, images, labels, 10, torch.device("cpu"), warmup=1)
    assert row["images"] == 64 and len(calls) == 3  # a warm-up batch, then 2 timed
