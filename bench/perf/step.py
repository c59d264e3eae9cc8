"""`python -m bench perf step`: training-step time, FLOPs and saved activations of each method vs BP.

For every (arch, method variant) one model is built from the same seed, prepared by its method and
trained on one fixed synthetic CIFAR-shaped batch (3 x 32 x 32, 10 classes by default), so no data
is needed. The timed unit is exactly the trainer's step: zero_grad, `method.step(model, x, y)`,
`optimizer.step()` (AdamW), with the trainer's speed options (channels_last, bf16 autocast,
cudnn.benchmark, torch.compile; `auto` as bench.run.speed.Speed resolves it; `--set` forces one for
every row, `method:channels_last=off` for one row, so both layouts can be timed side by side). Every
arch's methods are timed side by side: after `warmup` untimed steps each, the methods take turns,
one step each, `steps` times, so a burst of outside load hits every method alike; each method's
median counts, and BP on the same arch, batch and device is the 1.0 of the ratio column. CUDA steps
are timed with CUDA events. FLOPs per step come from torch.utils.flop_counter (matmuls and
convolutions, forward and backward, counted on the eager model); the share column divides the
achieved FLOP/s by the best of a square matmul timed in the same run (float32, or bf16 under
autocast). Saved activations: the bytes autograd saves for backward in one step
(bench.measure.memory.SavedTensorBytes, parameters excluded).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.config.files import config_argument, load_config
from bench.config.spec import make_spec, parse_sets
from bench.measure import memory
from bench.models import ARCHS
from bench.perf.common import (
    add_speed_arguments,
    log,
    speed_options,
    table,
    training_parts,
    wall_clock,
    write_csv,
)
from bench.run.speed import Speed, resolve_device
from bench.run.train import derive_seed

DEFAULT_ARCHS = ("smallconv", "vgg13", "resnet32")
# Rows beyond the config's variants: SSA started at a quarter of full rank, where its factored
# layers should turn fewer FLOPs into less time.
EXTRA_VARIANTS = {"ssa-r0.25": {"impl": "ssa", "rank_ratio": 0.25}}


def step_variants(config_files: list[Path] | None) -> dict[str, dict]:
    """The variants to time: the config files' own and their sweeps' points, then EXTRA_VARIANTS."""
    return {**load_config(config_files, check_data=False).variants, **EXTRA_VARIANTS}


def parse_method(token: str) -> tuple[str, str, dict]:
    """'name' or 'name:key=value,key=value' -> (row name, variant name, option overrides)."""
    name, _, options = token.partition(":")
    return token, name, parse_sets([pair for pair in options.split(",") if pair]) if options else {}


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
        """The trainer's step: zero_grad, the rule's step (or the blockwise one), optimizer.step."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.speed.context(self.device):
            self.step_fn(self.model, self.x, self.y)
        self.optimizer.step()

    def timed_step(self) -> None:
        self.times.append(time_call(self.step, self.device))

    def count(self) -> tuple[int, int]:
        """(FLOPs, saved-activation bytes) of one step, measured on the eager model before timing."""
        with FlopCounterMode(display=False) as flops:
            self.step()
        counter = memory.SavedTensorBytes(self.model)
        with counter:
            self.step()
        return flops.get_total_flops(), counter.bytes


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
    for contender, (flops, saved) in zip(contenders, counts):
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
                "peak_gflops": peak / 1e9,
                "device": str(device),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def report(rows: list[dict]) -> list[str]:
    """Fixed-column lines of the table."""
    return table(
        (
            ("arch", -10, lambda r: r["arch"]),
            ("method", -16, lambda r: r["method"]),
            ("median ms", 10, lambda r: f"{r['median_ms']:.1f}"),
            ("vs bp", 6, lambda r: f"{r['ratio_to_bp']:.2f}x"),
            ("GFLOP", 8, lambda r: f"{r['gflop_per_step']:.2f}"),
            ("of peak", 8, lambda r: f"{100 * r['peak_share']:.1f}%"),
            ("saved MB", 9, lambda r: f"{r['saved_mb']:.1f}"),
        ),
        rows,
    )


def plot_saved(rows: list[dict], archs: list[str], path: Path) -> None:
    """Saved activations per step (the kept block inputs of a blockwise step included) of every method
    row on each arch, archs in the order given (deepest last, when given so), one line per row; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = {r["arch"]: r["saved_mb"] for r in rows if r["method"] == method}
        ax.plot(
            archs,
            [mine.get(a, float("nan")) for a in archs],
            marker="o",
            linestyle="--" if "blockwise" in method else "-",
            label=method,
        )
    ax.set_ylabel("saved activations per step (MB)")
    batch = rows[0]["batch_size"] if rows else "?"
    ax.set_title(f"training memory per step, batch {batch} ({rows[0]['device'] if rows else ''})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args) -> int:
    """CLI entry: measure every arch, log the table, write --out as CSV and --plot as PNG when given."""
    unknown = [a for a in args.arch if a not in ARCHS]
    if unknown:
        raise ValueError(f"unknown arch {unknown[0]!r}; known: {', '.join(sorted(ARCHS))}")
    for key in ("arch", "methods"):  # one row each: `bench grid` refuses a table with a row twice
        if len(set(values := getattr(args, key) or [])) < len(values):  # a script's list may repeat
            log.warning("--%s lists %s more than once; timing each once", key, values)
            setattr(args, key, list(dict.fromkeys(values)))
    if min(args.steps, args.batch_size) < 1 or args.warmup < 0:
        raise ValueError("--steps and --batch-size must be >= 1 and --warmup >= 0")
    device = resolve_device(args.device)
    variants = step_variants(args.config)
    methods = [parse_method(token) for token in (args.methods or list(variants))]
    args.speed_sets = speed_options(
        args, "(method options go after the method name: ssa:rank_ratio=0.5)"
    )
    args.in_shape = (3, args.image_size, args.image_size)
    log.info(
        "perf step: batch %d of %s, %d classes, %d warm-up + %d timed steps per method, device %s, "
        "%d threads",
        args.batch_size,
        "x".join(map(str, args.in_shape)),
        args.classes,
        args.warmup,
        args.steps,
        device,
        torch.get_num_threads(),
    )
    rows = []
    for arch in args.arch:
        done = measure_arch(arch, methods, variants, args, device)
        rows += done
        summary = "\n".join(report(done))
        log.info("%s done; matmul peak %.1f GFLOP/s:\n%s", arch, done[0]["peak_gflops"], summary)
    for line in report(rows):
        log.info("%s", line)
    if args.plot:
        plot_saved(rows, args.arch, args.plot)
    if args.out:
        write_csv(args.out, rows)
    return 0


def add_arguments(parser) -> None:
    """The `perf step` options, for the CLI's subparser."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--arch", nargs="+", default=list(DEFAULT_ARCHS), help="architectures to measure"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="variants, or name:key=value,.. (default: every config variant and ssa-r0.25)",
    )
    config_argument(parser, "with the variants and sweeps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--image-size", type=int, default=32, help="side of the synthetic 3-channel images"
    )
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument(
        "--steps", type=int, default=10, help="timed steps per method (interleaved)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    parser.add_argument(
        "--peak-size", type=int, default=2048, help="side of the square matmul giving the peak"
    )
    add_speed_arguments(parser, "for every method")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as CSV here")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="also draw saved activations per step against arch (in --arch order) as PNG here",
    )
