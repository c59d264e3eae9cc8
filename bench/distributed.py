"""One run on several processes (`torchrun --nproc_per_node N -m bench train ...`): data parallel by hand.

Every rank builds the same model, feedback and data order from the run seed, takes its shard of each
global batch (the contiguous slice `bounds`), runs the method's step, then the gradients are averaged
(weighted by shard size) with one all-reduce per step. This covers every learning rule alike, DFA's and
SSA's local gradients included, without DistributedDataParallel's hooks, which assume one backward
through one graph. The optimizer step then sees the global batch's gradient on every rank, so
parameters stay identical; only rank 0 writes records, logs and checkpoints. BatchNorm statistics stay
per rank (as in DDP without SyncBN).

On-device datasets (TensorData) serve every rank the global batch and `shard` slices it (no decode
cost). Streamed datasets (StreamData: FFCV .beton files, image folders) decode only this rank's share:
their loaders walk `share_of_batches(order, ...)`, the same slices of the same global order, and say so
with `rank_share = True`, so the trainer skips `shard` and weighs by the global batch size.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); False for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def bounds(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """[start, stop) of rank `rank_`'s (default: this rank's) contiguous share of n items out of `world`
    (default: this run's): [n * r // world, n * (r + 1) // world), so sizes differ by at most one."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return n * rank_ // world, n * (rank_ + 1) // world


def shard(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of a global batch (sizes differ by at most one)."""
    if world_size() == 1:
        return x, y
    start, stop = bounds(len(y))
    return x[start:stop], y[start:stop]


def share_of_batches(order, batch_size: int, rank_: int | None = None, world: int | None = None):
    """The part of a global sample order (1-d numpy array or tensor) that rank `rank_` reads when the
    order is served in full global batches of `batch_size` (the remainder dropped): its `bounds` share
    of each global batch, in order. Read in batches of `bounds(batch_size)` size, these are exactly the
    slices `shard` would keep of the global batches one process sees."""
    start, stop = bounds(batch_size, rank_, world)
    full = len(order) // batch_size * batch_size
    return order[:full].reshape(-1, batch_size)[:, start:stop].reshape(-1)


def rank_batches(data, batches, batch_size: int):
    """(x, y, global batch size) of each training batch: this rank's share of every global batch.

    A stream's loader reads only this rank's share of each full global batch (its `rank_share`); other
    data serve every rank the global batch, of which this keeps the rank's share (all of it alone).
    """
    rank_share = getattr(data, "rank_share", False)
    share = len(range(*bounds(batch_size)))
    for x, y in batches:
        if rank_share:  # such streams serve full global batches only
            if len(y) != share:
                raise RuntimeError(
                    f"{type(data).__name__} {getattr(data, 'name', '')} served a batch of {len(y)} "
                    f"images to rank {rank()}; its share of {batch_size} is {share}"
                )
            yield x, y, batch_size
        else:
            yield *shard(x, y), len(y)


def average_gradients(model: torch.nn.Module, local: int, total: int) -> None:
    """Replace each gradient by the global batch's: the sum over ranks of grad * local/total."""
    if world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]) * (local / total)
    dist.all_reduce(flat)  # one call per step: all parameters in one buffer
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def weight_stats(stats: dict[str, torch.Tensor], local: int, total: int) -> dict[str, torch.Tensor]:
    """A step's statistics as this rank's share of the global batch's: means (loss, terms) times
    local/total, counts (`correct`) as they are; summed over ranks they are the global batch's."""
    if world_size() == 1:
        return stats
    return {k: v if k == "correct" else v * (local / total) for k, v in stats.items()}


def sum_over_ranks(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Epoch sums of weight_stats, added up over ranks (one all-reduce per epoch)."""
    if world_size() == 1:
        return sums
    keys = sorted(sums)
    values = torch.stack([sums[k].detach().double() for k in keys])
    dist.all_reduce(values)
    return {k: v.to(sums[k].dtype) for k, v in zip(keys, values)}


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
