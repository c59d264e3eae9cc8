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
(bench.measure.memory.SavedTensorBytes, parameters excluded); auxiliary bytes: the auxiliary modules'
parameters, gradients and optimizer state (local-loss rules' heads and decoders; 0 for the others);
the `mem vs bp` column is their sum over BP's on the same arch.

The files: timing.py (the side-by-side timing and the rows), report.py (the table and figures),
cli.py (options, checks, output files).
"""

from bench.perf.step.cli import add_arguments, main, parse_method, step_variants

__all__ = ["add_arguments", "main", "parse_method", "step_variants"]
