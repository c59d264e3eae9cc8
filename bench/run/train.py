"""The trainer: one run from spec to record (data, optimizer, schedule, eval, checkpoints, measurement)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench import data as datasets
from bench import distributed
from bench.config.spec import RunSpec
from bench.data.tensors import hold_out
from bench.files import check_run_folder, folder_lock, write_json
from bench.measure import declare
from bench.measure import network as measure
from bench.measure.end_of_run import end_of_run, require_packages
from bench.measure.locality import check_blocks
from bench.measure.weight_alignment import weight_alignment
from bench.method import call_hook, get_method
from bench.models import BlockNet, build_for
from bench.record import Record
from bench.run import layer_options, stop
from bench.run.blockwise import step_function
from bench.run.checkpoint import RUN_FILES, read_checkpoint, save_checkpoint
from bench.run.determinism import determinism
from bench.run.determinism import state as determinism_state
from bench.run.epoch import evaluate, train_epoch
from bench.run.optim import lr_at, make_optimizer, slice_optimizer_state, steps_per_epoch
from bench.run.outputs import make_record, write_log_csv
from bench.run.provenance import provenance
from bench.run.restore import ready_folder, resumed
from bench.run.speed import Speed, resolve_device
from bench.run.tensorboard import EpochLog

log = logging.getLogger("bench.run.train")


def derive_seed(seed: int, purpose: str) -> int:
    """An independent seed per purpose, so model init, feedback and shuffling never share a stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little")


def setup(spec: RunSpec, data_dir: Path | None):
    """Device, data on the device, its validation split (None without `val_split`), the prepared model
    (init and feedback seeded from the run seed), the method."""
    device = resolve_device(spec.recipe["device"])
    require_packages(spec.recipe)  # a measure that cannot run fails now, not after training
    data = datasets.load(
        spec.dataset, device, data_dir, datasets.DataOptions.from_recipe(spec.recipe)
    )
    validation = None
    if spec.recipe["val_split"]:
        if not isinstance(data, datasets.TensorData):
            raise ValueError(
                f"'val_split' needs a dataset held on the device; {spec.dataset} streams "
                "(use its own validation folder as the test split instead)"
            )
        data, validation = hold_out(data, spec.recipe["val_split"])
    if spec.recipe["keep_last_batch"] and not isinstance(data, datasets.TensorData):
        raise ValueError(
            f"'keep_last_batch' needs a dataset held on the device; {spec.dataset} streams "
            "its full batches only"
        )
    if spec.recipe[
        "norm_mean"
    ]:  # constants instead of the training split's statistics (validation too)
        for part in (data, validation) if validation is not None else (data,):
            datasets.set_normalisation(part, spec.recipe["norm_mean"], spec.recipe["norm_std"])
    if spec.recipe["batch_size"] > len(data.train_y):
        raise ValueError(
            f"bad value {spec.recipe['batch_size']} for 'batch_size'; accepted: at most the "
            f"{len(data.train_y)} training images of {spec.dataset}"
        )
    return (device, data, validation, *build(spec, data, device))


def build(spec: RunSpec, data, device: torch.device) -> tuple[BlockNet, object]:
    """The run's model on `device`, prepared by its rule (init and feedback seeded from the run seed), and
    the rule: the same objects each time, so a run whose checkpoint fails to restore starts from new ones."""
    torch.manual_seed(derive_seed(spec.seed, "init"))
    model = build_for(spec.recipe, spec.arch, data.in_shape, data.num_classes)
    # the network's own layers, before the rule adds or swaps any: what the layer options reach
    layers = layer_options.network_layers(model)
    method = get_method(spec.impl)(**spec.options)
    check_blocks(method, model)  # a rule that learns at block outputs needs the network's stages
    feedback = torch.Generator().manual_seed(derive_seed(spec.seed, "feedback"))
    model = call_hook(method.prepare, model, data.num_classes, feedback, in_shape=data.in_shape)
    # A stochastic rule's draws (fwdgrad's directions, brsf's magnitudes) on the device, per run seed.
    method.generator = torch.Generator(device).manual_seed(derive_seed(spec.seed, "method"))
    layer_options.apply(model, spec.recipe, layers)  # BioTorch's constrain_weights and grad_clip
    return Speed.from_recipe(spec.recipe, device).prepare(model.to(device)), method


