"""Damaged checkpoints and unfit run folders (issue 26, classes 2 and 9): a checkpoint with any part that
does not fit the run is discarded with a warning and the rerun's record equals the uninterrupted one;
learned feedback on `model.feedback` resumes; a run folder that cannot take the run's files is refused
before training, naming the file; a record a run replaces is named."""

import errno
import io
import logging
import shutil
from pathlib import Path

import pytest
import torch

import bench.method
import bench.run.train as trainer
from bench.cli import main
from bench.config.spec import make_spec
from bench.files import write_atomic
from tests.conftest import run_killed_in_epoch_2
from tests.test_reliability import strip_timings

RULES = Path(__file__).resolve().parent / "rules"
RECIPE = {"epochs": 2, "batch_size": 128, "probe_size": 32, "attack_subset": 0, "device": "cpu"}
TRAIN = [
    *("train", "--dataset", "digits", "--arch", "mlp3", "--method", "dfa"),
    *("--set", "device=cpu", "--set", "attack_subset=0"),
]


def _spec(method: str = "dfa", **overrides):
    return make_spec("digits", "mlp3", method, 0, RECIPE | overrides, {})


def _result(record) -> dict:
    """What must not depend on the interruption: the record without timings and provenance."""
    data = strip_timings(record.to_json())
    data.pop("provenance")
    return data


@pytest.fixture(scope="module")
def dfa_run(tmp_path_factory):
    """(spec, result, run folder) of a finished 1-epoch dfa run on digits (Adam), its checkpoint kept."""
    spec, out = _spec(epochs=1), tmp_path_factory.mktemp("dfa") / "run"
    return spec, _result(trainer.run(spec, out)), out


