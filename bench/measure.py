"""Measurements a record carries: parameter counts, memory, alignment with BP, per-layer ranks."""

from __future__ import annotations

import contextlib
import copy
import math
import resource
import sys

import torch
import torch.nn.functional as F
from torch import nn

from bench.layers.feedback import exact_backward, feedback_tensors
from bench.layers.svd import SVDLayer, svd_layers
from bench.models import BlockNet


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def network_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the network itself: every parameter except learned feedback (kp's B)."""
    feedback = feedback_tensors(model)
    return [(n, p) for n, p in model.named_parameters() if n not in feedback]


def param_counts(model: BlockNet) -> dict[str, int]:
    """trainable (network parameters with requires_grad), feedback (every feedback tensor, wherever a
    rule registered it: bench.layers.feedback_tensors) and inference (what a deployed network stores:
    SVD layers in their cheapest form, s folded in)."""
    network = [p for _, p in network_parameters(model)]
    trainable = sum(p.numel() for p in network if p.requires_grad)
    feedback = sum(t.numel() for t in feedback_tensors(model).values())
    svd = [layer for _, layer in svd_layers(model)]
    inside_svd = sum(p.numel() for layer in svd for p in layer.parameters())
    inference = (
        sum(p.numel() for p in network) - inside_svd + sum(l.inference_params() for l in svd)
    )
    return {
        "trainable_params": trainable,
        "feedback_params": feedback,
        "inference_params": inference,
    }


class SavedTensorBytes:
    """Counts the bytes of activations a step holds for backward inside the `with` block: the peak.

    Each storage counts once while autograd holds a saved reference to it (the saved references are
    wrapped, so freeing a graph is seen); parameter and buffer storages are excluded, since the model
    holds them anyway: what remains is the activation memory a training step costs. With one backward
    call (BP, every rule's `step`) nothing saved is freed before it, so the peak is every saved
    storage; a blockwise step frees each block's graph before the next (bench/blockwise.py) and adds
    the tensors it holds outside autograd (`note_kept`: the block inputs and signals), counted from
    then until the end of the block or `note_released`.
    """

    _active: list[SavedTensorBytes] = []  # the counters now counting (note_kept reaches them)

    def __init__(self, model: nn.Module):
        self.exclude = {
            t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]
        }
        self.live: dict[int, list[int]] = {}  # storage pointer -> [saved references alive, bytes]
        self.kept: set[int] = set()
        self.current = 0
        self.bytes = 0  # the peak of `current`

    def _count(self, nbytes: int) -> None:
        self.current += nbytes
        self.bytes = max(self.bytes, self.current)

    def _pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        # Detached: handing autograd back the tensor itself ties a saved output to its own grad_fn, a
        # reference cycle that keeps the step's graph (and its stale AccumulateGrad shapes) alive.
        if ptr in self.exclude or (ptr in self.kept and ptr not in self.live):
            return tensor.detach()
        entry = self.live.get(ptr)
        if entry is None:
            self.live[ptr] = [1, storage.nbytes()]
            if ptr not in self.kept:
                self._count(storage.nbytes())
        else:
            entry[0] += 1
        return _Saved(tensor.detach(), self, ptr)

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del self.live[ptr]
            if ptr not in self.kept:
                self.current -= entry[1]

    def keep(self, tensors) -> None:
        """Count `tensors` (kept by the step outside autograd) until the end of the `with` block."""
        for tensor in tensors:
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in self.exclude or ptr in self.kept:
                continue
            self.kept.add(ptr)
            if ptr not in self.live:  # a live saved storage is counted already
                self._count(storage.nbytes())

    def release(self, tensors) -> None:
        """`tensors`, counted by `keep`, are no longer held by the step."""
        for tensor in tensors:
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in self.kept:
                self.kept.discard(ptr)
                if ptr not in self.live:
                    self.current -= storage.nbytes()

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._hooks.__enter__()
        SavedTensorBytes._active.append(self)
        return self

    def __exit__(self, *exc):
        SavedTensorBytes._active.remove(self)
        self._hooks.__exit__(*exc)