@dataclass
class Training:
    """A run in progress: what each epoch needs, built once by `_run` (resumed from a checkpoint or fresh)."""

    spec: RunSpec
    device: torch.device
    data: object
    validation: object  # its held-out split (val_split), or None
    model: BlockNet
    method: object
    speed: Speed
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator  # the training order's stream
    probe: tuple  # the fixed batch the alignment measures use


def run(spec: RunSpec, out: Path, data_dir: Path | None = None) -> Record:
    """Train one run, checkpointing each epoch (resuming from `out`), and write out/record.json."""
    out = Path(out)
    main = distributed.is_main()  # under torchrun only rank 0 writes; the others train alongside
    if main:  # a folder that cannot take the run's files fails now, not after an epoch of training
        check_run_folder(out, RUN_FILES)
    with determinism(
        spec.recipe["deterministic"]
    ):  # first: cuBLAS reads its setting when CUDA starts
        device, data, validation, model, method = setup(
            spec, data_dir
        )  # bad data fails here, before anything is written
        if main:
            out.mkdir(parents=True, exist_ok=True)
        # A second process training into the same folder (another pipeline from another working folder) is refused.
        with folder_lock(out) if main else contextlib.nullcontext():
            return _run(spec, out, device, data, validation, model, method, main)


def _run(spec: RunSpec, out: Path, device, data, validation, model, method, main: bool) -> Record:
    # The rule's file by content: git_commit and git_dirty miss an untracked (new) method file.
    # Threads change float summation order, so CPU results: recorded like the device.
    started = provenance(device) | {
        "world_size": distributed.world_size(),
        "method_sha256": method.source_hash(),
        "threads": torch.get_num_threads(),
    }
    state = {
        "epoch": 0,
        "history": [],
        "status": "ok",
        "provenance": started,
        "trainable_params_initial": measure.param_counts(model)["trainable_params"],
    }
    shuffle = torch.Generator().manual_seed(derive_seed(spec.seed, "shuffle"))
    optimizer = make_optimizer(model.parameters(), spec.recipe)
    checkpoint = read_checkpoint(out, spec, method, state["trainable_params_initial"])
    if checkpoint and resumed(
        checkpoint, out, spec, model, method, optimizer, shuffle, data, device
    ):
        state = checkpoint["state"]
    elif checkpoint:
        # A part failed to restore: the objects may hold some of the checkpoint, so new ones are built.
        model, method = build(spec, data, device)
        shuffle = torch.Generator().manual_seed(derive_seed(spec.seed, "shuffle"))
        optimizer = make_optimizer(model.parameters(), spec.recipe)
    if main:  # room for the checkpoint, and a word on the record this run replaces
        ready_folder(out, spec, model, state)
    distributed.barrier()  # every rank has read the checkpoint before rank 0 writes the next one
    speed = Speed.from_recipe(spec.recipe, device)
    compiled = speed.compile_model(
        model, speed.batch(torch.zeros(spec.recipe["batch_size"], *data.in_shape, device=device))
    )
    # What `auto` resolved to on this device: the layout and precision the numbers were computed in.
    state["provenance"]["speed"] = {**asdict(speed), "compile": compiled}
    state["provenance"]["determinism"] = {
        "requested": spec.recipe["deterministic"],
        **determinism_state(),
    }
    training = Training(
        spec,
        device,
        data,
        validation,
        model,
        method,
        speed,
        optimizer,
        shuffle,
        data.probe_batch(spec.recipe["probe_size"]),
    )
    getattr(
        data, "ready", lambda: None
    )()  # one-off data copies before the first epoch's memory clock
    board = EpochLog(
        out, spec.recipe["tensorboard"] and main
    )  # a view of the history, off by default
    try:
        for epoch in range(state["epoch"] + 1, spec.recipe["epochs"] + 1):
            if state["status"] != "ok":
                break
            entry = run_epoch(training, epoch)
            state["history"].append(entry)
            state["epoch"] = epoch
            # the loss, or the network's outputs after the epoch's last step (its test accuracy is NaN)
            if not (math.isfinite(entry["train_loss"]) and math.isfinite(entry["test_acc"])):
                state["status"] = "diverged"
                log.warning(
                    "%s diverged in epoch %d (loss %s, test accuracy %s)",
                    spec.method,
                    epoch,
                    entry["train_loss"],
                    entry["test_acc"],
                )
            if main:
                save_checkpoint(out, spec, model, optimizer, shuffle, state, method)
                write_log_csv(out / "log.csv", state["history"])
                board.write(entry)
            stop.check()  # one dropped inside a finaliser during the epoch's measures
    finally:
        board.close()
    # Once, on the trained network (calibration, per-class accuracy, robustness), by the process that
    # writes the record: under torchrun every rank holds the same weights, so the others would only repeat it.
    measured = end_of_run(model, data, spec.recipe, speed) if main and state["history"] else None
    record = make_record(spec, state, model, optimizer, data, device, measured)
    if main:
        write_json(out / "record.json", record.to_json())
    return record


