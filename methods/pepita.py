"""pepita: PEPITA, error-driven input modulation (Dellaferrera & Kreiman, ICML 2022; code GiorgiaD/PEPITA)."""

import math

import torch
import torch.nn.functional as F

from bench import Method, Option
from bench.local import deliver, frozen_statistics, output_error, step_stats
from bench.measure.locality import Locality
from bench.models.blocknet import ACTIVATIONS


class PEPITA(Method):
    """Two forward passes, the second on x + e F^T; each layer learns from the passes' difference.

    Per batch of N [paper, code]: the standard pass gives h_l = act(z_l) and e = softmax(logits) - onehot(y);
    the modulated pass runs on x_mod = x + e F^T (F: D x K, fixed) and gives h_l^mod. Hidden layer l gets
    dW_l = (h_l - h_l^mod)^T h_{l-1}^mod / N (the first layer: x_mod in place of h_0^mod); the last gets
    dW_L = e_mod^T h_{L-1}^mod / N, e_mod the modulated pass's error. No activation derivative gates
    h_l - h_l^mod. Signs as their code, whose step is W -= lr (h_l - h_l^mod)^T h_{l-1}^mod / N.
    [code] F uniform in [-1, 1) x sqrt(6 / D) x `scale` (0.05), D the input's size, drawn from the run's
    feedback generator [suite]; x + e F^T as their code writes it (F is symmetric about 0).
    [suite] As the suite runs it: (h_l - h_l^mod) / N is delivered at the input of block l's last
    activation (z_l^mod) on the modulated pass, block l's input detached, in one backward call: on a
    Linear-act block this is the formula above, and a bias gets the batch mean of h_l - h_l^mod (their
    nets have none). The head learns from the modulated pass's mean cross-entropy (its gradient is the
    dW_L above). Inside a block (BatchNorm, a conv, a residual block) the signal flows back through the
    block's own layers, as every local rule's does. [code] For a conv block (a spatial signal) the
    signal is also divided by its positions H x W: their compute_delta_w_conv averages over output
    positions. BatchNorm's running statistics move on the standard pass only.
    """

    # The error is taken at the output and sent to the input: block l waits for the forward pass above it
    # (the first one), never for a backward through it.
    locality = Locality(transport="none", broadcast=True, locking="update", auxiliary=False)

    signal_at = "preactivation"  # where h_l - h_l^mod enters a block (block_signals, update)

    options = {
        "scale": Option(
            0.05,
            "F's entries: uniform in [-1, 1) times sqrt(6 / input size) times this",
            minimum=0.0,
        ),
    }

    def prepare(self, model, num_classes, generator, in_shape=()):
        # The trainer passes in_shape; tests/conftest.py's `make` calls prepare with three arguments.
        size = math.prod(in_shape or model.in_shape)
        bound = math.sqrt(6 / size) * self.scale
        model.feedback.register_buffer(
            "pepita", (torch.rand(size, num_classes, generator=generator) * 2 - 1) * bound
        )
        return model

    def modulated(self, model, x, logits, y):
        """x_mod = x + e F^T: the input modulated by the first pass's error (N x C x H x W or N x D)."""
        error = output_error(logits, y)
        return x + (error @ model.feedback.pepita.T).view_as(x).to(x.dtype)

    def signals(self, model, points, modulated):
        """Per block, (act(z_l) - act(z_l^mod)) / N at its last activation's input, over H x W positions
        as well for a spatial one: the gradient the block's layers learn from."""
        found = []
        for block, z, z_mod in zip(model.blocks, points, modulated):
            act = [m for m in block.modules() if isinstance(m, ACTIVATIONS)][-1]
            positions = math.prod(z.shape[2:])  # 1 for a flat (N x D) signal
            found.append((act(z) - act(z_mod)).detach() / (len(z) * positions))
        return found

    def block_signals(self, model, outputs, logits, y, x):
        """The signal PEPITA delivers at each block's pre-activation `outputs`, from a modulated pass
        on `x` (run without a graph, normalisation statistics left as they were)."""
        with torch.no_grad(), frozen_statistics(model):
            modulated, _ = model.forward_blocks(
                self.modulated(model, x, logits, y), at=self.signal_at
            )
        return self.signals(model, outputs, modulated)

    def step(self, model, x, y):
        with torch.no_grad():  # the standard pass: no graph; BatchNorm statistics move here only
            points, logits = model.forward_blocks(x, at=self.signal_at)
        loss = F.cross_entropy(logits, y)
        # The modulated pass, each block on its detached input, and its backward.
        with frozen_statistics(model):
            modulated, h = [], self.modulated(model, x, logits, y)
            for index in range(len(model.blocks)):
                point, h = model.run_block(index, h.detach(), self.signal_at)
                modulated.append(point)
            modulated_loss = F.cross_entropy(model.head(h.detach()), y)
            deliver(modulated_loss, modulated, self.signals(model, points, modulated))
        return step_stats(loss, logits, y)
