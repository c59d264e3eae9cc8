"""BlockNet: the one model shape every learning rule sees (a list of blocks, then a head)."""
from __future__ import annotations

import torch
from torch import nn


class BlockNet(nn.Module):
    """A network h_i = blocks[i](h_{i-1}), logits = head(h_L).

    Local learning rules attach feedback at each block output; BP ignores the structure.
    `feedback` is an empty module where a method registers its fixed feedback buffers, so
    they are saved in the state_dict, moved by `.to()`, and never reach `parameters()`.
    """

    def __init__(self, blocks: list[nn.Module], head: nn.Module, in_shape: tuple[int, ...]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.in_shape = tuple(in_shape)
        self.feedback = nn.Module()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward_blocks(self, x: torch.Tensor, cut: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Block outputs [h_1..h_L] and logits; with `cut`, every block input is detached.

        The cut is what makes a rule local: no gradient crosses a block boundary, so one
        backward call computes every block's local gradient independently.
        """
        outputs = []
        for block in self.blocks:
            x = block(x.detach() if cut else x)
            outputs.append(x)
        logits = self.head(x.detach() if cut else x)
        return outputs, logits

    @torch.no_grad()
    def block_output_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample shape of each block output, from one dry forward pass in eval mode."""
        was_training = self.training
        self.eval()
        try:
            param = next(self.parameters())
            x = torch.zeros((1, *self.in_shape), device=param.device, dtype=param.dtype)
            outputs, _ = self.forward_blocks(x)
        finally:
            self.train(was_training)
        return [tuple(h.shape[1:]) for h in outputs]
