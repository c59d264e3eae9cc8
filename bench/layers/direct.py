"""DFA's feedback forms: how the output error e (N x K) becomes each block's signal, and their draws.

FORMS (the dfa option `form`):
- shared [TinyDFA]: one buffer B (K x max_i size_i); block i reads its first size_i columns, so one
  matmul serves every block, and the blocks' maps share their leading columns (not independent).
- dense [suite]: an independent K x size_i matrix per block, size_i its output's element count.
- kernel [BioTorch]: each block's feedback is shaped like the layer that reads the block's output (its
  *reader*: the first Conv2d or Linear that block i+1, or the head, runs): K x in_features for a Linear;
  for a Conv2d a K x C_in x kh x kw kernel, applied to the error spread over every position of the
  reader's output (the transposed convolution of the constant map e with the reader's stride, padding
  and dilation). That is BioTorch's `dfa_backward_hook` (`biotorch/layers/dfa/conv.py` and `linear.py`),
  which replaces the gradient at every converted layer's input. The signal lands at the reader's
  input; parameter-free modules between the block output and the reader (a Flatten, the head's pool)
  carry it back with their true derivative, as autograd does in BioTorch.

INITS (the dfa option `init`), for the dense and kernel forms the tensor as stored: uniform in [-1, 1)
or standard gaussian times 1/sqrt(fan_in) (fan_in as torch counts it: size_i for a K x size_i matrix,
C_in kh kw for a kernel), `prior` uniform in [0, 1e-4) as is, `xavier` Xavier-uniform for the tensor's
shape (BioTorch's `init: xavier`). The shared form keeps its unscaled buffer and scales block i's
columns when used: 1/sqrt(size_i), 1 for prior, and for xavier sqrt(6 / (K + size_i)), so each block's
slice is Xavier-uniform for its own K x size_i shape.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from bench.layers.feedback import xavier_std, xavier_uniform

FORMS = ("shared", "dense", "kernel")
INITS = ("uniform", "gaussian", "prior", "xavier")
READERS = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Reader:
    """The layer that reads block i's output, as the kernel form needs it.

    `in_shape` is the reader's per-sample input shape; `prefix` the parameter-free modules applied to
    the block output before the reader (empty: it reads the output itself); for a conv, `out_hw` is its
    output's side lengths and `conv` its (kernel_size, stride, padding, dilation).
    """

    in_shape: tuple[int, ...]
    prefix: tuple[nn.Module, ...] = ()
    out_hw: tuple[int, int] | None = None
    conv: tuple[tuple[int, ...], ...] | None = None

    def feedback_shape(self, num_classes: int) -> tuple[int, ...]:
        """K x in_features for a Linear reader, K x C_in x kh x kw for a Conv2d one."""
        if self.conv is None:
            return (num_classes, *self.in_shape)
        return (num_classes, self.in_shape[0], *self.conv[0])


def draw(shape: tuple[int, ...], init: str, generator: torch.Generator) -> torch.Tensor:
    """A dense or kernel form's feedback tensor of `shape` (K first), drawn as `init` says (INITS)."""
    fan_in = math.prod(shape[1:])
    if init == "xavier":
        return xavier_uniform(shape, generator)
    if init == "uniform":
        return (torch.rand(shape, generator=generator) * 2 - 1) / math.sqrt(fan_in)
    if init == "gaussian":
        return torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    if init == "prior":
        return torch.rand(shape, generator=generator) * 1e-4
    raise ValueError(f"bad value {init!r} for 'init'; accepted: one of {', '.join(INITS)}")


def shared_multiplier(init: str, num_classes: int, size: int) -> float:
    """The factor on the shared buffer's first `size` columns (their entries as `shared_feedback` drew
    them: uniform in [-1, 1) for uniform and xavier)."""
    if init == "prior":
        return 1.0
    if init == "xavier":
        return math.sqrt(3.0) * xavier_std((num_classes, size))
    return 1 / math.sqrt(size)


