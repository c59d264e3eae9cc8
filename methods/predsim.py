"""predsim: local prediction and similarity-matching losses (Nøkland & Eidnes, ICML 2019; code:
anokland/local-loss)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench import Method, Option
from bench.local import MODULES, module_losses_step, register_auxiliary, seeded
from bench.measure.locality import Locality

LOSSES = ("predsim", "pred", "sim")


class PredSim(Method):
    """Each module learns from its own pred and/or sim loss, the last from the head's CE; inputs detached.

    pred [paper]: the cross-entropy of a linear classifier on the module's output, feature maps first
    average-pooled to at most `dim_in_decoder` features by their kernel-doubling rule [code]
    (`decoder_pool`); the classifier's weight starts at zero [code]. sim [paper]: the mean squared
    difference (F.mse_loss [code]) between the batch's similarity matrix of the projected output and
    that of the one-hot targets; the projection is a 3x3 conv (C to C, no bias) for feature maps, a
    Linear (D to D, no bias) for flat outputs [code]; the similarity is their "adjusted cosine" [code]:
    the cosine of mean-centred rows, a feature map (more than 3 channels, height above 1) summarised by
    each channel's standard deviation over positions (`similarity`). predsim = (1 - beta) pred +
    beta sim, beta = 0.99 [paper, code]. Modules: `modules` contiguous groups of blocks (0: one per
    block, the paper's layer-wise training). [suite] the last module learns through the network's head
    (their last hidden layer has its own local loss, their head (1 - beta) x CE on its detached input).
    Auxiliary nets: PyTorch's default init, drawn from the run's feedback stream [suite].
    """

    blockwise = True  # every module learns from module_loss alone: `locality: blockwise` can run it
    # The labels reach every module's auxiliary heads; no module waits for the ones above it.
    locality = Locality(transport="none", broadcast=True, locking="none", auxiliary=True)

    options = {
        "modules": MODULES,
        "loss": Option(
            "predsim",
            "each module's local loss: (1 - beta) pred + beta sim, pred alone or sim alone",
            choices=LOSSES,
        ),
        "beta": Option(0.99, "predsim: the weight of sim", minimum=0.0, maximum=1.0),
        "dim_in_decoder": Option(
            4096, "pred: feature maps average-pooled to at most this many features", minimum=1
        ),
    }

    def prepare(self, model, num_classes, generator):
        ranges = self.module_ranges(model)  # a bad `modules` for this arch fails here, naming it
        shapes = model.block_output_shapes()
        self.num_classes = num_classes  # the one-hot targets' width (prepare runs on resume too)
        with seeded(generator):
            for index, blocks in enumerate(ranges[:-1]):  # the last module has the network's head
                shape = shapes[blocks[-1]]
                if self.loss != "sim":
                    net = pred_decoder(shape, num_classes, self.dim_in_decoder)
                    register_auxiliary(model, f"pred{index + 1}", net)
                if self.loss != "pred":
                    register_auxiliary(model, f"sim{index + 1}", sim_projection(shape))
        return model

    def module_loss(self, model, index, output, y):
        if index == len(self.module_ranges(model)) - 1:  # the trainer adds the head's cross-entropy
            return None, {}
        n, terms = index + 1, {}
        if self.loss != "sim":
            terms[f"pred{n}"] = F.cross_entropy(model.auxiliary[f"pred{n}"](output), y)
        if self.loss != "pred":
            projected = model.auxiliary[f"sim{n}"](output)
            terms[f"sim{n}"] = sim_loss(projected, y, self.num_classes)
        if self.loss == "predsim":
            loss = (1 - self.beta) * terms[f"pred{n}"] + self.beta * terms[f"sim{n}"]
        else:
            (loss,) = terms.values()
        return loss, {name: term.detach() for name, term in terms.items()}

    def step(self, model, x, y):
        return module_losses_step(self, model, x, y)


def similarity(h: torch.Tensor) -> torch.Tensor:
    """N x N "adjusted cosine" similarities of the batch `h` (N x D, or N x C x H x W) [code].

    A feature map with more than 3 channels and a height above 1 is first summarised by each channel's
    (unbiased) standard deviation over its positions (N x C), any other is flattened; each row is then
    centred on its own mean and the cosines of the centred rows are returned, clamped to [-1, 1].
    """
    if h.dim() == 4:
        h = h.flatten(2).std(dim=2) if h.shape[1] > 3 and h.shape[2] > 1 else h.flatten(1)
    centred = h - h.mean(dim=1, keepdim=True)
    unit = centred / (1e-8 + centred.norm(dim=1, keepdim=True))
    return (unit @ unit.T).clamp(-1, 1)


def sim_loss(projected: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The mean of (S(projected) - S(onehot(y)))^2 over the N x N entries (`similarity`'s S).

    S(onehot) is 1 for two samples of one class and -1 / (num_classes - 1) otherwise (the centred one-hot
    rows' cosine)."""
    target = similarity(F.one_hot(y, num_classes).to(projected.dtype))
    return F.mse_loss(similarity(projected), target)


def decoder_pool(shape: tuple, limit: int) -> tuple[list[nn.Module], int]:
    """Their average pooling of a C x H x W output to at most `limit` features [code], and the count.

    The kernel's height and then its width double in turn while C x ceil(H/kh) x ceil(W/kw) > limit
    (the height kernel at most H); zero padding of half a kernel where the side does not divide, counted
    in the average (AvgPool2d's default), gives exactly ceil(H/kh) x ceil(W/kw) positions.
    """
    channels, height, width = shape
    kh = kw = 1
    out_h, out_w = height, width
    while channels * out_h * out_w > limit and kh < height:
        kh *= 2
        out_h = math.ceil(height / kh)
        if channels * out_h * out_w > limit:
            kw *= 2
            out_w = math.ceil(width / kw)
    if kh == kw == 1:
        return [], channels * height * width
    pad = (kh * (out_h - height // kh)) // 2, (kw * (out_w - width // kw)) // 2
    return [nn.AvgPool2d((kh, kw), padding=pad)], channels * out_h * out_w


def pred_decoder(shape: tuple, num_classes: int, limit: int) -> nn.Module:
    """pred's classifier for a module output of per-sample `shape`: (pooling,) a Linear, weight zero."""
    pool, features = decoder_pool(shape, limit) if len(shape) == 3 else ([], shape[0])
    linear = nn.Linear(features, num_classes)
    nn.init.zeros_(linear.weight)  # [code] decoder_y.weight.data.zero_(); the bias keeps its init
    return nn.Sequential(*pool, nn.Flatten(), linear)


def sim_projection(shape: tuple) -> nn.Module:
    """sim's projection of a module output of per-sample `shape`: 3x3 conv or Linear, no bias [code]."""
    width = shape[0]
    if len(shape) == 1:
        return nn.Linear(width, width, bias=False)
    return nn.Conv2d(width, width, 3, padding=1, bias=False)
