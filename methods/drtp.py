"""drtp: Direct Random Target Projection (Frenkel, Lefebvre & Bol 2021), in TinyDFA's one-projection form."""

import math

import torch.nn.functional as F

from bench import Method, Option
from bench.local import deliver, shared_feedback, step_stats
from bench.measure.locality import Locality
from bench.models.blocknet import SIGNAL_POINTS


class DRTP(Method):
    """Each hidden block gets g_i = -onehot(y) B_i / N at its output; the head its true local CE gradient.

    The signal projects the target, not the error: it never depends on the logits, so a block can
    update as soon as its own forward is done [paper]. The target stands in for the error's sign
    [paper]; -onehot(y) (method.md's sign) has the sign of e = softmax - onehot(y) at the target
    class. The authors' code (ChFrenkel/DirectRandomTargetProjection, function.py) hands back
    +onehot(y) B: the same rule in distribution, since B's entries are sign-symmetric.
    [suite] Divided by the batch size N, like dfa's signal (a gradient of the batch-mean loss); the
    authors' hook returns the per-sample projection unaveraged beside a batch-mean CE at the head.
    [suite] One shared buffer B (K x max_i size_i) is drawn from the run's generator; block i uses
    its first size_i columns times 1/sqrt(size_i). Row y of B is the projection of onehot(y), so
    one row gather per step (no matmul) serves every block. The authors draw each B_i
    kaiming-uniform, in [-sqrt(6 / size_i), sqrt(6 / size_i)): `init: uniform` with scale sqrt(6).
    [suite] The signal enters at the block output, after any pooling (the authors' conv blocks take
    it before the pool); `signal_at: preactivation` skips the activation's derivative.
    """

    locality = Locality(transport="none", broadcast=True, locking="none", auxiliary=False)

    blockwise = (
        True  # the head's CE and block_signals are the whole rule: `locality: blockwise` can run it
    )

    options = {
        "init": Option(
            "uniform",
            "feedback entries: uniform in [-1, 1) or standard gaussian, both times 1/sqrt(size_i)",
            choices=("uniform", "gaussian"),
        ),
        "scale": Option(1.0, "multiplier on every feedback matrix", minimum=0.0),
        "signal_at": Option(
            "output",
            "where the signal enters a block: its output, or the input of its last activation",
            choices=SIGNAL_POINTS,
        ),
    }

    def prepare(self, model, num_classes, generator):
        self.sizes = [math.prod(shape) for shape in model.block_output_shapes(self.signal_at)]
        model.feedback.register_buffer(
            "drtp", shared_feedback(num_classes, self.sizes, self.init, generator)
        )
        self.multipliers = [self.scale / math.sqrt(size) for size in self.sizes]
        return model

    def block_signals(self, model, outputs, logits, y):
        del logits  # the target alone sets the signal: that is the rule
        projected = model.feedback.drtp[y] * (
            -1.0 / len(y)
        )  # -onehot(y) B / N, every block at once
        return [
            (projected[:, :size] * multiplier).view_as(h).to(h.dtype)
            for size, multiplier, h in zip(self.sizes, self.multipliers, outputs)
        ]

    def block_signal(self, model, index, output, logits, y):
        """Block `index`'s signal alone (blockwise locality): its columns of row y of B."""
        size = self.sizes[index]
        projected = model.feedback.drtp[y, :size] * (-1.0 / len(y))
        return (projected * self.multipliers[index]).view_as(output).to(output.dtype)

    def step(self, model, x, y):
        outputs, logits = model.forward_blocks(x, cut=True, at=self.signal_at)
        loss = F.cross_entropy(logits, y)  # trains the head with its true local gradient
        deliver(loss, outputs, self.block_signals(model, outputs, logits.detach(), y))
        return step_stats(loss, logits, y)
