"""The trainer: records are complete and reproducible, checkpoints resume exactly, divergence is a result."""

import copy
import json

import pytest
import torch

import bench.run.checkpoint
from bench.config.files import load_config
from bench.config.spec import make_spec
from bench.run.optim import lr_at, make_optimizer
from bench.run.train import run
from tests.conftest import run_killed_in_epoch_2

TIMING_KEYS = {
    "train_time_s",
    "images_per_s",
    "eval_time_s",
    "time_s",
    "started",
    "peak",
    "peak_memory",
}  # measurements, not results


def spec(method="ssa", seed=0, **overrides):
    recipe = {"epochs": 2, "batch_size": 128, "probe_size": 64, "device": "cpu"}
    variants = load_config(check_data=False).variants
    return make_spec("digits", "mlp3", method, seed, {**recipe, **overrides}, variants)


def strip_timings(obj):
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def ssa_record(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssa")
    return run(spec(rank_epochs=[1]), out).to_json(), out


def test_record_holds_every_field_of_the_design(ssa_record):
    record, out = ssa_record
    assert json.loads((out / "record.json").read_text()) == json.loads(json.dumps(record))
    for key in [
        "schema_version",
        "dataset",
        "arch",
        "method",
        "impl",
        "seed",
        "options",
        "status",
        "epochs",
        "test_acc",
        "test_top5",
        "best_test_acc",
        "train_time_s",
        "images_per_s",
        "trainable_params",
        "feedback_params",
        "inference_params",
        "memory",
        "history",
        "provenance",
    ]:
        assert key in record, key
    assert record["schema_version"] == 1 and record["status"] == "ok" and record["epochs"] == 2
    assert set(record["memory"]) >= {
        "params",
        "grads",
        "optimizer_state",
        "saved_activations",
        "peak",
        "device",
    }
    assert record["memory"]["saved_activations"] > 0 and record["memory"]["optimizer_state"] > 0
    assert set(record["provenance"]) >= {
        "git_commit",
        "git_dirty",
        "python",
        "torch",
        "device_name",
        "platform",
    }
    # the speed options as resolved on this CPU: NHWC (channels_last auto), no bf16, eager
    assert record["provenance"]["speed"] == {
        "channels_last": True,
        "autocast": False,
        "cudnn_benchmark": False,
        "compile": False,
    }
    for epoch in record["history"]:
        assert len(epoch["alignment"]) == 3 and all(-1 <= c <= 1 for c in epoch["alignment"])
        assert set(epoch["ranks"]) == {"blocks.0.1", "blocks.1.0", "blocks.2.0"}
        assert {"align", "orth"} <= set(epoch["terms"])
    # rank reduction after epoch 1 shrank the trainable parameters
    assert record["trainable_params"] < record["trainable_params_initial"]
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,train_acc,test_acc") and len(lines) == 3


def test_same_seed_gives_the_same_record_apart_from_timings(ssa_record, tmp_path):
    record, _ = ssa_record
    again = run(spec(rank_epochs=[1]), tmp_path).to_json()
    assert strip_timings(again) == strip_timings(record)
    other = run(spec(rank_epochs=[1], seed=1), tmp_path / "seed1").to_json()
    assert other["history"][0]["train_loss"] != record["history"][0]["train_loss"]


def test_interrupted_run_resumes_from_its_checkpoint_to_the_same_record(
    ssa_record, tmp_path, monkeypatch
):
    record, _ = ssa_record
    run_killed_in_epoch_2(monkeypatch, spec(rank_epochs=[1]), tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / "record.json").exists()
    resumed = run(spec(rank_epochs=[1]), tmp_path).to_json()
    assert strip_timings(resumed) == strip_timings(record)


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path, caplog):
    run(spec("dfa", epochs=1), tmp_path)
    record = run(spec("dfa", epochs=1, lr=5e-4), tmp_path).to_json()
    assert "belongs to another configuration" in caplog.text
    assert record["recipe"]["lr"] == 5e-4 and len(record["history"]) == 1


