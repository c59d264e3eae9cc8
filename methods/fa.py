"""fa: feedback alignment (Lillicrap et al. 2016, Nat. Commun. 7:13276), a fixed random B per layer."""

import torch.nn.functional as F

from bench import Method, Option
from bench.layers import like_weight, register_feedback, swap_layers
from bench.local import step_stats
from bench.measure.locality import Locality


def _fixed_feedback(layer):
    return layer.fa_B


class FA(Method):
    """delta_{l-1} = (B_l^T delta_l) * f'(z_{l-1}): the error reaches a layer's input through a fixed
    random B_l of W_l's shape instead of W_l; each weight still gets delta_l h_{l-1}^T.

    Every Linear and Conv2d (the head included, whose B carries the error into the last block) is
    swapped (bench.layers.swap_layers); a conv's input gradient is the transposed convolution with
    B's kernel. [suite] B_l is uniform with the standard deviation of W_l at init (so the backward has
    the forward's scale whatever init the arch uses), from the run's feedback generator; `init:
    gaussian` draws it normal with that deviation; `init: xavier` Xavier-uniform for W_l's shape,
    BioTorch's B under its `init: xavier` (`biotorch/layers/fa_constructor/linear.py`).
    """

    locality = Locality(transport="none", broadcast=False, locking="backward", auxiliary=False)

    options = {
        "init": Option(
            "uniform",
            "distribution of B: uniform or gaussian with W's standard deviation at init, "
            "or xavier: Xavier-uniform for W's shape (BioTorch's)",
            choices=("uniform", "gaussian", "xavier"),
        ),
        "scale": Option(1.0, "multiplier on every B", above=0.0),
    }

    def prepare(self, model, num_classes, generator):
        def draw(layer):
            register_feedback(layer, "fa_B", like_weight(layer, generator, self.init) * self.scale)

        swap_layers(model, _fixed_feedback, attach=draw)
        return model

    def step(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()  # through each swapped layer's B: the rule is entirely in the backward
        return step_stats(loss, logits, y)
