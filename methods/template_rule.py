"""template_rule: a working, documented example of a learning rule; copy it to methods/<your_rule>.py.

Files starting with `template_` are skipped by discovery, so this one never joins a grid; a copy under
another name does, with no other edit (tests/test_contract.py trains such a copy). The contract every
rule follows is the docstring of bench.Method (bench/method.py); the README's "Adding a learning rule"
walks through it.

The rule here is backpropagation with Gaussian noise added to every gradient ("noisy BP"), chosen
because it touches every hook a rule may need: a declared option, a feedback buffer drawn from the
seeded generator in `prepare`, randomness in `step` from `self.generator`, and private state that a
resumed run must restore. For other shapes of rule, see methods/dfa.py (signals delivered at block
outputs, one backward call: bench.local), methods/fa.py (a backward of its own: bench.layers.swap_layers)
and methods/dgl.py (modules that learn from local losses through auxiliary classifiers:
bench.local.register_auxiliary, the shared `modules` option, the `module_loss` hook).
"""

import torch
import torch.nn.functional as F

from bench import Method, Option
from bench.local import step_stats
from bench.measure.locality import Locality


class NoisyBP(Method):
    """BP whose gradient g gets sigma_t * ||g|| / sqrt(numel) * N(0, 1) per entry [template example].

    sigma_t = noise / sqrt(1 + t / 100) after t steps (annealed noise), times a per-class multiplier.
    """

    # What the rule needs, declared for `bench list` and docs/methods.md's locality audit (every rule must
    # say; the contract test refuses one that does not): BP's backward carries the error down through W^T,
    # so each block waits for the forward and backward of the blocks above it (bench/measure/locality.py).
    locality = Locality(transport="W^T", broadcast=False, locking="backward", auxiliary=False)

    # Declared options: the default fixes the type; bounds and choices are checked with a message that
    # names the option. Resolved values become attributes (self.noise).
    options = {
        "noise": Option(0.1, "relative standard deviation of the gradient noise", minimum=0.0),
    }

    def prepare(self, model, num_classes, generator, in_shape):
        # Runs once on the CPU before the model moves to its device; `in_shape` is one input's shape
        # (C x H x W, or D), unused here. Anything random comes from `generator` (seeded from the run
        # seed). A buffer is counted as feedback wherever it is registered; this one only shows how (a
        # K-vector of per-class noise multipliers). Training-only modules (a local classifier head)
        # go through bench.local.register_auxiliary instead: they are counted apart, as auxiliary.
        model.feedback.register_buffer(
            "template_class_scale", 1 + 0.1 * torch.rand(num_classes, generator=generator)
        )
        self.steps = (
            0  # private state: saved by state_dict below, so a resumed run continues the count
        )
        return model

    def step(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        # The step count is what makes this rule stateful: without state_dict, a resumed run would restart
        # the annealing at t = 0 and differ from an uninterrupted one (the contract test checks this).
        scale = (
            self.noise
            / (1 + self.steps / 100) ** 0.5
            * model.feedback.template_class_scale[y].mean()
        )
        for p in model.parameters():
            if p.grad is None:
                continue
            # self.generator lives on the run's device and is checkpointed: never use the global RNG.
            noise = torch.randn(p.shape, generator=self.generator, device=p.device, dtype=p.dtype)
            p.grad += scale * p.grad.norm() / p.numel() ** 0.5 * noise
        self.steps += 1
        return {**step_stats(loss, logits, y), "noise_scale": scale.detach()}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]