class _Saved:
    """A saved tensor as autograd holds it while a SavedTensorBytes counts: tells the counter when freed."""

    __slots__ = ("tensor", "counter", "ptr")

    def __init__(self, tensor: torch.Tensor, counter: SavedTensorBytes, ptr: int):
        self.tensor, self.counter, self.ptr = tensor, counter, ptr

    def __del__(self):
        self.counter._release(self.ptr)


def _unpack(saved):
    return saved.tensor if isinstance(saved, _Saved) else saved


def note_kept(tensors) -> None:
    """A step holds `tensors` outside autograd (until it ends or note_released): every active
    SavedTensorBytes counts them."""
    for counter in SavedTensorBytes._active:
        counter.keep(tensors)


def note_released(tensors) -> None:
    """The step no longer holds `tensors` (counted by note_kept)."""
    for counter in SavedTensorBytes._active:
        counter.release(tensors)


class HostPeak:
    """Growth of the process's resident set over a stretch of CPU training: the run's own allocations.

    Linux resets the peak resident set (VmHWM) when "5" is written to /proc/self/clear_refs; the peak
    after the stretch minus the resident set at its start is what the training steps allocated (the
    model, data and libraries loaded before it excluded). `growth()` is None where /proc does not offer
    this (then the record falls back to the whole process's peak, and says so).
    """

    def __init__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.start = _status_kib("VmRSS")
        except OSError:
            self.start = None

    def growth(self) -> int | None:
        if self.start is None:
            return None
        try:
            return max(0, _status_kib("VmHWM") - self.start) * 1024
        except OSError:
            return None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def memory_breakdown(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    saved_bytes: int,
    device: torch.device,
    training_peak: int | None = None,
) -> dict:
    """Bytes of parameters, gradients, optimizer state, feedback and saved activations, and the peak.

    `params` is the network's parameters; `feedback` every feedback tensor (fixed or learned); `grads`
    the gradients of everything the optimizer updates (learned feedback included).

    On CPU, where /proc allows it, the peak is the largest growth of the resident set over a training
    epoch (`training_peak`, HostPeak: what the steps allocated, not the process's libraries and data).
    On CUDA the peak is the largest max_memory_allocated over the training epochs (`training_peak`:
    evaluation and probes excluded, the resident dataset included); on CPU it is the process's peak
    resident set, which cannot be reset and so covers everything the process did.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    network = [p for _, p in network_parameters(model)]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    if device.type == "cuda":
        peak, peak_kind = training_peak or 0, "cuda_max_memory_allocated_in_training"
    elif training_peak is not None:
        peak, peak_kind = training_peak, "cpu_rss_growth_in_training"
    else:
        # Linux reports ru_maxrss in KiB, macOS in bytes: the whole process's peak resident set.
        scale = 1 if sys.platform == "darwin" else 1024
        peak, peak_kind = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "process_peak_rss",
        )
    return {
        "params": tensor_bytes(network),
        "grads": tensor_bytes(trainable),
        "optimizer_state": tensor_bytes(state),
        "feedback": tensor_bytes(feedback_tensors(model).values()),
        "saved_activations": saved_bytes,
        "peak": int(peak),
        "peak_kind": peak_kind,
        "device": str(device),
    }


def alignment_with_bp(model: BlockNet, method, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per block: mean over the probe batch of cos(method's signal at h_i, true dCE/dh_i)
    (at the pre-activation instead of h_i for a rule whose `signal_at` says so); NaN for every block
    of a rule that defines no block signals (`block_signals` returns None).

    Runs in eval mode (BatchNorm statistics untouched), with every swapped layer's exact backward,
    and leaves every .grad as it was.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), exact_backward():
            # The class's eager forward_blocks, not a compiled one: a compiled graph hands back the block
            # outputs beside the logits, not on their autograd path, so dCE/dh_i would not exist.
            outputs, logits = type(model).forward_blocks(
                model, x, at=getattr(method, "signal_at", "output")
            )
            signals = method.block_signals(model, outputs, logits.detach(), y)
            if signals is None:
                return [math.nan] * len(outputs)
            true = torch.autograd.grad(F.cross_entropy(logits, y), outputs)
            return [
                _mean_cosine(s.flatten(1).float(), t.flatten(1).float())
                for s, t in zip(signals, true)
            ]
    finally:
        model.train(was_training)


def update_alignment(
    model: BlockNet, method, x: torch.Tensor, y: torch.Tensor, context=contextlib.nullcontext
) -> dict[str, float]:
    """Per layer (a module owning trainable network parameters): the cosine between the update the rule's
    `step` produces on the probe batch (x, y) and the true BP gradient of the same parameters.

    `context()` wraps both passes (the training step's bf16 autocast, when on), so the measured update is
    the one that trains; x comes in the training batches' memory layout.

    Both are taken in train mode from the same weights; the BP gradient of the batch-mean cross-entropy
    runs with every swapped layer's exact backward (bench.layers.exact_backward), never through the
    rule's own. Everything the step changes is restored: parameters, buffers (BatchNorm statistics, a
    rule's redrawn feedback), gradients, the rule's generator and its private state, so measuring never
    changes training. NaN where a layer's BP gradient or update is exactly 0 (undefined); exactly 1.0 where they are equal.
    """
    # Every tensor the step may change, non-persistent buffers included (state_dict would miss those).
    state = {
        name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    grads = {p: p.grad for p in model.parameters()}
    generator, private = method.generator.get_state(), copy.deepcopy(method.state_dict())
    was_training = model.training
    network = {
        id(p) for _, p in network_parameters(model)
    }  # kp's learned B is no network parameter
    layers = {
        name: [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) in network]
        for name, module in model.named_modules()
    }
    layers = {name: ps for name, ps in layers.items() if ps}
    try:
        model.train()
        with torch.enable_grad():
            model.zero_grad(set_to_none=True)
            with context():
                method.step(model, x, y)
            update = {name: _flat(ps) for name, ps in layers.items()}
            model.zero_grad(set_to_none=True)
            with exact_backward(), context():
                F.cross_entropy(model(x), y).backward()
            true = {name: _flat(ps) for name, ps in layers.items()}
        return {name: _cosine(update[name], true[name]) for name in layers}
    finally:
        with torch.no_grad():
            current = dict([*model.named_parameters(), *model.named_buffers()])
            for name, value in state.items():
                current[name].copy_(value)
        for p, grad in grads.items():
            p.grad = grad
        method.generator.set_state(generator)
        method.load_state_dict(private)
        model.train(was_training)


def _flat(params: list[torch.Tensor]) -> torch.Tensor:
    """The layer's gradients as one float64 vector (a missing gradient counts as zeros)."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().flatten()
            for p in params
        ]
    )


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) in [-1, 1]; exactly 1.0 for equal vectors, NaN where either is 0."""
    if torch.equal(a, b):
        return 1.0 if a.any() else math.nan
    norms = a.norm() * b.norm()
    if norms == 0:
        return math.nan
    return max(-1.0, min(1.0, (a @ b / norms).item()))


def _mean_cosine(signal: torch.Tensor, true: torch.Tensor) -> float:
    """Mean per-sample cosine over the samples where both vectors are nonzero.

    A fitted sample's true gradient can underflow to exactly 0; its cosine is undefined, not 0.
    """
    # float64 and no eps clamp (unlike F.cosine_similarity): fitted samples have gradients far below 1e-8.
    signal, true = signal.double(), true.double()
    norms = signal.norm(dim=1) * true.norm(dim=1)
    defined = norms > 0
    if not defined.any():
        return float("nan")
    return ((signal * true).sum(dim=1)[defined] / norms[defined]).mean().item()


def layer_ranks(model: nn.Module) -> dict[str, int]:
    """Rank of every SVD layer, by qualified name (empty for dense networks)."""
    return {name: layer.rank for name, layer in svd_layers(model) if isinstance(layer, SVDLayer)}
