"""Memory a record carries: bytes saved for backward in a training step (counted with saved-tensor hooks),
the host's resident-set growth over an epoch, and the breakdown into parameters, gradients, optimizer
state, feedback and saved activations."""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn

from bench.layers.feedback import feedback_tensors
from bench.local import auxiliary_parameters
from bench.measure.network import network_parameters


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class SavedTensorBytes:
    """Counts the bytes of activations a step holds for backward inside the `with` block: the peak.

    Each storage counts once while autograd holds a saved reference to it (the saved references are
    wrapped, so freeing a graph is seen); parameter and buffer storages are excluded, since the model
    holds them anyway: what remains is the activation memory a training step costs. With one backward
    call (BP, every rule's `step`) nothing saved is freed before it, so the peak is every saved
    storage; a blockwise step frees each block's graph before the next (bench/run/blockwise.py) and adds
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
    """Bytes of parameters, gradients, optimizer state, feedback, auxiliary modules and saved
    activations, and the peak.

    `params` is the network's parameters; `feedback` every feedback tensor (fixed or learned); `grads`
    the gradients of everything the optimizer updates (learned feedback included) but the auxiliary
    modules, and `optimizer_state` its state of those; `auxiliary` the auxiliary modules' parameters,
    gradients and optimizer state together (bench.local.register_auxiliary; 0 for a rule without any).

    On CPU, where /proc allows it, the peak is the largest growth of the resident set over a training
    epoch (`training_peak`, HostPeak: what the steps allocated, not the process's libraries and data).
    On CUDA the peak is the largest max_memory_allocated over the training epochs (`training_peak`:
    evaluation and probes excluded, the resident dataset included; None without one: null, never 0);
    on CPU without /proc it is the process's peak resident set, which cannot be reset and so covers
    everything the process did.
    """
    auxiliary = {id(p): p for _, p in auxiliary_parameters(model)}
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in auxiliary]
    network = [p for _, p in network_parameters(model)]
    state = [
        v
        for p, s in optimizer.state.items()
        if id(p) not in auxiliary
        for v in s.values()
        if torch.is_tensor(v)
    ]
    auxiliary_state = [
        v
        for p, s in optimizer.state.items()
        if id(p) in auxiliary
        for v in s.values()
        if torch.is_tensor(v)
    ]
    grads = [p for p in auxiliary.values() if p.requires_grad]
    if device.type == "cuda":
        peak, peak_kind = training_peak, "cuda_max_memory_allocated_in_training"
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
        "auxiliary": tensor_bytes([*auxiliary.values(), *grads, *auxiliary_state]),
        "saved_activations": saved_bytes,
        "peak": int(peak) if peak is not None else None,  # unmeasured: null, not 0
        "peak_kind": peak_kind,
        "device": str(device),
    }
