"""Weight-init schemes [suite]: the recipe keys `weight_init` (the scheme) and `weight_init_scope` (which
layers it reaches).

BioTorch's `init: xavier` (`biotorch/layers/fa_constructor/linear.py`, `init_parameters`: every converted
Linear and Conv2d, the head included, gets `xavier_uniform_` weights and zero biases) is `weight_init:
xavier_uniform` with `weight_init_scope: all`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.models import SCHEMES, SCOPES
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
def initialise(model: BlockNet, scheme: str, scope: str = "hidden") -> BlockNet:
    """Re-draw every Conv2d and Linear weight within `scope` with `scheme`, biases zero; in place.

    `scope` hidden: the hidden blocks only, the head keeping its init (as the independent implementation
    of issue 17 keeps PyTorch's default there); all: the head too, every layer a rule trains (BioTorch's).
    Normalisation layers keep theirs either way. Draws come from torch's global generator, which the
    trainer seeds per run before building the model, so a scheme is as reproducible as the default.
    """
    if scheme not in SCHEMES:
        raise ValueError(
            f"bad value {scheme!r} for 'weight_init'; accepted: one of {', '.join(SCHEMES)}"
        )
    if scope not in SCOPES:
        raise ValueError(
            f"bad value {scope!r} for 'weight_init_scope'; accepted: one of {', '.join(SCOPES)}"
        )
    draw = DRAWS[scheme]
    if draw is None:
        return model
    parts = [model.blocks] if scope == "hidden" else [model.blocks, model.head]
    for module in (m for part in parts for m in part.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            draw(module.weight)
            if module.bias is not None:
                module.bias.zero_()
    return model
