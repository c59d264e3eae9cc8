"""The optional TensorBoard log (recipe key tensorboard): off by default, and when on, each epoch's
history scalars in <run folder>/tensorboard/, equal to the record's."""

import pytest

import bench.run.train as trainer
from bench.config.files import load_config
from bench.config.spec import make_spec
from bench.run.tensorboard import scalars


def _spec(**recipe):
    return make_spec(
        "digits",
        "mlp3",
        "fa",
        0,
        {
            "epochs": 2,
            "batch_size": 64,
            "probe_size": 32,
            "device": "cpu",
            "attack_subset": 0,
            **recipe,
        },
        load_config(check_data=False).variants,
    )


def test_scalars_flatten_a_history_entry_and_drop_what_is_no_finite_number():
    entry = {
        "epoch": 3,
        "test_acc": 50.0,
        "alignment": [0.5, float("nan")],
        "terms": {"ce": 1.0},
        "weight_alignment": None,
        "flag": True,
        "name": "x",
    }
    assert scalars(entry) == {"test_acc": 50.0, "alignment/0": 0.5, "terms/ce": 1.0}


def test_a_run_with_tensorboard_on_logs_every_epoch_and_off_writes_nothing(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = trainer.run(_spec(tensorboard=True), tmp_path / "on").to_json()
    events = EventAccumulator(str(tmp_path / "on" / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("test_acc")]
    assert logged == [(h["epoch"], pytest.approx(h["test_acc"])) for h in record["history"]]
    assert "weight_alignment/angle_deg/head" in events.Tags()["scalars"]
    trainer.run(_spec(), tmp_path / "off")
    assert not (tmp_path / "off" / "tensorboard").exists()
