"""bp: backpropagation of the mean cross-entropy through the whole network."""

import torch.nn.functional as F

from bench import Method
from bench.local import step_stats
from bench.measure.locality import Locality


class BP(Method):
    """Ordinary end-to-end backpropagation; the block structure is ignored."""

    locality = Locality(transport="W^T", broadcast=False, locking="backward", auxiliary=False)

    def step(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return step_stats(loss, logits, y)
