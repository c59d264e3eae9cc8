"""kp_head: BP with a learned feedback matrix registered on `model.feedback` (a test rule).

The Method contract lets a rule register feedback anywhere, learned feedback included; kp registers its
B on each layer, this rule on `model.feedback`, which checkpoints must restore (tests/test_checkpoint_damage.py).
Its B stands in for nothing (the backward is BP's); like kp's, it gets its weight's gradient.
"""

import torch.nn.functional as F

from bench import Method
from bench.layers import like_weight, register_feedback
from bench.local import step_stats


class KPHead(Method):
    """BP, plus a learned B of the head's shape on model.feedback that receives the head's gradient."""

    def prepare(self, model, num_classes, generator):
        register_feedback(
            model.feedback, "kp_head_B", like_weight(model.head, generator), learned=True
        )
        return model

    def step(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        model.feedback.kp_head_B.grad = model.head.weight.grad.clone()
        return step_stats(loss, logits, y)
