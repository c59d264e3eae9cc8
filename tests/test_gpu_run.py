"""The prepared GPU run (scripts/gpu_run.sh, issue 18): its CPU dry run on a tiny JPEG tree, without the
packages the GPU machine lacks; the deadline grid (bench/gridrun/runner.py); the epoch sizing; `deterministic`."""

import csv
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.config.spec import make_spec
from bench.gridrun import runner
from bench.gridrun.epochs import estimate_epochs
from bench.gridrun.status import write_status
from bench.layout import Layout

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_run.sh"
# The GPU machine's python3 has none of these (torchattacks may come as a carried wheel, not its scipy).
MISSING_THERE = ("snakemake", "mlxtend", "jsonschema", "torchattacks")


def _jpeg_tree(root: Path, train: int = 8, test: int = 3) -> Path:
    """A CIFAR-10-shaped JPEG image folder: 10 classes of 32x32 RGB images."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(10):
            folder = root / "cifar10-jpeg" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    folder / f"{i}.jpg"
                )
    return root


def _blocked(root: Path) -> Path:
    """A folder whose packages stand in for the ones the GPU machine lacks: importing one fails."""
    for name in MISSING_THERE:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not on the GPU machine')\n"
        )
    return root


def test_the_stage_limits_add_up_to_at_most_nine_minutes():
    text = SCRIPT.read_text()
    deadline = int(re.search(r"GRID_DEADLINE=\$\{GRID_DEADLINE:-(\d+)\}", text).group(1))
    limits = re.findall(r"^stage (\S+) (\S+) ", text, flags=re.M)
    names = [name for name, _ in limits]
    assert names == ["device", "perf", "decode", "grid", "report", "pack"]
    assert "GRID_LIMIT=$((GRID_DEADLINE + 30))" in text
    seconds = [deadline + 30 if limit == '"$GRID_LIMIT"' else int(limit) for _, limit in limits]
    assert sum(seconds) <= 9 * 60
    assert (
        runner.STOP_GRACE_S + 5 < 30
    )  # the grid stage stops its runs before its own limit kills it


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The script end to end on the CPU: 2 rules (bp, and dgl for the local-loss family: auxiliary nets
    under bf16 autocast) x 1 arch x 1 seed, 1 epoch, bf16 autocast forced on."""
    root = tmp_path_factory.mktemp("gpu_run")
    data, results, out = _jpeg_tree(root / "data"), root / "results", root / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "DATA_DIR": str(data),
        "RESULTS": str(results),
        "OUT": str(out),
        "ARCHS": "smallconv",
        "METHODS": "bp dgl",
        "SEEDS": "0",
        "EPOCHS": "1",
        "JOBS": "2",
        "PERF_STEPS": "2",
        "BATCH": "16",
        "GRID_DEADLINE": "240",
        "EXTRA_SETS": "autocast=on probe_size=32",
        "PYTHONPATH": str(_blocked(root / "blocked")),
    }
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )
    return result, results, out


def test_the_dry_run_passes_every_stage_and_finishes_its_runs(dry_run):
    result, results, out = dry_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for stage in ("device", "perf", "decode", "grid", "report", "pack"):
        assert f"== {stage} (at most" in result.stdout
    assert (
        "torchattacks does not import here: the grid runs without the robustness attacks"
        in result.stdout
    )
    with open(results / "status.csv") as f:
        status = list(csv.DictReader(f))
    assert [(r["method"], r["status"], r["epochs_done"]) for r in status] == [
        ("bp", "finished", "1"),
        ("dgl", "finished", "1"),
    ]
    device = (out / "device.log").read_text()
    assert "torch " in device and "sha256 " in device
    layout = Layout(str(results))  # each run's output where the Snakefile's train rule logs it
    for method in ("bp", "dgl"):
        log = Path(layout.train_log("cifar10-jpeg", "smallconv", method, 0)).read_text()
        assert f"{method}: status ok" in log


def test_the_dry_run_brings_back_records_table_claims_and_the_perf_table(dry_run):
    _, results, out = dry_run
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back
    with tarfile.open(out / "gpu_cifar10.tar.gz") as archive:
        names = archive.getnames()
    assert sum(n.endswith("record.json") for n in names) == 2
    assert not any(n.endswith("checkpoint.pt") for n in names)
    records = [json.loads(p.read_text()) for p in sorted((results / "runs").rglob("record.json"))]
    assert all(
        r["provenance"]["speed"]["autocast"] for r in records
    )  # the CUDA default path, on the CPU
    assert all(r["provenance"]["determinism"]["requested"] is False for r in records)
    assert all(
        r["robustness"] is None and r["recipe"]["attack_subset"] == 0 for r in records
    )  # said, not failed
    table = (out / "cifar10-jpeg_table.md").read_text()
    assert "| smallconv | bp |" in table.replace("  ", " ") or "bp" in table
    assert (out / "claims.md").read_text().startswith("#")
    with open(out / "perf_step.csv") as f:
        perf = {r["method"]: float(r["ratio_to_bp"]) for r in csv.DictReader(f)}
    assert perf["bp"] == 1.0 and perf["dgl"] > 0


