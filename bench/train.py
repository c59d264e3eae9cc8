"""The trainer: one run from spec to record (data, optimizer, schedule, eval, checkpoints, measurement)."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from bench import data as datasets
from bench import distributed, measure
from bench.blockwise import step_function
from bench.calibration import test_outputs
from bench.checkpoint import load_checkpoint, save_checkpoint
from bench.determinism import determinism
from bench.determinism import state as determinism_state
from bench.evaluation import end_of_run, require_packages
from bench.data.tensors import batch_bounds, hold_out
from bench.config import RunSpec
from bench.method import get_method
from bench.models import BlockNet, build_for
from bench.record import SCHEMA_VERSION, folder_lock, provenance, write_json, write_log_csv
from bench.tensorboard_log import EpochLog
from bench.weight_alignment import weight_alignment

log = logging.getLogger("bench.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


@dataclass(frozen=True)
class Speed:
    """The recipe's speed options resolved for a device, and how to apply them.

    `auto` means on with CUDA; channels_last's `auto` is on for CPU too: NHWC convolutions, pooling and
    ReLU made every rule's step faster on CPU (results/perf/cpu_step_layouts.log, 2-core CPU, batch 128:
    BP's step 0.74-0.94x of NCHW on smallconv, resnet32, vgg13; faster too at 28x28 and 8x8, see
    results/perf/cpu_step_small_*.log).
    mlp3 only pays one small copy of its input batch.
    """

    channels_last: bool = False
    autocast: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False

    @classmethod
    def from_recipe(cls, recipe: dict, device: torch.device) -> "Speed":
        def on(key: str) -> bool:
            value = recipe.get(key, "auto")
            if key == "cudnn_benchmark" and recipe.get("deterministic"):  # a timed pick is not reproducible
                return False
            return value == "on" or (value == "auto" and (device.type == "cuda" or key in AUTO_ON_CPU))
        return cls(**{key: on(key) for key in SPEED_KEYS})

    def prepare(self, model: BlockNet) -> BlockNet:
        """The model in NHWC when channels_last; sets cudnn.benchmark (a process-wide switch)."""
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def context(self, device: torch.device):
        """bf16 autocast around a training step (forward and the method's backward), or nothing."""
        return torch.autocast(device.type, torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def compile_model(self, model: BlockNet, x: torch.Tensor) -> bool:
        """torch.compile `model.forward` and `model.forward_blocks` (the local rules' entry) in place.

        The local rules' graph cuts are detaches inside forward_blocks, which compile into the graph
        as they are. A trial forward and backward of both entries (batch `x`, both cut settings) finds
        what does not compile now: then the model stays eager and a warning says why. Parameters,
        buffers (BatchNorm statistics) and gradients are restored after the trial.
        """
        if not self.compile:
            return False
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.forward, model.forward_blocks = torch.compile(model.forward), torch.compile(model.forward_blocks)
        try:
            with self.context(x.device):
                for cut in (True, False):
                    outputs, logits = model.forward_blocks(x, cut=cut)
                    sum(t.float().sum() for t in (*outputs, logits)).backward()
                model(x).float().sum().backward()
        except Exception as error:  # compiler failures have many types; any of them means: stay eager
            log.warning("torch.compile failed on %s (%s: %s); training eager", type(model).__name__,
                        type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            del model.forward, model.forward_blocks  # the class's eager methods again
            return False
        finally:
            model.zero_grad(set_to_none=True)
            model.load_state_dict(state)
        # A later recompile (eval batch, a rank cut) that fails falls back to eager instead of crashing.
        torch._dynamo.config.suppress_errors = True
        return True


SPEED_KEYS = tuple(f.name for f in fields(Speed))
AUTO_ON_CPU = ("channels_last",)  # bf16 autocast, cudnn and torch.compile stay CUDA-only by default


def make_optimizer(params, recipe: dict) -> torch.optim.Optimizer:
    name, lr, wd = recipe["optimizer"], recipe["lr"], recipe["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe["momentum"], weight_decay=wd)
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(params, lr=lr, weight_decay=wd)


def lr_at(recipe: dict, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """Learning rate for step `step` of (0-based) `epoch`: cosine to 0 over the run, step decay, or constant.

    With `schedule_unit: epoch` the rate is set once at each epoch's start (step ignored); with `step`,
    cosine is evaluated at every step t of T = epochs x steps_per_epoch (lr 0.5 (1 + cos(pi t / T)), as
    torch's CosineAnnealingLR(T_max=T) stepped per batch); step and multistep decay still change at
    epoch boundaries (their milestones are epochs).
    """
    lr, schedule = recipe["lr"], recipe["schedule"]
    if schedule == "cosine":
        progress = epoch + (step / steps_per_epoch if recipe.get("schedule_unit") == "step" else 0)
        return lr * 0.5 * (1 + math.cos(math.pi * progress / recipe["epochs"]))
    if schedule == "step":
        return lr * recipe["gamma"] ** (epoch // recipe["step_size"])
    if schedule == "multistep":  # as torch's MultiStepLR stepped once an epoch: x gamma from each milestone on
        return lr * recipe["gamma"] ** sum(1 for m in recipe["milestones"] if m <= epoch)
    return lr


def steps_per_epoch(data, batch_size: int, keep_last: bool) -> int:
    """Training steps in one epoch of `data` (what a per-step schedule counts)."""
    return len(batch_bounds(len(data.train_y), batch_size, keep_last))


def slice_optimizer_state(optimizer: torch.optim.Optimizer, resized: dict) -> None:
    """Slice per-parameter optimizer state (moments, momentum) the way the parameters were sliced."""
    for param, (dim, index) in resized.items():
        for key, value in optimizer.state.get(param, {}).items():
            if torch.is_tensor(value) and value.dim() == param.dim():
                optimizer.state[param][key] = value.index_select(dim, index.to(value.device)).contiguous()


@torch.no_grad()
def evaluate(model: BlockNet, data, batch_size: int, speed: Speed = Speed()) -> tuple[float, float]:
    """(top-1, top-5) test accuracy in %, in eval mode (float32: no autocast)."""
    top1 = top5 = 0
    for logits, y in test_outputs(model, data, batch_size, speed):
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (top[:, 0] == y).sum()
        top5 += (top == y[:, None]).any(dim=1).sum()
    n = len(data.test_y)
    return 100.0 * top1.item() / n, 100.0 * top5.item() / n


class _Clock:
    """Seconds of training: CUDA events on CUDA (no host stall per step), a wall clock on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:  # the peak of training alone: evaluation and probes come after
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.host = measure.HostPeak()  # the peak of training alone, as on CUDA
            self.begin = time.perf_counter()

    def seconds(self) -> float:
        if not self.cuda:
            return time.perf_counter() - self.begin
        self.end.record()
        self.end.synchronize()
        return self.begin.elapsed_time(self.end) / 1000


def train_epoch(model, method, optimizer, data, batch_size, generator, device, speed: Speed = Speed(),
                keep_last: bool = False, lr_of_step=None, step=None) -> dict:
    """One epoch; returns the mean of every logged step scalar, accuracy, time and saved bytes.

    `keep_last`: the last partial batch is trained on too; `lr_of_step(i)`: the learning rate of the
    epoch's step i (a per-step schedule), else the optimizer's rate stays as set; `step(model, x, y)`:
    the step to call (bench.blockwise.step_function), else `method.step`.
    """
    step = step or method.step
    model.train()
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    counter = measure.SavedTensorBytes(model)
    if batch_size < distributed.world_size():
        raise ValueError(f"bad value {batch_size} for 'batch_size'; accepted: at least the "
                         f"{distributed.world_size()} processes of this run (it is the global batch)")
    # A stream's loader reads only this rank's share of each full global batch (its `rank_share`);
    # other data serve every rank the global batch, of which it keeps its share here.
    rank_share = getattr(data, "rank_share", False)
    share = len(range(*distributed.bounds(batch_size)))
    clock = _Clock(device)
    images = 0
    # keep_last only when asked: a dataset class of one's own need not take it (streams refuse it)
    batches = data.train_batches(batch_size, generator, keep_last=True) if keep_last else \
        data.train_batches(batch_size, generator)
    for x, y in batches:
        if rank_share:
            total = batch_size  # the global batch: such streams serve full global batches only
            if len(y) != share:
                raise RuntimeError(f"{type(data).__name__} {getattr(data, 'name', '')} served a batch of {len(y)} "
                                   f"images to rank {distributed.rank()}; its share of {batch_size} is {share}")
        else:
            total = len(y)
            x, y = distributed.shard(x, y)  # torchrun: this rank's share of the global batch (else all of it)
        images += total
        x = speed.batch(x)
        if lr_of_step is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_of_step(steps)
        optimizer.zero_grad(set_to_none=True)
        with speed.context(device):
            if steps == 0:  # count saved-for-backward bytes on one step per epoch
                with counter:
                    stats = step(model, x, y)
            else:
                stats = step(model, x, y)
        distributed.average_gradients(model, len(y), total)  # the global batch's gradient on every rank
        optimizer.step()
        for key, value in distributed.weight_stats(stats, len(y), total).items():  # float32 sums: bf16 ones (autocast) would lose the small terms
            value = value.detach().float() if value.is_floating_point() else value.detach()
            sums[key] = sums[key] + value if key in sums else value.clone()
        steps += 1
    seconds = clock.seconds()
    sums = distributed.sum_over_ranks(sums)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else clock.host.growth()
    means = {k: v.item() / steps for k, v in sums.items() if k != "correct"}
    return {"train_loss": means.pop("loss"), "train_acc": 100.0 * sums["correct"].item() / images,
            "terms": means, "train_time_s": seconds, "images": images, "saved_activations": counter.bytes,
            "peak": peak}


def derive_seed(seed: int, purpose: str) -> int:
    """An independent seed per purpose, so model init, feedback and shuffling never share a stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little")


def setup(spec: RunSpec, data_dir: Path | None):
    """Device, data on the device, its validation split (None without `val_split`), the prepared model
    (init and feedback seeded from the run seed), the method."""
    device = resolve_device(spec.recipe["device"])
    require_packages(spec.recipe)  # a measure that cannot run fails now, not after training
    data = datasets.load(spec.dataset, device, data_dir, datasets.DataOptions.from_recipe(spec.recipe))
    validation = None
    if spec.recipe["val_split"]:
        if not isinstance(data, datasets.TensorData):
            raise ValueError(f"'val_split' needs a dataset held on the device; {spec.dataset} streams "
                             "(use its own validation folder as the test split instead)")
        data, validation = hold_out(data, spec.recipe["val_split"])
    if spec.recipe["keep_last_batch"] and not isinstance(data, datasets.TensorData):
        raise ValueError(f"'keep_last_batch' needs a dataset held on the device; {spec.dataset} streams "
                         "its full batches only")
    if spec.recipe["norm_mean"]:  # constants instead of the training split's statistics (validation too)
        for part in (data, validation) if validation is not None else (data,):
            datasets.set_normalisation(part, spec.recipe["norm_mean"], spec.recipe["norm_std"])
    torch.manual_seed(derive_seed(spec.seed, "init"))
    model = build_for(spec.recipe, spec.arch, data.in_shape, data.num_classes)
    method = get_method(spec.impl)(**spec.options)
    if spec.recipe["batch_size"] > len(data.train_y):
        raise ValueError(f"bad value {spec.recipe['batch_size']} for 'batch_size'; accepted: at most the "
                         f"{len(data.train_y)} training images of {spec.dataset}")
    feedback = torch.Generator().manual_seed(derive_seed(spec.seed, "feedback"))
    model = method.prepare(model, data.num_classes, feedback)
    # A stochastic rule's draws (fwdgrad's directions, brsf's magnitudes) on the device, per run seed.
    method.generator = torch.Generator(device).manual_seed(derive_seed(spec.seed, "method"))
    return device, data, validation, Speed.from_recipe(spec.recipe, device).prepare(model.to(device)), method


def run(spec: RunSpec, out: Path, data_dir: Path | None = None) -> dict:
    """Train one run, checkpointing each epoch (resuming from `out`), and write out/record.json."""
    out = Path(out)
    with determinism(spec.recipe["deterministic"]):  # first: cuBLAS reads its setting when CUDA starts
        device, data, validation, model, method = setup(spec, data_dir)  # bad data fails here, before anything is written
        main = distributed.is_main()  # under torchrun only rank 0 writes; the others train alongside
        if main:
            out.mkdir(parents=True, exist_ok=True)
        # A second process training into the same folder (another pipeline from another working folder) is refused.
        with folder_lock(out) if main else contextlib.nullcontext():
            return _run(spec, out, device, data, validation, model, method, main)


def _run(spec: RunSpec, out: Path, device, data, validation, model, method, main: bool) -> dict:
    # The rule's file by content: git_commit and git_dirty miss an untracked (new) method file.
    # Threads change float summation order, so CPU results: recorded like the device.
    started = provenance(device) | {"world_size": distributed.world_size(), "method_sha256": method.source_hash(),
                                    "threads": torch.get_num_threads()}
    shuffle = torch.Generator().manual_seed(derive_seed(spec.seed, "shuffle"))
    state = {"epoch": 0, "history": [], "status": "ok", "provenance": started,
             "trainable_params_initial": measure.param_counts(model)["trainable_params"]}
    checkpoint = load_checkpoint(out, spec, model, method)
    optimizer = make_optimizer(model.parameters(), spec.recipe)
    if checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        shuffle.set_state(checkpoint["shuffle"])
        method.generator.set_state(checkpoint["method_generator"])
        method.load_state_dict(checkpoint["method_state"])
        state = checkpoint["state"]
    elif main:
        (out / "record.json").unlink(missing_ok=True)  # a record of an earlier, different run is stale
    distributed.barrier()  # every rank has read the checkpoint before rank 0 writes the next one
    speed = Speed.from_recipe(spec.recipe, device)
    compiled = speed.compile_model(model, speed.batch(torch.zeros(spec.recipe["batch_size"], *data.in_shape,
                                                                   device=device)))
    # What `auto` resolved to on this device: the layout and precision the numbers were computed in.
    state["provenance"]["speed"] = {**asdict(speed), "compile": compiled}
    state["provenance"]["determinism"] = {"requested": spec.recipe["deterministic"], **determinism_state()}
    probe = data.probe_batch(spec.recipe["probe_size"])
    getattr(data, "ready", lambda: None)()  # one-off data copies before the first epoch's memory clock
    board = EpochLog(out, spec.recipe["tensorboard"] and main)  # a view of the history, off by default
    try:
        for epoch in range(state["epoch"] + 1, spec.recipe["epochs"] + 1):
            if state["status"] != "ok":
                break
            entry = run_epoch(spec, epoch, model, method, optimizer, data, shuffle, probe, device, speed)
            if validation is not None:
                entry["val_acc"] = evaluate(model, validation, spec.recipe["eval_batch_size"], speed)[0]
            state["history"].append(entry)
            state["epoch"] = epoch
            if not math.isfinite(entry["train_loss"]):
                state["status"] = "diverged"
                log.warning("%s diverged in epoch %d (loss %s)", spec.method, epoch, entry["train_loss"])
            if main:
                save_checkpoint(out, spec, model, optimizer, shuffle, state, method)
                write_log_csv(out / "log.csv", state["history"])
                board.write(entry)
    finally:
        board.close()
    record = make_record(spec, state, model, optimizer, data, device, state["provenance"])
    if state["history"]:  # once, on the trained network: calibration, per-class accuracy, robustness
        record |= end_of_run(model, data, spec.recipe, speed)
    if main:
        write_json(out / "record.json", record)
    return record


def run_epoch(spec, epoch, model, method, optimizer, data, shuffle, probe, device, speed: Speed = Speed()) -> dict:
    """Train one epoch, apply the method's end-of-epoch change, evaluate; the epoch's history entry."""
    recipe = spec.recipe
    lr = lr_at(recipe, epoch - 1)
    for group in optimizer.param_groups:
        group["lr"] = lr
    lr_of_step = None
    if recipe["schedule_unit"] == "step":
        steps = steps_per_epoch(data, recipe["batch_size"], recipe["keep_last_batch"])
        lr_of_step = lambda i: lr_at(recipe, epoch - 1, i, steps)  # noqa: E731
    stats = train_epoch(model, method, optimizer, data, recipe["batch_size"], shuffle, device, speed,
                        recipe["keep_last_batch"], lr_of_step, step_function(method, recipe["locality"]))
    slice_optimizer_state(optimizer, method.on_epoch_end(model, epoch))
    test_acc, test_top5 = evaluate(model, data, spec.recipe["eval_batch_size"], speed)
    entry = {"epoch": epoch, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
             "test_acc": test_acc, "test_top5": test_top5, "lr": lr,
             "train_time_s": stats["train_time_s"], "images_per_s": stats["images"] / stats["train_time_s"],
             "saved_activations": stats["saved_activations"], "peak_memory": stats["peak"], "terms": stats["terms"],
             "alignment": measure.alignment_with_bp(model, method, *probe),
             "update_alignment": measure.update_alignment(model, method, speed.batch(probe[0]), probe[1],
                                                          lambda: speed.context(device)),
             "weight_alignment": weight_alignment(model),
             "ranks": measure.layer_ranks(model), "trainable_params": measure.param_counts(model)["trainable_params"]}
    log.info("%-14s epoch %3d/%d  loss %7.4f  train %6.2f%%  test %6.2f%%  %7.1fs  %8.0f img/s",
             spec.method, epoch, spec.recipe["epochs"], entry["train_loss"], entry["train_acc"], test_acc,
             entry["train_time_s"], entry["images_per_s"])
    return entry


def selected_epoch(history: list[dict]) -> dict:
    """Which epoch's test accuracy the tables report: the best on validation where the run has a validation
    split (BioTorch's protocol: the best-validation checkpoint scored on test; the first epoch of the best),
    else the last epoch."""
    if not history:
        return {"selection": "last", "selected_epoch": None, "selected_test_acc": None}
    if "val_acc" not in history[-1]:
        return {"selection": "last", "selected_epoch": history[-1]["epoch"], "selected_test_acc": history[-1]["test_acc"]}
    best = max(history, key=lambda h: (h["val_acc"] if math.isfinite(h["val_acc"]) else -math.inf, -h["epoch"]))
    return {"selection": "best_val", "selected_epoch": best["epoch"], "selected_test_acc": best["test_acc"],
            "best_val_acc": best["val_acc"]}


def make_record(spec: RunSpec, state: dict, model, optimizer, data, device, started: dict) -> dict:
    """The run's record.json (schema_version 1), from the training state and final measurements."""
    history = state["history"]
    last = history[-1] if history else {}
    train_time = sum(h["train_time_s"] for h in history)
    images = sum(h["images_per_s"] * h["train_time_s"] for h in history)
    record = {
        "schema_version": SCHEMA_VERSION, "dataset": spec.dataset, "arch": spec.arch, "method": spec.method,
        "impl": spec.impl, "seed": spec.seed, "recipe": spec.recipe, "options": spec.options,
        "config_hash": spec.config_hash(), "status": state["status"], "epochs": state["epoch"],
        "epochs_planned": spec.recipe["epochs"], "num_classes": data.num_classes,
        "test_acc": last.get("test_acc"),
        "test_top5": last.get("test_top5") if data.num_classes > 5 else None,
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        **selected_epoch(history),
        "train_time_s": train_time, "images_per_s": images / train_time if train_time else None,
        **measure.param_counts(model), "trainable_params_initial": state["trainable_params_initial"],
        "memory": measure.memory_breakdown(model, optimizer, last.get("saved_activations", 0), device,
                                           max((h["peak_memory"] for h in history if h.get("peak_memory") is not None),
                                               default=None)),
        "history": history, "provenance": started,
    }
    return record
