"""kp: Kolen-Pollack (Akrout et al. 2019, NeurIPS), a learned B_l per layer that gets W_l's update."""

import torch.nn.functional as F

from bench import Method
from bench.layers import feedback_layers, like_weight, register_feedback, swap_layers
from bench.local import step_stats
from bench.measure.locality import Locality


def _learned_feedback(layer):
    return layer.kp_B


class KP(Method):
    """delta_{l-1} = (B_l^T delta_l) * f'(z_{l-1}) through a learned B_l of W_l's shape, which gets W_l's update.

    [paper] ("Deep learning without weight transport", Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019)
    B_l (in x out there) is updated by the transpose of W_l's update, and both get the same
    weight decay; ours is stored in W_l's shape (it stands in for W_l in the backward), so after the
    backward B_l.grad = W_l.grad (delta_l h_{l-1}^T), and the trainer's optimizer, which holds B_l as
    learned feedback (register_feedback(..., learned=True)), applies the same step and weight decay to
    both. With weight decay lambda and learning rate eta, W - B shrinks as (1 - eta lambda)^t under plain
    SGD and under AdamW (equal gradients give equal moments; the decay is decoupled), and by a linear
    recursion of the same kind with momentum; without weight decay it stays as initialised. (Adam's
    coupled L2 decay only approximately: its moments see g + lambda W and g + lambda B.)
    Every Linear and Conv2d (the head included) is swapped; biases have no feedback.
    [suite] B_l starts uniform with W_l's standard deviation at init, independent of W_l, from the
    run's feedback generator (as fa's B).
    """

    locality = Locality(transport="none", broadcast=False, locking="backward", auxiliary=False)

    def prepare(self, model, num_classes, generator):
        def draw(layer):
            register_feedback(layer, "kp_B", like_weight(layer, generator), learned=True)

        swap_layers(model, _learned_feedback, attach=draw)
        self.layers = [
            layer for _, layer in feedback_layers(model)
        ]  # found once, not on every step
        return model

    def step(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()  # W gets its true gradient; the error travels down through each B
        for layer in self.layers:
            # A copy, not the same tensor: an in-place change to one gradient (clipping) must not hit the other.
            # A frozen weight (no gradient) leaves its B as it is.
            layer.kp_B.grad = None if layer.weight.grad is None else layer.weight.grad.clone()
        return step_stats(loss, logits, y)
