"""dfa: Direct Feedback Alignment (Nokland 2016), in TinyDFA's one-projection form."""

import math

import torch.nn.functional as F

from bench import Method, Option
from bench.local import FEEDBACK_INITS, deliver, output_error, shared_feedback, step_stats
from bench.measure.locality import Locality
from bench.models.blocknet import SIGNAL_POINTS


class DFA(Method):
    """Each hidden block gets g_i = e B_i at its output; the head gets its true local CE gradient.

    [suite] One shared buffer B (K x max_i size_i) is drawn from the run's generator; block i uses
    its first size_i columns times 1/sqrt(size_i), so one matmul per step serves every block.
    `init: prior` is the authors' earlier feedback, uniform in [0, 1e-4) and not rescaled [prior].
    """

    locality = Locality(transport="none", broadcast=True, locking="update", auxiliary=False)

    blockwise = (
        True  # the head's CE and block_signals are the whole rule: `locality: blockwise` can run it
    )

    options = {
        "init": Option(
            "uniform",
            "feedback entries: uniform in [-1, 1), standard gaussian (both times "
            "1/sqrt(size_i)), or prior: uniform in [0, 1e-4) as is",
            choices=FEEDBACK_INITS,
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
            "dfa", shared_feedback(num_classes, self.sizes, self.init, generator)
        )
        norms = [1.0 if self.init == "prior" else 1 / math.sqrt(size) for size in self.sizes]
        self.multipliers = [self.scale * norm for norm in norms]
        return model

    def block_signals(self, model, outputs, logits, y):
        error = output_error(logits, y) / len(y)  # gradient of the batch-mean CE at the logits
        projected = error @ model.feedback.dfa  # one matmul for every block
        return [
            (projected[:, :size] * multiplier).view_as(h)
            for size, multiplier, h in zip(self.sizes, self.multipliers, outputs)
        ]

    def block_signal(self, model, index, output, logits, y):
        """Block `index`'s signal alone (blockwise locality): its columns of B, one small matmul."""
        error = output_error(logits, y) / len(y)
        size = self.sizes[index]
        return ((error @ model.feedback.dfa[:, :size]) * self.multipliers[index]).view_as(output)

    def step(self, model, x, y):
        outputs, logits = model.forward_blocks(x, cut=True, at=self.signal_at)
        loss = F.cross_entropy(logits, y)  # trains the head with its true local gradient
        deliver(loss, outputs, self.block_signals(model, outputs, logits, y))
        return step_stats(loss, logits, y)
