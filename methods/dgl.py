"""dgl: Decoupled Greedy Learning (Belilovsky, Eickenberg & Oyallon, ICML 2020; code: eugenium/DGL)."""

import math

import torch.nn.functional as F
from torch import nn

from bench import Method, Option
from bench.local import MODULES, module_losses_step, register_auxiliary, seeded
from bench.measure.locality import Locality

AUXILIARIES = ("mlp-sr", "linear")


class DGL(Method):
    """Each module learns from its own auxiliary classifier's CE, the last from the head's; inputs detached.

    No gradient crosses a module boundary: module i's update never depends on anything above it.

    Modules: `modules` contiguous groups of blocks (0: one per block, the paper's layer-wise DGL).
    Auxiliary nets [paper, code]: `mlp-sr`, their CIFAR MLP-SR-aux (auxiliary_nets_study/models.py,
    auxillary_classifier2 with n_lin=3, mlp_layers=3): average-pool the module's output to a quarter of
    its side, three 1x1 conv-BN-ReLU of its width, average-pool to 2x2, then three Linear-BN-ReLU of
    4 x width and a Linear to the classes; `linear`: global average pool and one Linear. A flat (N x D)
    module output [suite] gets the MLP part alone (three Linear-BN-ReLU of width D, a Linear), or one
    Linear. Their init (PyTorch's defaults), drawn from the run's feedback stream [suite].
    """

    blockwise = True  # every module learns from module_loss alone: `locality: blockwise` can run it
    # The labels reach every module's auxiliary head; no module waits for the ones above it.
    locality = Locality(transport="none", broadcast=True, locking="none", auxiliary=True)

    options = {
        "modules": MODULES,
        "aux": Option(
            "mlp-sr",
            "each module's auxiliary classifier: DGL's CIFAR MLP-SR-aux, or global pool + linear",
            choices=AUXILIARIES,
        ),
    }

    def prepare(self, model, num_classes, generator):
        ranges = self.module_ranges(model)  # a bad `modules` for this arch fails here, naming it
        shapes = model.block_output_shapes()
        with seeded(generator):
            for index, blocks in enumerate(ranges[:-1]):  # the last module has the network's head
                net = auxiliary_net(self.aux, shapes[blocks[-1]], num_classes)
                register_auxiliary(model, f"module{index + 1}", net)
        return model

    def module_loss(self, model, index, output, y):
        name = f"module{index + 1}"
        if index == len(self.module_ranges(model)) - 1:  # the trainer adds the head's cross-entropy
            return None, {}  # (with modules 1 the only module: no auxiliary net exists, dgl is bp)
        loss = F.cross_entropy(model.auxiliary[name](output), y)
        return loss, {name: loss.detach()}

    def step(self, model, x, y):
        return module_losses_step(self, model, x, y)


def auxiliary_net(kind: str, shape: tuple, num_classes: int) -> nn.Module:
    """The auxiliary classifier `kind` for a module output of per-sample `shape` (C x H x W or D)."""
    width = shape[0]
    if len(shape) == 1:
        if kind == "linear":
            return nn.Linear(width, num_classes)
        return nn.Sequential(*_mlp(width, 3), nn.Linear(width, num_classes))
    if kind == "linear":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
    side = math.ceil(shape[1] / 4), math.ceil(shape[2] / 4)  # their spatial reduction by 4
    convs = [
        layer
        for _ in range(3)
        for layer in (nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    ]
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(side),
        *convs,
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        *_mlp(4 * width, 3),
        nn.Linear(4 * width, num_classes),
    )


def _mlp(width: int, layers: int) -> list[nn.Module]:
    return [
        m
        for _ in range(layers)
        for m in (nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU())
    ]
