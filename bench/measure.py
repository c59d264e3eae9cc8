"""Measurements a record carries: parameter counts, memory, alignment with BP, per-layer ranks."""
from __future__ import annotations

import resource
import sys

import torch
import torch.nn.functional as F
from torch import nn

from bench.layers.svd import SVDLayer, svd_layers
from bench.models import BlockNet


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def param_counts(model: BlockNet) -> dict[str, int]:
    """trainable (parameters with requires_grad), feedback (fixed buffers in model.feedback) and
    inference (what a deployed network stores: SVD layers in their cheapest form, s folded in)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    feedback = sum(b.numel() for b in model.feedback.buffers())
    svd = [layer for _, layer in svd_layers(model)]
    inside_svd = sum(p.numel() for layer in svd for p in layer.parameters())
    inference = sum(p.numel() for p in model.parameters()) - inside_svd + sum(l.inference_params() for l in svd)
    return {"trainable_params": trainable, "feedback_params": feedback, "inference_params": inference}


class SavedTensorBytes:
    """Counts the bytes autograd saves for backward inside the `with` block.

    Each storage is counted once; parameter and buffer storages are excluded, since the model
    holds them anyway: what remains is the activation memory a training step costs.
    """

    def __init__(self, model: nn.Module):
        self.exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        self.seen: set[int] = set()
        self.bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude and ptr not in self.seen:
            self.seen.add(ptr)
            self.bytes += storage.nbytes()
        # Detached: handing autograd back the tensor itself ties a saved output to its own grad_fn, a
        # reference cycle that keeps the step's graph (and its stale AccumulateGrad shapes) alive.
        return tensor.detach()

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def memory_breakdown(model: nn.Module, optimizer: torch.optim.Optimizer, saved_bytes: int,
                     device: torch.device, training_peak: int = 0) -> dict:
    """Bytes of parameters, gradients, optimizer state, feedback and saved activations, and the peak.

    On CUDA the peak is the largest max_memory_allocated over the training epochs (`training_peak`:
    evaluation and probes excluded, the resident dataset included); on CPU it is the process's peak
    resident set, which cannot be reset and so covers everything the process did.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    if device.type == "cuda":
        peak, peak_kind = training_peak, "cuda_max_memory_allocated_in_training"
    else:
        # Linux reports ru_maxrss in KiB, macOS in bytes: the whole process's peak resident set.
        scale = 1 if sys.platform == "darwin" else 1024
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "process_peak_rss"
    return {
        "params": tensor_bytes(model.parameters()),
        "grads": tensor_bytes(trainable),
        "optimizer_state": tensor_bytes(state),
        "feedback": tensor_bytes(model.feedback.buffers()) if hasattr(model, "feedback") else 0,
        "saved_activations": saved_bytes,
        "peak": int(peak),
        "peak_kind": peak_kind,
        "device": str(device),
    }


def alignment_with_bp(model: BlockNet, method, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per block: mean over the probe batch of cos(method's signal at h_i, true dCE/dh_i)
    (at the pre-activation instead of h_i for a rule whose `signal_at` says so).

    Runs in eval mode (BatchNorm statistics untouched) and leaves every .grad as it was.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            outputs, logits = model.forward_blocks(x, at=getattr(method, "signal_at", "output"))
            true = torch.autograd.grad(F.cross_entropy(logits, y), outputs)
            signals = method.block_signals(model, outputs, logits.detach(), y) or true
            return [_mean_cosine(s.flatten(1).float(), t.flatten(1).float()) for s, t in zip(signals, true)]
    finally:
        model.train(was_training)


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