def test_a_run_cut_at_the_deadline_is_reported_as_cut_and_has_no_record(tmp_path):
    jobs = [
        runner.Job("mlp3", m, 0, tmp_path / m, tmp_path / "logs" / f"{m}.log")
        for m in ("bp", "dfa")
    ]
    commands = {
        i: runner.train_command(
            job, "digits", ["epochs=500", "device=cpu"], [REPO / "config" / "config.yaml"], None, 1
        )
        for i, job in enumerate(jobs)
    }
    runner.run_grid(jobs, commands, parallel=1, deadline_s=8)
    write_status(jobs, tmp_path / "status.csv")
    assert [job.status for job in jobs] == ["cut", "not_started"]
    assert not (tmp_path / "bp" / "record.json").exists()
    with open(tmp_path / "status.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["cut", "not_started"] and rows[0]["test_acc"] == ""


def test_estimate_epochs_fills_the_budget_with_the_perf_tables_step_times():
    rows = [
        {"arch": "smallconv", "method": "bp", "median_ms": "2"},
        {"arch": "smallconv", "method": "dfa", "median_ms": "1"},
        {"arch": "vgg13", "method": "bp", "median_ms": "5"},
    ]
    runs = [
        ("smallconv", "bp", 0),
        ("smallconv", "dfa", 0),
        ("vgg13", "bp", 0),
        ("vgg13", "ssa", 0),
    ]
    # steps 390; per epoch one at a time: 390 x (2 + 1 + 5 + 5 (ssa: vgg13's slowest)) ms x 1.3 = 6.591 s
    epochs, how = estimate_epochs(
        rows, runs, 50000, 128, seconds=115, jobs=4, packing_gain=2, startup_s=15
    )
    assert epochs == 30 and "at most 30" in how  # (115 - 15) x 2 / 6.591 = 30.3
    assert estimate_epochs(rows, runs, 50000, 128, 115, 4, 2, startup_s=15, most=50)[0] == 30
    assert estimate_epochs(rows, runs, 50000, 128, 60, 4, 1, startup_s=15)[0] == 6  # 45 / 6.591
    assert estimate_epochs(rows, runs, 50000, 128, 10, 4, 1, startup_s=15)[0] == 1  # never 0
    with pytest.raises(ValueError, match="no row for arch 'resnet32'"):
        estimate_epochs(rows, [("resnet32", "bp", 0)], 50000, 128, 60, 4, 1)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--jobs", "0"], "--jobs 0: accepted: an integer >= 1"),
        (["--deadline-s", "nan"], "--deadline-s nan: accepted: a finite number"),
        (["--epochs", "auto"], "--epochs auto needs --perf-table"),
        (["--methods", "bpp"], "unknown method 'bpp'"),
        (["--set", "lr=-1"], "bad value -1.0 for 'lr'"),
    ],
)
def test_bad_grid_arguments_exit_2_before_any_run_starts(args, message, tmp_path, capsys):
    base = {
        "--dataset": "digits",
        "--archs": "mlp3",
        "--methods": "bp",
        "--results": str(tmp_path / "r"),
        "--deadline-s": "60",
    }
    argv = ["grid"]
    given = dict(zip(args[::2], args[1::2]))
    for key, value in {**base, **given}.items():
        argv += [key, value]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_deterministic_sets_the_flags_records_them_and_restores_them(tmp_path):
    from bench.run.train import run

    before = (torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    record = run(
        make_spec(
            "digits",
            "mlp3",
            "bp",
            0,
            {"epochs": 1, "device": "cpu", "probe_size": 32, "deterministic": True},
            {},
        ),
        tmp_path / "a",
    ).to_json()
    assert record["provenance"]["determinism"] == {
        "requested": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "deterministic_algorithms": True,
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }
    assert (
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
    ) == before
    again = run(
        make_spec(
            "digits",
            "mlp3",
            "bp",
            0,
            {"epochs": 1, "device": "cpu", "probe_size": 32, "deterministic": True},
            {},
        ),
        tmp_path / "b",
    ).to_json()
    assert [h["test_acc"] for h in again["history"]] == [h["test_acc"] for h in record["history"]]
    with pytest.raises(ValueError, match="'deterministic' and 'on' for 'cudnn_benchmark'"):
        make_spec("digits", "mlp3", "bp", 0, {"deterministic": True, "cudnn_benchmark": "on"}, {})
