"""One training epoch (the step loop, its clock, peak memory and saved-bytes count) and the per-epoch test
evaluation."""

from __future__ import annotations

import math
import time

import torch

from bench import distributed
from bench.measure import memory
from bench.measure.calibration import test_outputs
from bench.models import BlockNet
from bench.run import layer_options, stop
from bench.run.speed import Speed


@torch.no_grad()
def evaluate(model: BlockNet, data, batch_size: int, speed: Speed = Speed()) -> tuple[float, float]:
    """(top-1, top-5) test accuracy in %, in eval mode (float32: no autocast); both NaN (undefined) when an
    image's logits are not finite: the top-k of NaN logits is arbitrary (argmax 0: class 0 always "right")."""
    top1 = top5 = 0
    for logits, y in test_outputs(model, data, batch_size, speed):
        if not torch.isfinite(logits).all():
            return math.nan, math.nan
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
            self.begin, self.end = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            self.begin.record()
        else:
            self.host = memory.HostPeak()  # the peak of training alone, as on CUDA
            self.begin = time.perf_counter()

    def seconds(self) -> float:
        if not self.cuda:
            return time.perf_counter() - self.begin
        self.end.record()
        self.end.synchronize()
        return self.begin.elapsed_time(self.end) / 1000


def optimizer_step(model, optimizer, local: int, total: int) -> None:
    """What follows the rule's step in every training step (the trainer's and `bench perf`'s): the layer
    options' gradient clamp, the global batch's gradient on every rank (this rank's `local` of `total`
    images), the optimizer's step and the layer options' weight rescale."""
    layer_options.clip_gradients(model)  # grad_clip, as BioTorch's layer hook clamps its own
    distributed.average_gradients(model, local, total)
    optimizer.step()
    layer_options.after_step(model)  # constrain_weights: back to each weight's kept norm


def train_epoch(
    model,
    method,
    optimizer,
    data,
    batch_size,
    generator,
    device,
    speed: Speed = Speed(),
    keep_last: bool = False,
    lr_of_step=None,
    step=None,
) -> dict:
    """One epoch; returns the mean of every logged step scalar, accuracy, time and saved bytes.

    `keep_last`: the last partial batch is trained on too; `lr_of_step(i)`: the learning rate of the
    epoch's step i (a per-step schedule), else the optimizer's rate stays as set; `step(model, x, y)`:
    the step to call (bench.run.blockwise.step_function), else `method.step`. The layer options the
    model was built with (grad_clip, constrain_weights: bench/run/layer_options.py) act around the
    optimizer's step.
    """
    step = step or method.step
    model.train()
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    counter = memory.SavedTensorBytes(model)
    if batch_size < distributed.world_size():
        raise ValueError(
            f"bad value {batch_size} for 'batch_size'; accepted: at least the "
            f"{distributed.world_size()} processes of this run (it is the global batch)"
        )
    clock = _Clock(device)
    images = 0
    # keep_last only when asked: a dataset class of one's own need not take it (streams refuse it)
    batches = (
        data.train_batches(batch_size, generator, keep_last=True)
        if keep_last
        else data.train_batches(batch_size, generator)
    )
    for x, y, total in distributed.rank_batches(data, batches, batch_size):
        stop.check()  # a Ctrl-C or SIGTERM that landed inside a finaliser during the last step
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
        optimizer_step(model, optimizer, len(y), total)
        for key, value in distributed.weight_stats(
            stats, len(y), total
        ).items():  # float32 sums: bf16 ones (autocast) would lose the small terms
            value = value.detach().float() if value.is_floating_point() else value.detach()
            sums[key] = sums[key] + value if key in sums else value.clone()
        steps += 1
    stop.check()  # one that landed in the epoch's last step
    seconds = clock.seconds()
    sums = distributed.sum_over_ranks(sums)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else clock.host.growth()
    means = {k: v.item() / steps for k, v in sums.items() if k != "correct"}
    return {
        "train_loss": means.pop("loss"),
        "train_acc": 100.0 * sums["correct"].item() / images,
        "terms": means,
        "train_time_s": seconds,
        "images": images,
        "saved_activations": counter.bytes,
        "peak": peak,
    }
