"""BlockNet: the one model shape every learning rule sees (a list of blocks, then a head)."""

from __future__ import annotations

import torch
from torch import nn

# Where a local rule's signal enters a block [suite]: at its output (after the activation and any
# pooling; the activation's derivative then gates the signal), or at the pre-activation (the input of
# the block's last activation module, no gating).
SIGNAL_POINTS = ("output", "preactivation")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardswish)


class BlockNet(nn.Module):
    """A network h_i = blocks[i](h_{i-1}), logits = head(h_L).

    Local learning rules attach feedback at each block output; BP ignores the structure.
    `feedback` is an empty module where a method registers its fixed feedback buffers, so
    they are saved in the state_dict, moved by `.to()`, and never reach `parameters()`.
    `unstaged`: None for a network built from its stages; else why its blocks are not (a torchvision
    model the suite cannot cut: one block), and the rules that learn at block outputs refuse it.
    """

    unstaged: str | None = None

    def __init__(self, blocks: list[nn.Module], head: nn.Module, in_shape: tuple[int, ...]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.in_shape = tuple(in_shape)
        self.feedback = nn.Module()
        self._ends_in_activation: set[int] = set()  # blocks checked for signal_at preactivation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward_blocks(
        self, x: torch.Tensor, cut: bool = False, at: str = "output"
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per block, the tensor at signal point `at` (its output h_i by default), and the logits;
        with `cut`, every block input is detached.

        The cut is what makes a rule local: no gradient crosses a block boundary, so one
        backward call computes every block's local gradient independently.
        """
        if at not in SIGNAL_POINTS:
            raise ValueError(
                f"bad value {at!r} for 'signal_at'; accepted: one of {', '.join(SIGNAL_POINTS)}"
            )
        points = []
        for i in range(len(self.blocks)):
            point, x = self.run_block(i, x.detach() if cut else x, at)
            points.append(point)
        logits = self.head(x.detach() if cut else x)
        return points, logits

    def run_block(
        self, index: int, x: torch.Tensor, at: str = "output"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the tensor at signal point `at`, the output) of block `index` on input `x`."""
        block = self.blocks[index]
        if at == "output":
            x = block(x)
            return x, x
        captured, order = [], []
        # The last call wins: a residual block applies its one ReLU module twice, last after the sum.
        hooks = [
            self._last_activation(index).register_forward_hook(
                lambda m, inputs, out: captured.append(inputs[0]) or order.append(None)
            )
        ]
        if index not in self._ends_in_activation:  # checked once: what runs after its last call
            hooks += [
                m.register_forward_hook(lambda m, inputs, out, name=name: order.append(name))
                for name, m in block.named_modules()
                if any(True for _ in m.parameters(recurse=False))
            ]
        try:
            x = block(x)
        finally:
            for hook in hooks:
                hook.remove()
        last = max((i for i, name in enumerate(order) if name is None), default=len(order))
        after = [name for name in order[last + 1 :] if name is not None]
        if after:
            raise ValueError(
                f"signal_at 'preactivation' needs block {index} to end in its activation; layers "
                f"with parameters run after it ({', '.join(after)}), which no signal would reach"
            )
        self._ends_in_activation.add(index)
        return captured[-1], x

    def _last_activation(self, index: int) -> nn.Module:
        """The last activation module of block `index` (whose input is the block's pre-activation)."""
        found = [m for m in self.blocks[index].modules() if isinstance(m, ACTIVATIONS)]
        if not found or getattr(found[-1], "inplace", False):
            raise ValueError(
                f"signal_at 'preactivation' needs block {index} to end in an activation module "
                f"(not in place), one of {', '.join(a.__name__ for a in ACTIVATIONS)}; it has "
                f"{'an in-place one' if found else 'none'}"
            )
        return found[-1]

    @torch.no_grad()
    def block_output_shapes(self, at: str = "output") -> list[tuple[int, ...]]:
        """Per-sample shape of each block's tensor at signal point `at`, from one dry forward pass in eval mode."""
        was_training = self.training
        self.eval()
        try:
            param = next(self.parameters())
            x = torch.zeros((1, *self.in_shape), device=param.device, dtype=param.dtype)
            outputs, _ = self.forward_blocks(x, at=at)
        finally:
            self.train(was_training)
        return [tuple(h.shape[1:]) for h in outputs]