def _damaged_rerun(runs, damage, tmp_path, caplog):
    """Rerun a copy of a run's folder after `damage(checkpoint)`: its record, and the discard warnings."""
    spec, _, folder = runs
    out = tmp_path / "run"
    shutil.copytree(folder, out)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    damage(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomic(out / "checkpoint.pt", buffer.getvalue())
    caplog.clear()
    caplog.set_level(logging.INFO, "bench.run.train")
    record = trainer.run(spec, out)
    return record, [r.getMessage() for r in caplog.records if "does not fit this run" in r.message]


def _first_state(checkpoint):
    """The optimizer state of the checkpoint's first parameter."""
    return next(iter(checkpoint["optimizer"]["state"].values()))


def _entry(checkpoint):
    return checkpoint["state"]["history"][0]


@pytest.mark.parametrize(
    "damage, why",
    [
        # a tensor smaller than the model's, where no rank shrinks (dfa has no SVD layer)
        (lambda c: c["model"].update({"head.bias": c["model"]["head.bias"][:5]}), "head.bias"),
        (lambda c: c["model"].update({"feedback.dfa": c["model"]["feedback.dfa"][:, :3]}), "dfa"),
        (lambda c: c["model"].update({"head.bias": c["model"]["head.bias"].double()}), "float64"),
        # the optimizer's state
        (lambda c: _first_state(c).update(exp_avg=_first_state(c)["exp_avg"][:1]), "'exp_avg'"),
        (lambda c: _first_state(c).pop("exp_avg_sq"), "a step keeps"),
        (lambda c: _first_state(c).update(step=torch.tensor(-3.0)), "'step'"),
        (lambda c: c["optimizer"]["param_groups"][0].update(betas=(0.5, 0.5)), "settings"),
        (lambda c: c["optimizer"]["param_groups"][0].update(lr="fast"), "learning rate 'fast'"),
        (lambda c: c["optimizer"]["state"].update({99: {}}), "does not have"),
        (lambda c: c["optimizer"].update(param_groups=[]), "parameter groups"),
        # the generators' states
        (lambda c: c.update(shuffle=torch.zeros(3, dtype=torch.uint8)), "shuffle of shape (3,)"),
        (lambda c: c.update(method_generator=c["method_generator"].float()), "method_generator"),
        (lambda c: c.update(shuffle=[1, 2]), "ByteTensor of 5056 bytes"),
        # the rule's own state (dfa keeps none)
        (lambda c: c.update(method_state={"steps": 3}), "method_state holds ['steps']"),
        (lambda c: c.update(method_state=[1]), "method_state holds list"),
        # the status
        (
            lambda c: c["state"].update(status="diverged"),
            "status 'diverged' with (training loss, test accuracy)",
        ),
        (lambda c: c["state"].update(status="maybe"), "status 'maybe'; accepted: ok, diverged"),
        (
            lambda c: _entry(c).update(train_loss=float("nan")),
            "status 'ok' with (training loss, test accuracy)",
        ),
        (
            lambda c: _entry(c).update(test_acc=float("nan")),
            "status 'ok' with (training loss, test accuracy)",
        ),
        # the history: numbering, entries the record refuses or cannot be built from
        (lambda c: _entry(c).update(epoch=5), "history entry 1 is numbered 5"),
        (lambda c: c["state"].update(history=["x"]), "history entry 1 is numbered None"),
        (lambda c: _entry(c).update(train_loss="low"), "train_loss of 'low'"),
        (lambda c: _entry(c).update(test_acc=150.0), "bad value 150.0 for 'test_acc'"),
        (lambda c: _entry(c).pop("train_time_s"), "train_time_s"),
        (lambda c: _entry(c).update(surprise=1), "surprise"),
        # epoch and history that disagree
        (lambda c: c["state"].update(history=[]), "a history of 0 epochs at epoch 1"),
        (lambda c: c["state"].update(epoch=0), "a history of 1 epochs at epoch 0"),
        # the provenance and the initial parameter count
        (lambda c: c["state"].update(provenance="git"), "provenance 'git'"),
        (lambda c: c["state"]["provenance"].update(threads="two"), "provenance.threads"),
        (lambda c: c["state"].update(trainable_params_initial=7), "trainable_params_initial 7"),
    ],
)
def test_a_damaged_checkpoint_is_discarded_and_the_rerun_equals_the_uninterrupted_run(
    damage, why, dfa_run, tmp_path, caplog
):
    record, warnings = _damaged_rerun(dfa_run, damage, tmp_path, caplog)
    assert len(warnings) == 1 and why in warnings[0], warnings or caplog.text
    assert _result(record) == dfa_run[1]


def test_an_undamaged_checkpoint_resumes_to_the_same_record(dfa_run, tmp_path, caplog):
    record, warnings = _damaged_rerun(dfa_run, lambda c: None, tmp_path, caplog)
    assert warnings == [] and "resuming dfa" in caplog.text
    assert _result(record) == dfa_run[1]


def test_a_failed_restore_leaves_nothing_of_the_checkpoint_in_the_run(dfa_run, tmp_path, caplog):
    # The model and optimizer load before the rule's state fails: the run must not keep them.
    record, warnings = _damaged_rerun(
        dfa_run, lambda c: c.update(method_state={"steps": 3}), tmp_path, caplog
    )
    assert warnings and record.history[0].epoch == 1
    assert _result(record) == dfa_run[1]


@pytest.fixture
def rules(monkeypatch):
    """Discovery from tests/rules (kp_head: learned feedback on model.feedback)."""
    monkeypatch.setenv("BENCH_METHODS_DIR", str(RULES))
    yield
    bench.method._discover.cache_clear()


def test_learned_feedback_on_model_feedback_resumes_to_the_uninterrupted_record(
    rules, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, "bench.run.train")
    spec = _spec("kp_head")
    whole = trainer.run(spec, tmp_path / "whole")
    assert whole.feedback_params == 10 * 512  # the head's B (10 x 512) on model.feedback: feedback
    run_killed_in_epoch_2(monkeypatch, spec, tmp_path / "killed")
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert (
        "feedback.kp_head_B" in saved["model"] and len(saved["optimizer"]["state"]) == 9
    )  # 8 network tensors, B
    caplog.clear()
    resumed = trainer.run(spec, tmp_path / "killed")
    assert "resuming kp_head" in caplog.text and "does not fit" not in caplog.text
    assert _result(resumed) == _result(whole)
    # and a learned feedback tensor of another shape is discarded, never loaded
    saved["model"]["feedback.kp_head_B"] = saved["model"]["feedback.kp_head_B"][:, :5]
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    write_atomic(tmp_path / "killed" / "checkpoint.pt", buffer.getvalue())
    caplog.clear()
    again = trainer.run(spec, tmp_path / "killed")
    assert "does not fit this run (tensor feedback.kp_head_B of shape (10, 5)" in caplog.text
    assert _result(again) == _result(whole)


SSA = {"rank_epochs": [1], "rank_eps": 0.05}  # the ranks shrink after epoch 1, before the kill


@pytest.fixture(scope="module")
def ssa_runs(tmp_path_factory):
    spec, root = _spec("ssa", **SSA), tmp_path_factory.mktemp("ssa")
    whole = _result(trainer.run(spec, root / "whole"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_killed_in_epoch_2(monkeypatch, spec, root / "killed")
    return spec, whole, root / "killed"  # killed in epoch 2: the checkpoint of epoch 1


def _shrunk_layer(checkpoint) -> str:
    """The name of an SVD layer whose rank the checkpoint holds shrunk."""
    model = checkpoint["model"]
    return next(
        n[:-2] for n in model if n.endswith(".s") and len(model[n]) < model[n[:-1] + "U"].shape[0]
    )


def test_a_shrunk_rank_resumes_to_the_uninterrupted_record(ssa_runs, tmp_path, caplog):
    saved = torch.load(ssa_runs[2] / "checkpoint.pt", weights_only=True)
    assert _shrunk_layer(saved)  # the test's premise: a rank did shrink before the kill
    record, warnings = _damaged_rerun(ssa_runs, lambda c: None, tmp_path, caplog)
    assert warnings == [] and "resuming ssa" in caplog.text
    assert _result(record) == ssa_runs[1]


def _shrink(checkpoint, names, k):
    for name in names:
        checkpoint["model"][name] = checkpoint["model"][name][..., :k].contiguous()


@pytest.mark.parametrize(
    "damage, why",
    [
        # U shrunk alone, not its layer's rank: no resize of the layer gives that shape
        (lambda c: _shrink(c, [_shrunk_layer(c) + ".U"], 2), ".U of shape"),
        # a rank the layer does not have (0), and one above the model's
        (
            lambda c: _shrink(c, [_shrunk_layer(c) + suffix for suffix in ".U .s .V".split()], 0),
            ".s",
        ),
        # ssa's feedback cut below its layer's rank: the rule fits it to the rank, not lower
        (lambda c: _shrink(c, [f"feedback.ssa_0_{n}" for n in ("BV", "beta", "BU")], 1), "ssa_0_"),
    ],
)
def test_a_tensor_smaller_than_its_rank_allows_is_discarded(
    damage, why, ssa_runs, tmp_path, caplog
):
    record, warnings = _damaged_rerun(ssa_runs, damage, tmp_path, caplog)
    assert len(warnings) == 1 and why in warnings[0], warnings or caplog.text
    assert _result(record) == ssa_runs[1]


# ---- the run folder (class 9): refused before training, naming the file ---------------------------


@pytest.mark.parametrize("name", ["checkpoint.pt", "record.json", "log.csv"])
def test_an_output_file_that_is_a_folder_is_refused_before_training(name, tmp_path, capsys):
    out = tmp_path / "run"
    (out / name).mkdir(parents=True)
    assert main([*TRAIN, "--out", str(out), "--set", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert f"{out / name} is a folder" in err and "Traceback" not in err and ".tmp" not in err
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing trained, nothing written


def test_a_write_that_fails_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    import bench.files

    def full(fd):  # the disk fills up while the checkpoint is written: no file name in the error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench.files.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        write_atomic(tmp_path / "checkpoint.pt", b"x")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(
        tmp_path / "checkpoint.pt"
    )
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_a_disk_too_full_for_a_checkpoint_is_refused_before_training(tmp_path, monkeypatch, capsys):
    import bench.run.restore

    monkeypatch.setattr(
        bench.run.restore.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 1000)
    )
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--set", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(out / "checkpoint.pt") in err
    assert not (out / "log.csv").exists()  # found before the first epoch


def test_out_through_a_dangling_link_is_named_not_file_exists(tmp_path, capsys):
    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    for out in (tmp_path / "runs", tmp_path / "runs" / "digits" / "seed0"):
        assert main([*TRAIN, "--out", str(out), "--set", "epochs=1"]) == 2
        err = capsys.readouterr().err
        assert (
            f"{tmp_path / 'runs'} is a symbolic link to {tmp_path / 'gone'}, which does not exist"
            in err
        )
        assert "File exists" not in err and not (tmp_path / "gone").exists()


def test_training_into_a_finished_runs_folder_says_what_it_replaces(tmp_path, caplog):
    out = tmp_path / "run"
    spec = _spec(epochs=1)
    first = _result(trainer.run(spec, out))
    caplog.clear()
    assert (
        _result(trainer.run(spec, out)) == first
    )  # the same spec: resumed to the identical record
    assert (
        f"{out / 'record.json'} is this run's finished record; its checkpoint resumes"
        in caplog.text
    )
    (out / "checkpoint.pt").unlink()
    caplog.clear()
    assert _result(trainer.run(spec, out)) == first
    assert "is a record of this run, but no checkpoint resumes it" in caplog.text
    caplog.clear()
    other = trainer.run(_spec(epochs=1, lr=0.01), out)
    assert "belongs to another configuration" in caplog.text
    assert (
        f"{out / 'record.json'} holds the record of another run (digits/mlp3/dfa seed 0"
        in caplog.text
    )
    assert other.recipe["lr"] == 0.01
    (out / "record.json").write_text("{}")
    caplog.clear()
    trainer.run(_spec(epochs=1, lr=0.01), out)
    assert "record.json is replaced by this run's record (it is no readable record" in caplog.text