@torch.no_grad()
def find_readers(model: nn.Module) -> list[Reader]:
    """Per block of a BlockNet, the Reader of its output: from one dry forward pass in eval mode.

    ValueError naming the block when what follows it reads its output through something other than
    parameter-free modules (no feedback kernel could be shaped like that layer).
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros((1, *model.in_shape), device=param.device, dtype=param.dtype)
        readers = []
        for i, block in enumerate(model.blocks):
            x = block(x)
            after = model.blocks[i + 1] if i + 1 < len(model.blocks) else model.head
            readers.append(_reader(i, after, x))
    finally:
        model.train(was_training)
    return readers


def _reader(index: int, after: nn.Module, h: torch.Tensor) -> Reader:
    """The Reader of block `index`'s output `h` in module `after` (the next block or the head)."""
    seen: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda m, inputs, out: seen.append((m, inputs[0], out)))
        for m in after.modules()
        if isinstance(m, READERS)
    ]
    try:
        after(h)
    finally:
        for hook in hooks:
            hook.remove()
    where = f"dfa form 'kernel': block {index}'s output"
    if not seen:
        raise ValueError(
            f"{where} is read by no Conv2d or Linear; accepted forms here: shared, dense"
        )
    # Conv2d and Linear are leaves: the first whose forward hook fires is the first that ran.
    layer, read, out = seen[0]
    prefix = () if read is h else _prefix(after, layer)
    if prefix is None or tuple(_apply(prefix, h).shape) != tuple(read.shape):
        raise ValueError(
            f"{where} (shape {tuple(h.shape[1:])}) does not reach the first layer after it "
            f"({type(layer).__name__}, input {tuple(read.shape[1:])}) through parameter-free modules "
            "alone; accepted forms here: shared, dense"
        )
    if isinstance(layer, nn.Linear):
        return Reader(tuple(read.shape[1:]), prefix)
    if layer.groups != 1 or isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise ValueError(
            f"{where} is read by a Conv2d with groups {layer.groups}, padding {layer.padding!r}, "
            f"padding_mode {layer.padding_mode!r}; the kernel form takes groups 1 and integer zero "
            "padding (as BioTorch's); accepted forms here: shared, dense"
        )
    geometry = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    return Reader(tuple(read.shape[1:]), prefix, tuple(out.shape[2:]), geometry)


def _prefix(after: nn.Module, layer: nn.Module) -> tuple[nn.Module, ...] | None:
    """The parameter-free leading children of Sequential `after` before the child holding `layer`
    (recursively), or None when there is no such chain."""
    if not isinstance(after, nn.Sequential):
        return None
    prefix: list[nn.Module] = []
    for child in after:
        if child is layer:
            return tuple(prefix)
        if any(m is layer for m in child.modules()):
            inner = _prefix(child, layer)
            return None if inner is None else (*prefix, *inner)
        if any(True for _ in child.parameters()):
            return None
        prefix.append(child)
    return None


def _apply(prefix: tuple[nn.Module, ...], h: torch.Tensor) -> torch.Tensor:
    for module in prefix:
        h = module(h)
    return h


def reader_signal(error: torch.Tensor, feedback: torch.Tensor, reader: Reader) -> torch.Tensor:
    """The kernel form's signal at the reader's input for output error `error` (N x K): N x prod(in_shape).

    For a Linear reader, e B. For a Conv2d reader, BioTorch's `conv2d_input(e spread over the output, B)`
    (B: K x C_in x kh x kw), computed without building the spread map (N x K x H_out x W_out) or the
    map of every class (K x C_in H W), either of which outgrows memory at ImageNet's K and sides: e B
    gives each kernel offset's contribution (N x C_in x kh kw) and every input position sums those of
    the offsets through which some output position reads it (`offset_masks`), as the transposed
    convolution of a map constant over the output does.
    """
    if reader.conv is None:
        return error @ feedback
    k, c_in, kh, kw = feedback.shape
    per_offset = (error @ feedback.reshape(k, -1)).view(len(error), c_in, kh * kw)
    masks = offset_masks(reader, per_offset.dtype, per_offset.device)
    return (per_offset @ masks).reshape(len(error), -1)


@functools.lru_cache(maxsize=64)
def offset_masks(reader: Reader, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(kh kw) x (H W) for a Conv2d reader: 1 where some output position reads that input position
    through that kernel offset (given its stride, padding and dilation), 0 elsewhere. Fixed by the
    reader's geometry, so built once per reader, dtype and device, not at every step."""
    (kh, kw), stride, padding, dilation = reader.conv
    one_hot = torch.eye(kh * kw, dtype=dtype, device=device).view(1, kh * kw, kh, kw)
    everywhere = torch.ones(1, 1, *reader.out_hw, dtype=dtype, device=device)
    masks = torch.nn.grad.conv2d_input(
        (1, kh * kw, *reader.in_shape[1:]), one_hot, everywhere, stride, padding, dilation
    )
    return masks.reshape(kh * kw, -1)


def to_output(reader: Reader, h: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """`signal` (N x prod(reader.in_shape)), given at the reader's input, carried back to block output
    `h` through the prefix's true derivative."""
    if all(isinstance(m, nn.Flatten) for m in reader.prefix):
        return signal.view_as(h)
    with torch.enable_grad():
        point = h.detach().requires_grad_()
        read = _apply(reader.prefix, point)
        (back,) = torch.autograd.grad(read, point, signal.view_as(read))
    return back
