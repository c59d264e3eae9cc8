"""Weight-init schemes of the hidden blocks [suite]: the recipe key `weight_init`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.models import SCHEMES
from bench.models.blocknet import BlockNet

# name -> in-place init of one weight tensor. Kaiming: fan_in with the ReLU gain (std sqrt(2 / fan_in));
# Xavier: gain 1 over fan_in + fan_out. Fans as torch counts them (a conv's include its kernel's area).
DRAWS: dict[str, Callable[[torch.Tensor], object] | None] = {
    "default": None,  # the arch's own init (PyTorch's layer defaults for mlp3, smallconv, lenet)
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu"),
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
}
assert tuple(DRAWS) == SCHEMES, (
    "a weight_init scheme is declared in bench/models/__init__.py and drawn here"
)


@torch.no_grad()
def initialise(model: BlockNet, scheme: str) -> BlockNet:
    """Re-draw every Conv2d and Linear weight of the hidden blocks with `scheme`, biases zero; in place.

    The head keeps its init (as the independent implementation of issue 17 keeps PyTorch's default
    there), and so do normalisation layers. Draws come from torch's global generator, which the trainer
    seeds per run before building the model, so a scheme is as reproducible as the default.
    """
    if scheme not in SCHEMES:
        raise ValueError(
            f"bad value {scheme!r} for 'weight_init'; accepted: one of {', '.join(SCHEMES)}"
        )
    draw = DRAWS[scheme]
    if draw is None:
        return model
    for module in model.blocks.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            draw(module.weight)
            if module.bias is not None:
                module.bias.zero_()
    return model
