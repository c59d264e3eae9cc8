"""Sign-concordant feedback (usf, brsf, frsf): B_l = sign(W_l) * M_l, the swap that installs it and its magnitudes.

Liao, Leibo & Poggio 2016 (AAAI, "How important is weight symmetry in backpropagation?") and
Moskovitz, Litwin-Kumar & Abbott 2018 (arXiv 1812.06488): the error reaches a layer's input through
B_l = sign(W_l) * M_l in place of W_l, the sign taken from the current W_l at every step. The
magnitudes follow BioTorch (jsalbert/biotorch, `biotorch/layers/fa_constructor/linear.py` and
`conv.py`, the `usf`/`brsf`/`frsf` branches of `forward`, and `init_parameters`):

- uniform (usf): M_l = sigma_l, "the standard deviation of the init" (BioTorch's `scaling_factor`:
  1/sqrt(3 fan_in) for PyTorch's default init, sqrt(2/(fan_in+fan_out)) for its Xavier one). A
  literal +-1 backward multiplies the error by about sqrt(3 fan_in) per layer more than W does and
  overflows at init on deep nets; with sigma_l, B_l has W_l's scale at init.
- random (brsf redrawn per batch, frsf drawn once): M_l = |R_l|, R_l drawn like the layer's init
  (BioTorch: `init.kaiming_uniform_(wb, a=sqrt(5))`, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) =
  U(-sqrt(3) sigma_l, sqrt(3) sigma_l)); so M_l ~ U(0, sqrt(3) sigma_l), with E[M^2] = sigma_l^2 as for usf.

[suite] sigma_l is measured, the standard deviation of W_l as the arch initialised it (at `prepare`),
not BioTorch's formula for its own init: the suite's archs use PyTorch's default init, whose std the
formula gives in expectation, and a measured sigma follows any other init. With the rules' option
`init: xavier`, sigma_l is BioTorch's formula under its `init: xavier` instead: sqrt(2 / (fan_in +
fan_out)) of W_l's shape (`xavier_std`), so M_l ~ U(0, sqrt(3) sigma_l) is |xavier_uniform_| as its
brsf and frsf draw it. It is a 0-d feedback buffer
(`sign_scale`), so a resumed run keeps it. [suite] M_l is a W-shaped feedback buffer
(`sign_magnitude`) for both random forms: frsf's is fixed; brsf's is redrawn in place by the rule's
`step` (from the run's generator), and the one drawn at `prepare` serves any backward before the first
step (the trainer's compile trial).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.layers.feedback import (
    feedback_layers,
    register_feedback,
    swap_layers,
    weight_std,
    xavier_std,
)
from bench.option import Option

SIGMAS = ("measured", "xavier")  # the rules' `init`: sigma_l measured from W_l, or Xavier's formula


def sign_options() -> dict[str, Option]:
    """The options usf, brsf and frsf share (one place, so the three rules cannot drift apart)."""
    return {
        "scale": Option(1.0, "multiplier on every sigma_l", above=0.0),
        "init": Option(
            "measured",
            "sigma_l: the std of W_l at prepare (measured), or xavier: sqrt(2 / (fan_in + "
            "fan_out)) of W_l's shape (BioTorch's under its init: xavier)",
            choices=SIGMAS,
        ),
    }


SCALE = "sign_scale"  # 0-d buffer: sigma_l, the std of W_l at prepare
MAGNITUDE = "sign_magnitude"  # W_l-shaped buffer: M_l >= 0 (random forms only)


def uniform_sign_feedback(layer: nn.Module) -> torch.Tensor:
    """B_l = sign(W_l) * sigma_l (usf), from the current W_l."""
    return torch.sign(layer.weight) * getattr(layer, SCALE)


def random_sign_feedback(layer: nn.Module) -> torch.Tensor:
    """B_l = sign(W_l) * M_l (brsf, frsf), from the current W_l."""
    return torch.sign(layer.weight) * getattr(layer, MAGNITUDE)


def fill_magnitude(layer: nn.Module, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`out` (W_l's shape, on the generator's device) filled in place with M_l ~ U(0, sqrt(3) sigma_l)."""
    # Drawn in W's logical (NCHW) order, then copied into `out`'s layout: a channels_last buffer filled in
    # place would take the draws in memory order, and NHWC runs would differ from NCHW ones. A tensor
    # multiply, no .item() of sigma: no device sync per layer and step.
    draw = torch.rand(out.shape, generator=generator, device=out.device, dtype=out.dtype)
    return out.copy_(draw.mul_(getattr(layer, SCALE) * math.sqrt(3.0)))


def swap_sign_layers(
    model: nn.Module,
    random: bool,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    sigma: str = "measured",
) -> list[str]:
    """Give every Linear and Conv2d under `model` the backward through sign(W_l) * M_l; their names.

    Registers sigma_l (times `scale`) on each layer, `measured` from W_l or Xavier's formula for its
    shape (`sigma`, one of SIGMAS), and, with `random`, a magnitude M_l drawn from `generator` (the
    prepare generator). Without `random` the magnitude is sigma_l itself (usf).
    """
    if random and generator is None:
        raise ValueError("random sign magnitudes need the prepare generator")
    if sigma not in SIGMAS:
        raise ValueError(f"bad value {sigma!r} for 'init'; accepted: one of {', '.join(SIGMAS)}")

    def attach(layer: nn.Module) -> None:
        own = weight_std(layer) if sigma == "measured" else xavier_std(tuple(layer.weight.shape))
        sigma_l = own * scale
        register_feedback(layer, SCALE, torch.tensor(sigma_l))
        if random:
            register_feedback(
                layer, MAGNITUDE, fill_magnitude(layer, torch.empty(layer.weight.shape), generator)
            )

    return swap_layers(
        model, random_sign_feedback if random else uniform_sign_feedback, attach=attach
    )


@torch.no_grad()
def redraw_magnitudes(model: nn.Module, generator: torch.Generator) -> None:
    """Draw every swapped layer's M_l afresh from `generator`, in place (brsf, once per batch)."""
    for _, layer in feedback_layers(model):
        fill_magnitude(layer, getattr(layer, MAGNITUDE), generator)
