"""Timing the trainer's step side by side: one Contender per (arch, method variant), the matmul peak,
and the rows of one arch (step time, FLOPs, saved activations and auxiliary bytes, each rule against BP)."""

from __future__ import annotations

import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.config.spec import make_spec
from bench.measure import memory
from bench.perf.common import training_parts, wall_clock
from bench.run.epoch import optimizer_step
from bench.run.speed import Speed
from bench.run.train import derive_seed


class Contender:
    """One (arch, method variant): its prepared model, optimizer, fixed batch and step timer."""

    def __init__(
        self, row: str, spec, in_shape, num_classes: int, batch_size: int, device, speed: Speed
    ):
        self.row, self.spec, self.device, self.speed = row, spec, device, speed
        # every method starts from the same weights; the trainer's step: graph or blockwise
        parts = training_parts(spec, in_shape, num_classes, device, speed)
        self.model, self.method, self.step_fn, self.optimizer = parts
        batch = torch.Generator().manual_seed(derive_seed(spec.seed, "batch"))
        self.x = speed.batch(torch.randn(batch_size, *in_shape, generator=batch).to(device))
        self.y = torch.randint(0, num_classes, (batch_size,), generator=batch).to(device)
        self.times: list[float] = []

    def step(self) -> None:
        """The trainer's step: zero_grad, the rule's step (or the blockwise one), then the trainer's
        optimizer step with the layer options (bench.run.epoch.optimizer_step)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.speed.context(self.device):
            self.step_fn(self.model, self.x, self.y)
        optimizer_step(self.model, self.optimizer, len(self.y), len(self.y))

    def timed_step(self) -> None:
        self.times.append(time_call(self.step, self.device))

    def count(self) -> tuple[int, int, int]:
        """(FLOPs, saved-activation bytes, auxiliary bytes) of one step, measured on the eager model
        before timing; the auxiliary bytes are the auxiliary modules' parameters, gradients and optimizer
        state (bench.measure.memory.memory_breakdown's `auxiliary`: 0 for a rule without any)."""
        with FlopCounterMode(display=False) as flops:
            self.step()
        counter = memory.SavedTensorBytes(self.model)
        with counter:
            self.step()
        parts = memory.memory_breakdown(self.model, self.optimizer, counter.bytes, self.device)
        return flops.get_total_flops(), counter.bytes, parts["auxiliary"]


def time_call(fn, device: torch.device) -> float:
    """Seconds `fn()` takes: CUDA events around it on CUDA, a wall clock on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    return wall_clock(fn, device)[1]


def matmul_peak(
    device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 3
) -> float:
    """FLOP/s of the best of `repeats` size x size matmuls: the peak the share column divides by.

    A product of that size is timed twice: by torch.mm and as a 1x1 convolution of a channels_last
    image (size pixels, size channels), which the conv library (oneDNN on CPU, cuDNN) runs. On the 2-core
    CPU here the convolution ran ~1.15-1.4x faster than MKL's matmul, and the nets' convs beat a
    matmul-only peak (shares over 100%). Shares can still pass 100% where a conv library uses
    Winograd, which does fewer multiplications than the direct convolution the FLOP counter counts.
    """
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    image = (
        torch.randn(1, size, 1, size, device=device)
        .to(dtype)
        .contiguous(memory_format=torch.channels_last)
    )
    kernel = b.view(size, size, 1, 1)
    products = (lambda: a @ b, lambda: torch.nn.functional.conv2d(image, kernel))
    for product in products:
        product()  # warm-up: library initialisation and kernel choice
    best = min(time_call(product, device) for product in products for _ in range(repeats))
    return 2 * size**3 / best


def measure_arch(
    arch: str, methods: list[tuple[str, str, dict]], variants: dict, args, device
) -> list[dict]:
    """Rows for every method on `arch`, timed interleaved; BP is always measured (the ratio's 1.0)."""
    bp = [m for m in methods if m[1] == "bp" and not m[2]][:1] or [("bp", "bp", {})]
    methods = [*bp, *[m for m in methods if m not in bp]]  # BP first: the ratio's 1.0
    contenders = []
    for row, variant, options in methods:
        spec = make_spec("synthetic", arch, variant, 0, {**options, **args.speed_sets}, variants)
        speed = Speed.from_recipe(spec.recipe, device)
        contenders.append(
            Contender(row, spec, args.in_shape, args.classes, args.batch_size, device, speed)
        )
    counts = [c.count() for c in contenders]
    for contender in contenders:
        contender.speed.compile_model(contender.model, contender.x)
        for _ in range(args.warmup):
            contender.step()
    dtype = torch.bfloat16 if contenders[0].speed.autocast else torch.float32
    peak = matmul_peak(device, dtype, args.peak_size)
    for _ in range(args.steps):
        for contender in contenders:
            contender.timed_step()
    peak = max(peak, matmul_peak(device, dtype, args.peak_size))  # the better of before and after
    bp = statistics.median(contenders[0].times)
    rows = []
    for contender, (flops, saved, auxiliary) in zip(contenders, counts):
        median = statistics.median(contender.times)
        rows.append(
            {
                "arch": arch,
                "method": contender.row,
                "median_ms": 1000 * median,
                "ratio_to_bp": median / bp,
                "gflop_per_step": flops / 1e9,
                "peak_share": flops / median / peak,
                "saved_mb": saved / 1e6,
                "auxiliary_mb": auxiliary / 1e6,
                "peak_gflops": peak / 1e9,
                "device": str(device),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
            }
        )
    return rows
