"""frsf: fixed random-magnitude sign-concordant feedback (Moskovitz et al. 2018), B_l = sign(W_l) * |R_l|."""

import torch.nn.functional as F

from bench import Method
from bench.layers.sign import sign_options, swap_sign_layers
from bench.local import step_stats
from bench.measure.locality import Locality


class FRSF(Method):
    """delta_{l-1} = (B_l^T delta_l) * f'(z_{l-1}) with B_l = sign(W_l) * M_l, the sign of the current W_l.

    M_l ~ U(0, sqrt(3) sigma_l) (|R_l| with R_l drawn like the layer's init, sigma_l its std: BioTorch's
    frsf, `biotorch/layers/fa_constructor/linear.py`) is drawn once, at prepare, from the run's feedback
    generator and kept fixed: a feedback buffer `sign_magnitude` on each swapped layer (bench/layers/sign.py).
    """

    locality = Locality(transport="sign(W)", broadcast=False, locking="backward", auxiliary=False)

    options = sign_options()  # scale and init, as usf, brsf and frsf all take them

    def prepare(self, model, num_classes, generator):
        swap_sign_layers(model, random=True, generator=generator, scale=self.scale, sigma=self.init)
        return model

    def step(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()  # through each swapped layer's sign(W) * M
        return step_stats(loss, logits, y)
