"""usf: uniform sign-concordant feedback (Liao, Leibo & Poggio 2016, AAAI), B_l = sign(W_l) * sigma_l."""

import torch.nn.functional as F

from bench import Method
from bench.layers.sign import sign_options, swap_sign_layers
from bench.local import step_stats
from bench.measure.locality import Locality


class USF(Method):
    """delta_{l-1} = (B_l^T delta_l) * f'(z_{l-1}) with B_l = sign(W_l) * sigma_l, the sign of the current W_l.

    Every Linear and Conv2d (the head included) is swapped; each weight still gets delta_l h_{l-1}^T.
    sigma_l is the standard deviation of W_l at init: BioTorch's `scaling_factor` for usf
    (`biotorch/layers/fa_constructor/linear.py`), which keeps a deep backward finite; [suite] measured
    from the arch's W_l rather than from BioTorch's init formula (bench/layers/sign.py).
    """

    locality = Locality(transport="sign(W)", broadcast=False, locking="backward", auxiliary=False)

    options = sign_options()  # scale and init, as usf, brsf and frsf all take them

    def prepare(self, model, num_classes, generator):
        swap_sign_layers(model, random=False, scale=self.scale, sigma=self.init)
        return model

    def step(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()  # through each swapped layer's sign(W) * sigma
        return step_stats(loss, logits, y)
