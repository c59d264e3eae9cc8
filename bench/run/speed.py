"""The training device (resolve_device) and the recipe's speed options (channels_last, autocast, cudnn_benchmark, compile) resolved for a device,
and how the trainer applies them. None changes what is computed beyond float rounding (bf16: more)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, fields

import torch

from bench.models import BlockNet

log = logging.getLogger("bench.run.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but no CUDA device is available; use device=cpu or auto"
        )
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
            if key == "cudnn_benchmark" and recipe.get(
                "deterministic"
            ):  # a timed pick is not reproducible
                return False
            return value == "on" or (
                value == "auto" and (device.type == "cuda" or key in AUTO_ON_CPU)
            )

        return cls(**{key: on(key) for key in SPEED_KEYS})

    def prepare(self, model: BlockNet) -> BlockNet:
        """The model in NHWC when channels_last; sets cudnn.benchmark (a process-wide switch)."""
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return (
            x.contiguous(memory_format=torch.channels_last)
            if self.channels_last and x.dim() == 4
            else x
        )

    def context(self, device: torch.device):
        """bf16 autocast around a training step (forward and the method's backward), or nothing."""
        return (
            torch.autocast(device.type, torch.bfloat16)
            if self.autocast
            else contextlib.nullcontext()
        )

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
        model.forward, model.forward_blocks = (
            torch.compile(model.forward),
            torch.compile(model.forward_blocks),
        )
        try:
            with self.context(x.device):
                for cut in (True, False):
                    outputs, logits = model.forward_blocks(x, cut=cut)
                    sum(t.float().sum() for t in (*outputs, logits)).backward()
                model(x).float().sum().backward()
        except (
            Exception
        ) as error:  # compiler failures have many types; any of them means: stay eager
            log.warning(
                "torch.compile failed on %s (%s: %s); training eager",
                type(model).__name__,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
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
