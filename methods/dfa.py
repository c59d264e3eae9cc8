"""dfa: Direct Feedback Alignment (Nokland 2016), in TinyDFA's shared form or BioTorch's per-layer one."""

import math

import torch.nn.functional as F

from bench import Method, Option
from bench.layers import direct
from bench.local import deliver, output_error, shared_feedback, step_stats
from bench.measure.locality import Locality
from bench.models.blocknet import SIGNAL_POINTS


class DFA(Method):
    """Each hidden block gets g_i = e B_i at its output; the head gets its true local CE gradient.

    `form` (bench/layers/direct.py): shared [suite, TinyDFA's], one buffer B (K x max_i size_i) drawn
    from the run's generator, block i using its first size_i columns, so one matmul per step serves
    every block; dense, an independent K x size_i matrix per block; kernel [BioTorch], block i's
    feedback shaped like the layer that reads its output (a conv's K x C_in x kh x kw kernel applied
    to the error spread over that conv's output). `init: prior` is the authors' earlier feedback,
    uniform in [0, 1e-4) and not rescaled [prior]; `init: xavier` is BioTorch's.
    """

    locality = Locality(transport="none", broadcast=True, locking="update", auxiliary=False)

    blockwise = (
        True  # the head's CE and block_signals are the whole rule: `locality: blockwise` can run it
    )

    options = {
        "init": Option(
            "uniform",
            "feedback entries: uniform in [-1, 1), standard gaussian (both times "
            "1/sqrt(fan_in)), prior: uniform in [0, 1e-4) as is, or xavier: Xavier-uniform "
            "for each block's matrix or kernel (BioTorch's)",
            choices=direct.INITS,
        ),
        "form": Option(
            "shared",
            "shared: one buffer whose leading columns every block reads (TinyDFA's); dense: an "
            "independent matrix per block; kernel: per block, shaped like the layer reading "
            "its output, a kernel for a conv (BioTorch's)",
            choices=direct.FORMS,
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
        if self.form == "shared":
            buffer_init = "uniform" if self.init == "xavier" else self.init
            model.feedback.register_buffer(
                "dfa", shared_feedback(num_classes, self.sizes, buffer_init, generator)
            )
            self.multipliers = [
                self.scale * direct.shared_multiplier(self.init, num_classes, size)
                for size in self.sizes
            ]
            return model
        if self.form == "kernel" and self.signal_at != "output":
            raise ValueError(
                f"bad value {self.signal_at!r} for 'signal_at' with form 'kernel' (its feedback "
                "reaches the layer reading each block's output); accepted: output"
            )
        self.readers = (
            direct.find_readers(model)
            if self.form == "kernel"
            else [direct.Reader((size,)) for size in self.sizes]
        )
        for i, reader in enumerate(self.readers):
            shape = reader.feedback_shape(num_classes)
            model.feedback.register_buffer(f"dfa_{i}", direct.draw(shape, self.init, generator))
        return model

    def block_signals(self, model, outputs, logits, y):
        error = output_error(logits, y) / len(y)  # gradient of the batch-mean CE at the logits
        if self.form != "shared":
            return [self._signal(model, i, error, h) for i, h in enumerate(outputs)]
        projected = error @ model.feedback.dfa  # one matmul for every block
        return [
            (projected[:, :size] * multiplier).view_as(h)
            for size, multiplier, h in zip(self.sizes, self.multipliers, outputs)
        ]

    def block_signal(self, model, index, output, logits, y):
        """Block `index`'s signal alone (blockwise locality): its own feedback, one small matmul."""
        error = output_error(logits, y) / len(y)
        if self.form != "shared":
            return self._signal(model, index, error, output)
        size = self.sizes[index]
        return ((error @ model.feedback.dfa[:, :size]) * self.multipliers[index]).view_as(output)

    def _signal(self, model, index, error, h):
        """Dense or kernel form: e times block `index`'s map, at its reader's input, back to `h`."""
        reader = self.readers[index]
        signal = direct.reader_signal(error, getattr(model.feedback, f"dfa_{index}"), reader)
        return direct.to_output(reader, h, signal * self.scale)

    def step(self, model, x, y):
        outputs, logits = model.forward_blocks(x, cut=True, at=self.signal_at)
        loss = F.cross_entropy(logits, y)  # trains the head with its true local gradient
        deliver(loss, outputs, self.block_signals(model, outputs, logits, y))
        return step_stats(loss, logits, y)
