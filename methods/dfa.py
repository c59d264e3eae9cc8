"""dfa: Direct Feedback Alignment (Nokland 2016), in TinyDFA's one-projection form."""
import math

import torch
import torch.nn.functional as F

from bench import Method, Option
from bench.local import deliver, output_error, step_stats


class DFA(Method):
    """Each hidden block gets g_i = e B_i at its output; the head gets its true local CE gradient.

    [suite] One shared buffer B (K x max_i size_i) is drawn from the run's generator; block i uses
    its first size_i columns times 1/sqrt(size_i), so one matmul per step serves every block.
    """

    options = {
        "init": Option("uniform", "feedback entries: uniform in [-1, 1) or standard gaussian",
                       choices=("uniform", "gaussian")),
        "scale": Option(1.0, "multiplier on every feedback matrix", minimum=0.0),
    }

    def prepare(self, model, num_classes, generator):
        self.sizes = [math.prod(shape) for shape in model.block_output_shapes()]
        shape = (num_classes, max(self.sizes))
        if self.init == "uniform":
            feedback = torch.rand(shape, generator=generator) * 2 - 1
        else:
            feedback = torch.randn(shape, generator=generator)
        model.feedback.register_buffer("dfa", feedback)
        return model

    def block_signals(self, model, outputs, logits, y):
        error = output_error(logits, y) / len(y)  # gradient of the batch-mean CE at the logits
        projected = error @ model.feedback.dfa  # one matmul for every block
        return [(projected[:, :size] * (self.scale / math.sqrt(size))).view_as(h)
                for size, h in zip(self.sizes, outputs)]

    def step(self, model, x, y):
        outputs, logits = model.forward_blocks(x, cut=True)
        loss = F.cross_entropy(logits, y)  # trains the head with its true local gradient
        deliver(loss, outputs, self.block_signals(model, outputs, logits, y))
        return step_stats(loss, logits, y)