def run_epoch(training: Training, epoch: int) -> dict:
    """Train one epoch, apply the method's end-of-epoch change, evaluate and measure: its history entry."""
    t = training
    recipe, model, method, speed = t.spec.recipe, t.model, t.method, t.speed
    lr = lr_at(recipe, epoch - 1)
    for group in t.optimizer.param_groups:
        group["lr"] = lr
    lr_of_step = None
    if recipe["schedule_unit"] == "step":
        steps = steps_per_epoch(t.data, recipe["batch_size"], recipe["keep_last_batch"])
        lr_of_step = lambda i: lr_at(recipe, epoch - 1, i, steps)  # noqa: E731
    stats = train_epoch(
        model,
        method,
        t.optimizer,
        t.data,
        recipe["batch_size"],
        t.shuffle,
        t.device,
        speed,
        recipe["keep_last_batch"],
        lr_of_step,
        step_function(method, recipe["locality"]),
    )
    slice_optimizer_state(t.optimizer, method.on_epoch_end(model, epoch))
    test_acc, test_top5 = evaluate(model, t.data, recipe["eval_batch_size"], speed)
    x, y = t.probe
    entry = {
        "epoch": epoch,
        "train_loss": stats["train_loss"],
        "train_acc": stats["train_acc"],
        "test_acc": test_acc,
        "test_top5": test_top5,
        "lr": lr,
        "train_time_s": stats["train_time_s"],
        "images_per_s": measure.rate(stats["images"], stats["train_time_s"]),
        "saved_activations": stats["saved_activations"],
        "peak_memory": stats["peak"],
        "terms": stats["terms"],
        "alignment": measure.alignment_with_bp(model, method, x, y),
        "update_alignment": measure.update_alignment(
            model,
            method,
            speed.batch(x),
            y,
            lambda: speed.context(t.device),
            on_gradients=layer_options.clip_gradients,  # the update that trains: clipped as in training
        ),
        "weight_alignment": weight_alignment(model),
        "ranks": measure.layer_ranks(model),
        "trainable_params": measure.param_counts(model)["trainable_params"],
        "measures": declare.take("epoch", model, x, y),  # every declared per-epoch measure
    }
    if t.validation is not None:
        entry["val_acc"] = evaluate(model, t.validation, recipe["eval_batch_size"], speed)[0]
    log.info(
        "%-14s epoch %3d/%d  loss %7.4f  train %6.2f%%  test %6.2f%%  %7.1fs  %8.0f img/s",
        t.spec.method,
        epoch,
        recipe["epochs"],
        entry["train_loss"],
        entry["train_acc"],
        test_acc,
        entry["train_time_s"],
        entry["images_per_s"],
    )
    return entry
