"""infopro: InfoPro (Wang, Ni, Song, Yang & Huang, ICLR 2021; code: blackfeather-wang/InfoPro-Pytorch)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench import Method, Option
from bench.local import MODULES, module_losses_step, register_auxiliary, seeded
from bench.measure.locality import Locality

# [code] Their CIFAR-10 weights (comand.sh, "ResNet-32/-110 + InfoPro"), per K: (lambda_1, lambda_2) of the
# first local module and of the (K-1)th; the modules between interpolate linearly (their resnet.py).
# K = 2 has one local module, so its second pair (0, 0 in their commands) is never used.
LAMBDAS = {
    "resnet32": {2: (5, 1, 0, 0), 4: (6, 0, 1, 2), 8: (5, 0, 0, 2), 16: (5, 0.05, 0.2, 0.5)},
    "resnet110": {2: (5, 0.5, 0, 0), 4: (1, 0, 0, 1), 8: (5, 0, 0, 1), 16: (5, 0, 0.5, 1)},
}
TEMPERATURE = 0.07  # [code] their SupConLoss at temperature = base_temperature = 0.07
FEATURES = 128  # [code] --aux_net_feature_dim 128: the aux net's hidden width (contrast's dim)
DECODER_WIDTH = 12  # [code] their Decoder's hidden channels (widen 1)


class InfoPro(Method):
    """Each local module learns from lambda_1 * reconstruction of x + lambda_2 * its auxiliary net's loss.

    Modules: `modules` contiguous groups of blocks (0: one per block); module i's input is detached, so
    no gradient crosses a module boundary; the last module learns from the head's cross-entropy alone
    [paper]. Per local module (its output h, per sample C x H x W):
    - decoder [code]: h bilinearly interpolated to x's side (align_corners), conv3x3 C->12-BN-ReLU,
      conv3x3 12->x's channels, and the binary cross-entropy of its sigmoid against x mapped to [0, 1];
      their target is the un-normalised image, ours [suite] x rescaled per channel by the batch's min and
      max (the same kind of per-channel affine map; the rule is not told the data's mean and std);
    - auxiliary net [code] (their AuxClassifier `1c2f`): conv3x3 C->2C stride 2 below 64 channels, C->C
      stride 1 from 64 [suite: their table lists 16, 32 and 64 only]-BN-ReLU, global pool, Linear to 128,
      ReLU, Linear to the classes (`aux_loss: ce`, cross-entropy) or to 128 (`contrast`: their supervised
      contrastive loss of the normalised features, temperature 0.07).
    A flat module output (D) [suite]: a linear decoder D -> x's size, and Linear D->128-ReLU-Linear.
    Weights [code]: LAMBDAS[`lambdas`] at K, linear from the first local module to the (K-1)th. A K they
    did not run [suite]: K = 2's for K = 2, else the largest of 4, 8, 16 not above K (4 for K = 3).
    Their weights were tuned for `contrast` [code]; `ce` uses the same [suite]. Init: PyTorch's defaults,
    drawn from the run's feedback stream [suite].
    """

    blockwise = True  # every module learns from module_loss alone: `locality: blockwise` can run it
    # The labels (and the input x) reach every module's auxiliary nets; no module waits for the ones above.
    locality = Locality(transport="none", broadcast=True, locking="none", auxiliary=True)

    options = {
        "modules": MODULES,
        "aux_loss": Option(
            "ce",
            "the local task term: the auxiliary classifier's cross-entropy, or their supervised contrast",
            choices=("ce", "contrast"),
        ),
        "lambdas": Option(
            "resnet32",
            "whose CIFAR-10 (lambda_1, lambda_2) per K: their ResNet-32 or ResNet-110 recipe",
            choices=tuple(LAMBDAS),
        ),
    }

    def prepare(self, model, num_classes, generator, in_shape=()):
        ranges = self.module_ranges(model)  # a bad `modules` for this arch fails here, naming it
        in_shape = tuple(in_shape) or model.in_shape  # [suite] a caller without it: the model's own
        shapes = model.block_output_shapes()
        out = num_classes if self.aux_loss == "ce" else FEATURES
        with seeded(generator):
            for index, blocks in enumerate(ranges[:-1]):  # the last module has the network's head
                shape = shapes[blocks[-1]]
                register_auxiliary(model, f"decoder{index + 1}", decoder(shape, in_shape))
                register_auxiliary(model, f"aux{index + 1}", auxiliary_net(shape, out))
        self.weights = module_weights(LAMBDAS[self.lambdas], len(ranges))
        return model

    def module_loss(self, model, index, output, y, x):
        if index >= len(self.weights):  # the last module: the trainer adds the head's cross-entropy
            return None, {}
        n = index + 1
        recon = reconstruction(model.auxiliary[f"decoder{n}"](output), x)
        task = model.auxiliary[f"aux{n}"](output)
        task = F.cross_entropy(task, y) if self.aux_loss == "ce" else sup_contrast(task, y)
        lambda_1, lambda_2 = self.weights[index]
        return lambda_1 * recon + lambda_2 * task, {
            f"recon{n}": recon.detach(),
            f"{self.aux_loss}{n}": task.detach(),
        }

    def step(self, model, x, y):
        return module_losses_step(self, model, x, y)


def module_weights(table: dict, k: int) -> list[tuple[float, float]]:
    """(lambda_1, lambda_2) of each of the K - 1 local modules: the table's pair for K (or the K the class
    docstring picks), linear from the first local module (ratio 0) to the (K-1)th (ratio 1)."""
    if k < 2:
        return []
    row = table[2] if k == 2 else table[max(key for key in (4, 8, 16) if key <= max(k, 4))]
    first, last = row[:2], row[2:]
    ratios = [i / (k - 2) if k > 2 else 0.0 for i in range(k - 1)]  # their resnet.py's ratio
    return [tuple(a * (1 - r) + b * r for a, b in zip(first, last)) for r in ratios]


class Decoder(nn.Module):
    """A module output (N x C x H x W, or N x D) to the logits of a reconstruction of x (x's shape)."""

    def __init__(self, net: nn.Module, image: tuple):
        super().__init__()
        self.net, self.image = net, tuple(image)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 2:  # [suite] flat: a linear map back to the input
            return self.net(h).view(-1, *self.image)
        h = F.interpolate(h, size=self.image[1:], mode="bilinear", align_corners=True)
        return self.net(h)


def decoder(shape: tuple, image: tuple) -> Decoder:
    """Their Decoder for a module output of per-sample `shape` and inputs of per-sample `image`."""
    if len(shape) == 1:
        return Decoder(nn.Linear(shape[0], math.prod(image)), image)
    net = nn.Sequential(
        nn.Conv2d(shape[0], DECODER_WIDTH, 3, padding=1),
        nn.BatchNorm2d(DECODER_WIDTH),
        nn.ReLU(),
        nn.Conv2d(DECODER_WIDTH, image[0], 3, padding=1),  # their Sigmoid: in the loss, with logits
    )
    return Decoder(net, image)


def auxiliary_net(shape: tuple, out: int) -> nn.Module:
    """Their AuxClassifier `1c2f` for a module output of per-sample `shape` (C x H x W or D)."""
    width = shape[0]
    mlp = [nn.Linear(width, FEATURES), nn.ReLU(), nn.Linear(FEATURES, out)]
    if len(shape) == 1:
        return nn.Sequential(*mlp)
    wide, stride = (2 * width, 2) if width < 64 else (width, 1)
    conv = [
        nn.Conv2d(width, wide, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(wide),
        nn.ReLU(),
    ]
    mlp[0] = nn.Linear(wide, FEATURES)
    return nn.Sequential(*conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), *mlp)


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """x mapped to [0, 1] per channel (dim 1 of N x C x H x W; all of it otherwise) by the batch's min
    and max: the decoder's target [suite], detached."""
    with torch.no_grad():
        dims = [d for d in range(x.dim()) if d != 1] if x.dim() == 4 else list(range(x.dim()))
        low, high = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
        return (x - low) / (high - low).clamp_min(1e-12)


def reconstruction(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Their BCE(sigmoid(decoder), target), the mean over every entry, computed from the logits."""
    return F.binary_cross_entropy_with_logits(logits, unit_range(x.float()).to(logits.dtype))


def sup_contrast(features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Their SupConLoss (one view, temperature 0.07): for each anchor i, minus the mean over the other
    samples p of its class of log(exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T)), z = features / ||.||;
    an anchor alone in its class counts 0 (their mask_sum of 1); the mean over anchors."""
    z = F.normalize(features.float(), dim=1)
    sim = z @ z.T / TEMPERATURE
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    log_prob = sim - torch.logsumexp(sim.masked_fill(eye, -math.inf), dim=1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~eye
    mean_pos = (log_prob * positive).sum(1) / positive.sum(1).clamp_min(1)
    return -mean_pos.mean()
