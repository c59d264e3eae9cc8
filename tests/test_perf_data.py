"""`perf data` times each loader against its torchvision baseline on the same images and reports the ratio."""

import argparse
import gc
import json

import pytest
import torch

from bench.data.ffcv_loader import ffcv_available
from bench.perf import data as perf_data

# numba's dispatcher finalizer raises a harmless KeyError when ffcv's compiled pipelines are collected.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_ffcv_pipelines():
    yield
    gc.collect()  # free them inside the test, where the filter applies, not after pytest's summary


def test_time_batches_skips_the_first_batch_and_counts_the_rest():
    batches = [(torch.zeros(n), None) for n in (100, 3, 4, 5, 6)]
    speed, images = perf_data.time_batches(batches, 3)
    assert images == 3 + 4 + 5 and speed > 0


def test_best_of_keeps_each_timers_best_round():
    speeds = {"a": iter([(1.0, 8), (3.0, 8), (2.0, 8)]), "b": iter([(5.0, 8), (4.0, 8), (6.0, 8)])}
    assert perf_data.best_of(3, lambda: next(speeds["a"]), lambda: next(speeds["b"])) == [
        (3.0, 8),
        (6.0, 8),
    ]


def test_perf_data_measures_both_pairs_side_by_side_and_writes_json(tmp_path):
    parser = argparse.ArgumentParser()
    perf_data.add_arguments(parser)
    out = tmp_path / "perf.json"
    args = parser.parse_args(
        [
            "--batch-size",
            "16",
            "--batches",
            "2",
            "--workers",
            "1",
            "--rounds",
            "1",
            "--image-size",
            "24",
            "--out",
            str(out),
        ]
    )
    assert perf_data.main(args) == 0
    written = json.loads(out.read_text())
    rows = {row["loader"]: row for row in written["rows"]}
    assert written["device"] == "cpu" and len(rows) == 4
    device, torchvision_path = (
        rows["on-device CIFAR path"],
        rows["torchvision DataLoader (1 workers)"],
    )
    assert (
        device["images"] == torchvision_path["images"] == 32
        and device["baseline"] == torchvision_path["loader"]
    )
    assert device["ratio"] == pytest.approx(
        device["images_per_s"] / torchvision_path["images_per_s"]
    )
    folder = rows["torchvision ImageFolder (1 workers)"]
    assert folder["images_per_s"] > 0 and "synthetic" in folder["source"]
    if ffcv_available():
        assert rows["FFCV path"]["ratio"] == pytest.approx(
            rows["FFCV path"]["images_per_s"] / folder["images_per_s"]
        )
    lines = perf_data.report(written["rows"])
    assert lines[1].startswith("on-device CIFAR path") and lines[1].endswith("x")


def test_too_few_images_is_a_clear_error(tmp_path):
    with pytest.raises(
        ValueError, match=r"needs at least 272 training images .* gives 100 \(--limit 100\)"
    ):
        perf_data.run(batch_size=16, batches=16, workers=1, limit=100, rounds=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
@pytest.mark.parametrize("tool", ["data", "step", "epoch"])
def test_every_perf_tool_refuses_cuda_without_a_cuda_device(tool, capsys):
    from bench.cli import main

    assert main(["perf", tool, "--device", "cuda"]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err
