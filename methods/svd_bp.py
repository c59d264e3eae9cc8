"""svd_bp: backpropagation on the SVD-parameterised network [paper baseline "SVD-BP"]."""

import torch.nn.functional as F

from bench import Method, Option
from bench.layers import convert_to_svd, factor_penalties, reduce_ranks
from bench.layers.svd import DECOMPOSITIONS
from bench.local import step_stats
from bench.measure.locality import Locality


class SVDBP(Method):
    """BP of CE + lambda_orth * L_orth (+ lambda_sparse * Hoyer(s)) with every hidden layer as U diag(s) V^T.

    Separates low-rank parameterisation from local learning in the tables.
    """

    locality = Locality(transport="W^T", broadcast=False, locking="backward", auxiliary=False)
    keeps_layers = False  # its factorised layers replace the network's Linear and Conv2d

    options = {
        "rank_ratio": Option(1.0, "initial rank as a share of min(m, n)", above=0.0, maximum=1.0),
        "decomposition": Option("channel", "conv factorisation", choices=DECOMPOSITIONS),
        "lambda_orth": Option(0.1, "weight of L_orth [suite default]", minimum=0.0),
        "lambda_sparse": Option(
            0.0, "weight of the Hoyer sparsity of s (earlier paper version)", minimum=0.0
        ),
        "rank_epochs": Option(
            [], "epochs after which energy-threshold rank reduction runs", minimum=1
        ),
        "rank_eps": Option(0.01, "energy share rank reduction may drop", minimum=0.0, maximum=1.0),
    }

    def prepare(self, model, num_classes, generator):
        convert_to_svd(model.blocks, self.rank_ratio, self.decomposition)
        return model

    def step(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        penalty, terms = factor_penalties(model.blocks, self.lambda_orth, self.lambda_sparse)
        (loss + penalty).backward()
        return {**step_stats(loss, logits, y), **terms}

    def on_epoch_end(self, model, epoch):
        return reduce_ranks(model.blocks, self.rank_eps) if epoch in self.rank_epochs else {}