def test_checkpoint_loads_with_weights_only(tmp_path):
    run(spec("dfa", epochs=1), tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert "feedback.dfa" in checkpoint["model"]


def test_nan_loss_ends_the_run_as_diverged(tmp_path):
    record = run(spec("bp", epochs=3, optimizer="sgd", lr=1e12, momentum=0.0), tmp_path).to_json()
    assert record["status"] == "diverged"
    assert record["epochs"] < 3
    assert json.loads((tmp_path / "record.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("method", ["bp", "dfa", "svd_bp", "ssa"])
def test_every_method_reports_saved_activation_bytes(method, tmp_path):
    record = run(spec(method, epochs=1), tmp_path).to_json()
    assert record["memory"]["saved_activations"] > 0
    assert record["test_acc"] > 20  # 10 classes: clearly above chance after one epoch


def test_lr_schedules():
    recipe = {"lr": 1.0, "epochs": 4, "schedule": "cosine", "step_size": 2, "gamma": 0.5}
    assert [lr_at(recipe, e) for e in range(4)] == pytest.approx(
        [1.0, 0.853553, 0.5, 0.146447], abs=1e-6
    )
    step = {**recipe, "schedule": "step"}
    assert [lr_at(step, e) for e in range(4)] == [1.0, 1.0, 0.5, 0.5]
    assert lr_at({**recipe, "schedule": "constant"}, 3) == 1.0


@pytest.mark.parametrize(
    "optimizer,cls",
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
def test_optimizer_by_name(optimizer, cls):
    s = spec(optimizer=optimizer)
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], s.recipe)
    assert isinstance(opt, cls) and opt.defaults["lr"] == s.recipe["lr"]


def test_variant_resolves_to_its_method_and_options():
    s = spec("ssa-no_align")
    assert s.impl == "ssa" and s.options["lambda_align"] == 0.0 and s.options["lambda_orth"] == 0.1
    assert copy.deepcopy(s).config_hash() == s.config_hash() != spec("ssa").config_hash()


def test_alignment_of_bp_with_itself_is_one_even_for_tiny_gradients():
    from bench.measure.network import _mean_cosine

    tiny = torch.tensor([[1e-12, 2e-12], [3.0, 4.0], [0.0, 0.0]])
    assert _mean_cosine(tiny, tiny) == pytest.approx(1.0, abs=1e-12)
    assert _mean_cosine(tiny, -tiny) == pytest.approx(-1.0, abs=1e-12)


def test_corrupt_checkpoint_is_discarded_with_a_warning(tmp_path, caplog):
    run(spec("dfa", epochs=1), tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    record = run(spec("dfa", epochs=1), tmp_path).to_json()
    assert "unreadable" in caplog.text and record["status"] == "ok" and len(record["history"]) == 1


def test_probe_batch_covers_every_class():
    from bench.data import load

    x, y = load("mnist5k").probe_batch(256)
    assert x.shape == (256, 1, 28, 28) and len(y.unique()) == 10


@pytest.mark.parametrize("feedback", ["spatial_map", "broadcast", "full"])
def test_ssa_scale_scales_its_signals(batch, feedback):
    from tests.conftest import make

    x, y = batch
    signals = []
    for scale in (1.0, 3.0):
        model, rule = make("smallconv", "ssa", scale=scale, feedback=feedback)
        outputs, logits = model.forward_blocks(x, cut=True)
        signals.append(rule.block_signals(model, outputs, logits, y))
    assert all(torch.allclose(3 * a, b) for a, b in zip(*signals))


def test_checkpoint_of_another_code_version_is_not_resumed(tmp_path, caplog, monkeypatch):
    run_killed_in_epoch_2(monkeypatch, spec("dfa"), tmp_path)
    monkeypatch.setattr(bench.run.checkpoint, "code_version", lambda: "another-commit")
    record = run(spec("dfa"), tmp_path).to_json()
    assert (
        "was written by code version" in caplog.text and "starting dfa from scratch" in caplog.text
    )
    assert [h["epoch"] for h in record["history"]] == [1, 2]


def test_counting_saved_bytes_leaves_no_graph_alive_across_a_rank_reduction(tmp_path):
    # The counted step's saved tensors once formed reference cycles with their grad_fn; the stale graph
    # then kept pre-reduction parameter shapes in autograd and the step after the reduction failed.
    record = run(
        make_spec(
            "digits",
            "smallconv",
            "ssa",
            0,
            {
                "epochs": 2,
                "batch_size": 128,
                "probe_size": 64,
                "device": "cpu",
                "signal_at": "preactivation",
                "rank_epochs": [1],
                "rank_eps": 0.2,
            },
            load_config(check_data=False).variants,
        ),
        tmp_path,
    ).to_json()
    assert record["status"] == "ok" and record["epochs"] == 2
    assert record["trainable_params"] < record["trainable_params_initial"]  # the reduction happened


def test_multistep_schedule_decays_after_each_milestone():
    recipe = {"lr": 1.0, "schedule": "multistep", "milestones": [2, 3], "gamma": 0.1, "epochs": 5}
    assert [lr_at(recipe, e) for e in range(5)] == pytest.approx([1.0, 1.0, 0.1, 0.01, 0.01])
    # the same rates as torch's MultiStepLR stepped once an epoch
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 3], gamma=0.1)
    torch_rates = []
    for _ in range(5):
        torch_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert [lr_at(recipe, e) for e in range(5)] == pytest.approx(torch_rates)


def test_validation_split_holds_images_out_and_selects_the_best_validation_epoch(tmp_path):
    from bench.data import load
    from bench.data.tensors import hold_out

    data = load("digits")
    train, validation = hold_out(data, 300)
    assert len(train.train_y) == len(data.train_y) - 300 and len(validation.test_y) == 300
    seen = {tuple(x.flatten().tolist()) for x in train.train_x}
    assert not any(
        tuple(x.flatten().tolist()) in seen for x in validation.test_x[:50]
    )  # held out, not copied
    assert torch.equal(
        validation.test_x, hold_out(data, 300)[1].test_x
    )  # the same images for every run
    record = run(spec("bp", epochs=3, val_split=300), tmp_path).to_json()
    assert all(0 <= h["val_acc"] <= 100 for h in record["history"])
    assert record["selection"] == "best_val"
    best = max(record["history"], key=lambda h: (h["val_acc"], -h["epoch"]))
    assert (
        record["selected_epoch"] == best["epoch"]
        and record["selected_test_acc"] == best["test_acc"]
    )
    plain = run(spec("bp", epochs=1), tmp_path / "plain").to_json()
    assert plain["selection"] == "last" and plain["selected_test_acc"] == plain["test_acc"]
    assert plain["history"][0]["val_acc"] is None and plain["best_val_acc"] is None


@pytest.mark.parametrize("n", [-1, 10**6])
def test_validation_split_larger_than_the_training_set_is_refused(n, tmp_path):
    with pytest.raises(ValueError, match="val_split"):
        run(spec("bp", epochs=1, val_split=n), tmp_path)
    assert not (tmp_path / "record.json").exists()
