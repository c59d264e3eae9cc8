"""Hostile and careless input (issue 16): non-finite numbers and lenient YAML are refused by every reader."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import sweep, yamlfile
from bench.config.files import load_config
from bench.config.schema import validate
from bench.layout import REPO
from tests.conftest import run_killed_in_epoch_2

TRAIN = ["train", "--dataset", "digits", "--arch", "mlp3", "--method", "ssa", "--seed", "0"]
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)  # 10^9 strings once expanded, 9 lines written


@pytest.mark.parametrize(
    "pair, key",
    [
        ("lr=inf", "lr"),
        ("lr=.inf", "lr"),
        ("weight_decay=.inf", "weight_decay"),
        ("lr=nan", "lr"),
        ("lambda_align=.inf", "lambda_align"),
        ("lambda_orth=-inf", "lambda_orth"),
        ("rank_eps=NaN", "rank_eps"),
        ("momentum=.nan", "momentum"),
        ("gamma=1e400", "gamma"),
    ],
)
def test_non_finite_numbers_on_the_command_line_exit_2_naming_the_key(pair, key, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--set", pair]) == 2
    err = capsys.readouterr().err
    assert f"for {key!r}; accepted: a finite float" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "change, key",
    [
        (
            {"datasets": {"digits": {"archs": ["mlp3"], "recipe": {"lr": float("inf")}}}},
            "datasets.digits.recipe.lr",
        ),
        (
            {"datasets": {"digits": {"archs": ["mlp3"], "recipe": {"weight_decay": float("nan")}}}},
            "datasets.digits.recipe.weight_decay",
        ),
        (
            {"variants": {"x": {"impl": "ssa", "lambda_align": float("inf")}}},
            "variants.x.lambda_align",
        ),
        (
            {
                "datasets": {
                    "digits": {"archs": ["mlp3"], "method_recipe": {"bp": {"lr": -float("inf")}}}
                }
            },
            "datasets.digits.method_recipe.bp.lr",
        ),
    ],
)
def test_non_finite_numbers_in_a_config_are_refused_naming_the_key(change, key):
    config = yamlfile.load(REPO / "config" / "config.yaml") | change
    with pytest.raises(
        ValueError, match=f"config key {key}: bad value .*accepted: a finite number"
    ):
        validate(config)


def test_a_key_written_twice_is_refused_by_every_config_reader(tmp_path):
    text = (
        (REPO / "config" / "config.yaml")
        .read_text()
        .replace(
            "  bp: {impl: bp}\n", "  bp: {impl: bp}\n  dfa2: {impl: dfa}\n  bp: {impl: dfa}\n", 1
        )
    )
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    for read in (lambda p: load_config([p], check_data=False), lambda p: load_config([p])):
        with pytest.raises(
            ValueError, match=r"twice\.yaml.*duplicate key 'bp' \(first at line \d+\)"
        ):
            read(path)


def test_an_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    for read in (lambda p: load_config([p], check_data=False), lambda p: load_config([p])):
        with pytest.raises(ValueError, match="expands to more than") as error:
            read(path)
        assert len(str(error.value)) < 400 and str(path) in str(error.value)
    assert yamlfile.loads("a: &x {k: 1}\nb: *x\n") == {
        "a": {"k": 1},
        "b": {"k": 1},
    }  # plain aliases still work


@pytest.mark.parametrize(
    "text", ["a: &x [*x]\n", "a: &x {b: *x}\n", "variants: &v {x: {impl: ssa, more: *v}}\n"]
)
def test_a_recursive_yaml_alias_is_refused_naming_the_file_and_line(tmp_path, text):
    # a structure that contains itself: printing or comparing it would recurse without end
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"loop\.yaml: line 1: a YAML alias refers to a node"):
        load_config([path])
    assert yamlfile.loads("a: &x [1]\nb: [*x, *x]\n") == {"a": [1], "b": [[1], [1]]}  # shared: fine


def test_a_folder_a_device_or_a_huge_file_given_as_a_config_file_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="is a folder; give a YAML file"):
        yamlfile.load(tmp_path)
    if Path("/dev/zero").exists():  # a device would be read without end
        (tmp_path / "zero.yaml").symlink_to("/dev/zero")
        with pytest.raises(ValueError, match="not a regular file"):
            yamlfile.load(tmp_path / "zero.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n")
    monkeypatch.setattr(yamlfile, "MAX_BYTES", 4)
    with pytest.raises(ValueError, match="big.yaml is over"):
        yamlfile.load(big)


def test_unreadable_yaml_gives_one_short_line_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("variants: [" + "x, " * 5000)
    with pytest.raises(ValueError, match="broken.yaml is not readable YAML") as error:
        load_config([path], check_data=False)
    assert len(str(error.value)) < 500


def test_the_pipeline_refuses_a_configfile_with_a_duplicate_key_before_any_job(tmp_path):
    path = tmp_path / "extra.yaml"
    path.write_text("variants:\n  ssa: {impl: ssa}\n  ssa: {impl: dfa}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "--configfile",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "duplicate key 'ssa'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def _snakemake(workdir, *args, env=None):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.mark.parametrize(
    "key, value",
    [
        ("data_dir", "data;touch {marker};echo"),
        ("results_dir", "results;touch {marker}"),
        ("data_dir", "$(touch {marker})"),
        ("results_dir", "`touch {marker}`"),
        ("data_dir", "a\\ntouch {marker}"),
        ("data_dir", "x|touch {marker}"),
        ("results_dir", "r && touch {marker}"),
        ("data_dir", "d > {marker}"),
    ],
)
def test_a_config_value_that_would_reach_a_shell_is_refused_and_runs_nothing(key, value, tmp_path):
    marker = tmp_path / "injected"
    done = _snakemake(
        tmp_path,
        "--cores",
        "1",
        "--config",
        f"{key}={value.format(marker=marker)}",
        "default_datasets=[digits]",
        "epochs=1",
        "seeds=[0]",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        f"config key {key}: bad value" in done.stderr and "no shell metacharacters" in done.stderr
    )
    assert not marker.exists() and not (tmp_path / "results").exists()


def test_a_data_folder_with_a_space_in_its_path_trains_through_the_pipeline(tmp_path):
    from PIL import Image

    data = tmp_path / "my data"  # a space, as real folders have
    for split, count in (("train", 12), ("test", 4)):
        for label, shade in (("dark", 30), ("light", 220)):
            folder = data / "tiny" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (shade, shade - i, shade)).save(folder / f"{i}.png")
    done = _snakemake(
        tmp_path,
        "--cores",
        "1",
        "--config",
        f"data_dir={data}",
        "results_dir=out put",
        "default_datasets=[tiny]",
        "seeds=[0]",
        "datasets={tiny: {archs: [mlp3], methods: [bp], recipe: {epochs: 1, batch_size: 8}}}",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = tmp_path / "out put" / "runs" / "tiny" / "mlp3" / "bp" / "seed0" / "record.json"
    assert record.is_file() and (tmp_path / "out put" / "tiny_table.csv").is_file()


def test_sweep_points_get_faithful_names_and_a_name_collision_is_refused():
    named = sweep.points("s", {"impl": "ssa", "options": {"lr": [1e-5, 1.4e-5, 2e-3]}})
    assert {"s-lr_1em05", "s-lr_1p4em05"} <= set(
        named
    )  # once both 1em05: one point replaced the other
    assert named["s-lr_1p4em05"] == {"lr": 1.4e-5}
    assert len(named) == 4  # the base and three distinct points
    with pytest.raises(
        ValueError, match=r"config key sweeps.s: points .* both get the variant name 's-scale_0p5'"
    ):
        sweep.points("s", {"impl": "dfa", "options": {"scale": [0.5, "0.5"]}})


@pytest.mark.parametrize(
    "change, key",
    [
        ({"test_acc": float("nan")}, "test_acc"),
        ({"test_acc": float("inf")}, "test_acc"),
        ({"test_acc": 150.0}, "test_acc"),
        ({"test_acc": True}, "test_acc"),
        ({"test_acc": "91"}, "test_acc"),
        ({"best_test_acc": -1.0}, "best_test_acc"),
        ({"status": "OK"}, "status"),
        ({"status": "running"}, "status"),
        ({"seed": -1}, "seed"),
        ({"seed": "0"}, "seed"),
        ({"epochs": 2.5}, "epochs"),
        ({"trainable_params": -5}, "trainable_params"),
        ({"train_time_s": "fast"}, "train_time_s"),
        ({"history": {"epoch": 1}}, "history"),
        ({"memory": [1, 2]}, "memory"),
        ({"arch": 3}, "arch"),
        ({"test_acc": None}, "test_acc"),
    ],
)
def test_a_record_with_impossible_values_is_refused_naming_file_and_key(
    change, key, tmp_path, capsys
):
    import json

    from synthetic_records import write_record

    record = write_record(tmp_path / "runs", "mlp", "bp", 0, 90.0) | change
    path = tmp_path / "runs" / "toy" / "mlp" / "bp" / "seed0" / "record.json"
    path.write_text(json.dumps(record))
    assert (
        main(
            [
                "aggregate",
                "--runs-dir",
                str(tmp_path / "runs"),
                "--dataset",
                "toy",
                "--out-dir",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert str(path) in err and f"for {key!r}; accepted:" in err
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_exit_with_one_line_and_leave_a_resumable_run(sig, code, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "bench",
        *TRAIN,
        "--out",
        str(out),
        "--set",
        "epochs=200",
        "--set",
        "device=cpu",
        "--set",
        "batch_size=256",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(getattr(signal, sig))
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-2000:]
    assert "Traceback" not in err and "stopped; files on disk are complete" in err.splitlines()[-1]
    assert not [
        p for p in out.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")
    ]  # no temps, no lock
    assert not (out / "record.json").exists()


def test_a_record_path_that_is_a_folder_gives_one_line_naming_it(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "record.json").mkdir(parents=True)
    assert main([*TRAIN, "--out", str(out), "--set", "epochs=1", "--set", "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "record.json" in err and "Traceback" not in err


def test_an_accuracy_of_zero_prints_as_zero_not_nan(tmp_path, caplog, monkeypatch):
    import logging

    from synthetic_records import typed_record

    import bench.run.train

    caplog.set_level(logging.INFO)
    zero = typed_record(test_acc=0.0)
    monkeypatch.setattr(bench.run.train, "run", lambda spec, out, data_dir: zero)
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 0
    assert "test accuracy 0.00%" in caplog.text and "nan" not in caplog.text


def _checkpointed_run(tmp_path):
    """A 1-epoch dfa run on digits planned for 2 epochs, interrupted after epoch 1: its checkpoint and spec."""
    import torch

    from bench.config.spec import make_spec

    spec = make_spec(
        "digits",
        "mlp3",
        "dfa",
        0,
        {"epochs": 2, "batch_size": 128, "probe_size": 32, "device": "cpu"},
        load_config(check_data=False).variants,
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_killed_in_epoch_2(monkeypatch, spec, tmp_path)
    return spec, torch.load(tmp_path / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda c: c.pop("state"), "no state"),
        (lambda c: c.pop("method_generator"), "no method_generator"),
        (lambda c: c["state"].pop("history"), "training state lacks history"),
        (lambda c: c["state"].update(epoch=7), "epoch 7 outside the plan of 2"),
        (lambda c: c["state"].update(epoch=-1), "epoch -1 outside the plan"),
        (lambda c: c["state"].update(epoch="1"), "epoch '1' outside the plan"),
        (lambda c: c["state"]["history"].append({}), "a history of 2 epochs at epoch 1"),
        (
            lambda c: c["model"].update({"head.weight": c["model"]["head.weight"].repeat(2, 1)}),
            "tensor head.weight",
        ),
        (lambda c: c["model"].pop("feedback.dfa"), "model tensors differ: feedback.dfa"),
        (lambda c: c["model"].update(extra=c["model"]["head.bias"]), "model tensors differ: extra"),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_run_is_discarded_with_a_warning(
    damage, why, tmp_path, caplog
):
    import io

    import torch

    import bench.run.train as trainer
    from bench.files import write_atomic

    spec, checkpoint = _checkpointed_run(tmp_path)
    damage(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomic(tmp_path / "checkpoint.pt", buffer.getvalue())
    record = trainer.run(
        spec, tmp_path
    ).to_json()  # starts over instead of getting stuck or writing an inconsistent record
    assert "does not fit this run" in caplog.text and why in caplog.text
    assert record["status"] == "ok" and [h["epoch"] for h in record["history"]] == [1, 2]


def _planned_trains(done) -> int:
    counts = {
        l.split()[0]: int(l.split()[1])
        for l in done.stdout.splitlines()
        if len(l.split()) == 2 and l.split()[1].isdigit()
    }
    return counts.get("train", 0)


def test_an_edited_rule_reruns_its_runs_and_another_configfile_reruns_nothing(tmp_path):
    import os
    import shutil

    methods = tmp_path / "methods"
    shutil.copytree(REPO / "methods", methods, ignore=shutil.ignore_patterns("__pycache__"))
    env = os.environ | {"BENCH_METHODS_DIR": str(methods)}
    grid_args = [
        "--config",
        "default_datasets=[digits]",
        "seeds=[0]",
        "datasets={digits: {archs: [mlp3], methods: [bp, dfa], recipe: {epochs: 1}}}",
    ]

    def snake(*args):
        return _snakemake(tmp_path, *args, env=env)

    done = snake("--cores", "2", *grid_args)
    assert done.returncode == 0, done.stderr[-2000:]
    extra = tmp_path / "extra.yaml"
    extra.write_text("variants:\n  dfa_x2: {impl: dfa, scale: 2.0}\n")
    plan = snake("-n", "--quiet", "rules", "--configfile", str(extra), *grid_args)
    assert plan.returncode == 0 and _planned_trains(plan) == 0, (
        plan.stdout + plan.stderr
    )  # nothing out of date
    with open(methods / "dfa.py", "a") as f:
        f.write("# an edit\n")
    plan = snake("-n", *grid_args)
    assert plan.returncode == 0 and "runs/digits/mlp3/dfa/seed0/record.json" in plan.stdout
    assert "runs/digits/mlp3/bp/seed0/record.json" not in plan.stdout  # bp's file did not change


def test_a_checkpoint_of_an_edited_rule_file_is_not_resumed_and_the_record_names_the_file(
    tmp_path, monkeypatch, caplog
):
    import shutil

    import bench.run.train as trainer
    from bench.config.spec import make_spec

    methods = tmp_path / "methods"
    shutil.copytree(REPO / "methods", methods, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(
        methods / "template_rule.py", methods / "my_rule.py"
    )  # new, untracked: git cannot see it
    monkeypatch.setenv("BENCH_METHODS_DIR", str(methods))
    spec = make_spec(
        "digits",
        "mlp3",
        "my_rule",
        0,
        {"epochs": 2, "batch_size": 128, "probe_size": 32, "device": "cpu"},
        {},
    )
    run_killed_in_epoch_2(monkeypatch, spec, tmp_path / "run")
    with open(methods / "my_rule.py", "a") as f:
        f.write("# edited between the kill and the rerun\n")
    import bench.method

    bench.method._discover.cache_clear()  # a new process would import the edited file
    record = trainer.run(spec, tmp_path / "run").to_json()
    assert "written by another version of my_rule.py" in caplog.text
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert (
        record["provenance"]["method_sha256"]
        == __import__("hashlib").sha256((methods / "my_rule.py").read_bytes()).hexdigest()
    )


@pytest.mark.parametrize(
    "mode, array",
    [
        ("I;16", lambda np: np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000),  # a 16-bit PNG
        ("I", lambda np: np.arange(64, dtype=np.int32).reshape(8, 8) * 70000),  # 32-bit integer
        ("F", lambda np: np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)),  # float (TIFF)
    ],
)
def test_an_image_of_more_than_8_bits_is_refused_naming_the_file_never_clipped(
    mode, array, tmp_path, capsys
):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = data / "tiny" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(folder / f"{i}.png")
    bad = data / "tiny" / "train" / "a" / ("deep.png" if mode == "I;16" else "deep.tif")
    Image.fromarray(array(np)).save(bad)
    with Image.open(bad) as check:
        assert check.mode == mode
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "tiny",
                "--data-dir",
                str(data),
                "--arch",
                "mlp3",
                "--method",
                "bp",
                "--seed",
                "0",
                "--out",
                str(out),
                "--set",
                "epochs=1",
                "--set",
                "batch_size=2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert str(bad) in err and "8-bit" in err and not out.exists()


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch):
    from PIL import Image

    from bench.data.folder import image_size_of, open_rgb

    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    for limit in (
        1000,
        3000,
    ):  # past twice the limit PIL raises; past the limit it warns: both refused
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        for read in (open_rgb, image_size_of):
            with pytest.raises(ValueError, match=f"cannot decode image {path}"):
                read(str(path))


@pytest.mark.parametrize(
    "data, labels, what",
    [
        (lambda np: np.full((2, 3072), 0.7, dtype=np.float32), [0, 1], "holds float32"),
        (lambda np: np.full((2, 3072), 300, dtype=np.int64), [0, 1], "holds int64"),
        (lambda np: np.zeros((2, 3072), dtype=np.uint8), [0.0, 1.5], "holds float64"),
    ],
)
def test_a_cifar_batch_of_the_wrong_dtype_is_refused_never_cast(data, labels, what, tmp_path):
    import pickle

    import numpy as np

    from bench.data.cifar import read_batches

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({"data": data(np), "labels": labels}, f, protocol=2)
    with pytest.raises(ValueError, match=f"{path}.*{what}"):
        read_batches([path], "labels", 10)


def test_gpu_lock_files_never_follow_a_planted_link_and_the_folder_must_be_private(tmp_path):
    import os

    from bench.run.devices import claim_slot, lock_dir

    assert str(os.getuid()) in str(lock_dir())  # a per-user folder, not one predictable shared name
    folder = tmp_path / "locks"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, folder / "gpu0-slot0.lock")  # planted by someone else
    with pytest.raises(ValueError, match="gpu0-slot0.lock .*must be a plain file"):
        claim_slot(1, 1, folder=folder)
    assert victim.read_text() == "keep"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ValueError, match="not a private folder"):
        claim_slot(1, 1, folder=shared)
    linked = tmp_path / "linked"
    os.symlink(folder, linked)
    with pytest.raises(ValueError, match="not a folder"):
        claim_slot(1, 1, folder=linked)
    gpu, handle = claim_slot(1, 1, folder=tmp_path / "fresh")
    assert gpu == 0 and oct((tmp_path / "fresh").stat().st_mode & 0o777) == "0o700"
    handle.close()


@pytest.mark.parametrize("method", ["bp", "dfa", "ssa"])
def test_compile_on_trains_two_epochs_on_cpu_with_the_alignment_probes(method, tmp_path):

    from bench.config.spec import make_spec
    from bench.run.train import run

    spec = make_spec(
        "digits",
        "mlp3",
        method,
        0,
        {"epochs": 2, "batch_size": 128, "probe_size": 64, "device": "cpu", "compile": "on"},
        load_config(check_data=False).variants,
    )
    record = run(spec, tmp_path).to_json()
    assert record["status"] == "ok" and record["epochs"] == 2 and record["test_acc"] > 30
    assert (
        "compile" in record["provenance"]["speed"]
    )  # compiled, or eager after a warning: either way recorded
    for entry in record["history"]:
        assert entry["update_alignment"] and all(
            -1 <= v <= 1 for v in entry["update_alignment"].values()
        )
        # undefined (a block without a signal) is null, as in record.json
        assert all(a is None or -1 <= a <= 1 for a in entry["alignment"])


def test_a_cpu_record_names_its_threads_and_a_peak_of_the_training_alone(tmp_path):
    import torch

    from bench.config.spec import make_spec
    from bench.run.train import run

    record = run(
        make_spec(
            "digits",
            "mlp3",
            "bp",
            0,
            {"epochs": 1, "batch_size": 128, "probe_size": 32, "device": "cpu"},
            load_config(check_data=False).variants,
        ),
        tmp_path,
    ).to_json()
    assert record["provenance"]["threads"] == torch.get_num_threads()
    memory = record["memory"]
    assert memory["peak_kind"] == "cpu_rss_growth_in_training"
    # what the steps allocated: far below the process's resident set (hundreds of MB of libraries)
    import resource

    assert 0 <= memory["peak"] < resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2


def _tiny_folder(data, classes):
    from PIL import Image

    for split, count in (("train", 4), ("test", 2)):
        for k, label in enumerate(classes):
            folder = data / "tiny" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (40 * k, 10 * i, 0)).save(folder / f"{i}.png")


def test_non_ascii_class_folders_train_and_keep_their_names(tmp_path):
    from bench.data import load

    _tiny_folder(tmp_path / "data", ["café", "猫", "ёж"])
    data = load("tiny", "cpu", tmp_path / "data")
    assert data.classes == sorted(["café", "猫", "ёж"]) and len(data.train_y) == 12
    assert (
        main(
            [
                "train",
                "--dataset",
                "tiny",
                "--data-dir",
                str(tmp_path / "data"),
                "--arch",
                "mlp3",
                "--method",
                "dfa",
                "--seed",
                "0",
                "--out",
                str(tmp_path / "run"),
                "--set",
                "epochs=1",
                "--set",
                "batch_size=4",
                "--set",
                "probe_size=4",
            ]
        )
        == 0
    )


def test_a_full_disk_gives_one_line_naming_the_file_and_leaves_no_temp(
    tmp_path, monkeypatch, capsys
):
    import errno
    import os

    import bench.files

    real = os.replace

    def full(src, dst):  # the disk fills up as the record lands
        if str(dst).endswith("record.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(bench.files.os, "replace", full)
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--set", "epochs=1", "--set", "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "record.json" in err and "Traceback" not in err
    assert not (out / "record.json").exists() and not list(out.glob(".*.tmp"))
