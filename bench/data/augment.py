"""Batched on-device training augmentation (crop, flip, cutout) and AugmentedData, a TensorData that applies it.

Every random number is drawn on the CPU from the run's seeded `torch.Generator` and then moved to the
data's device, so the same seed gives the same batches on any device (the airbench way: whole batches
are augmented with a few tensor ops, never image by image on the host).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench.data.tensors import TensorData, batch_bounds


@dataclass(frozen=True)
class Augment:
    """The training augmentation of an on-device dataset [suite]; test batches are never augmented.

    pad: random crop after zero-padding each side by `pad` pixels (4: the standard CIFAR recipe, as
         torchvision's RandomCrop(32, padding=4)); 0 turns cropping off.
    flip: horizontal flip of each image with probability 1/2.
    cutout: side of a zeroed square at a random centre in each image (DeVries & Taylor 2017); 0 = off.
    """

    pad: int = 4
    flip: bool = True
    cutout: int = 0

    def __post_init__(self):
        for key in ("pad", "cutout"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"bad value {value!r} for augment {key!r}; accepted: an integer >= 0"
                )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 N x C x H x W -> the augmented batch, same shape and dtype."""
        if self.pad:
            x = random_crop(x, self.pad, generator)
        if self.flip:
            x = random_flip(x, generator)
        if self.cutout:
            x = cutout(x, self.cutout, generator)
        return x


NO_AUGMENT = Augment(pad=0, flip=False, cutout=0)
FUSED_MAX_BYTES = 2 << 30  # AugmentedData keeps padded copies of its training set up to this size


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """N x C x H x W -> same shape: each image zero-padded by `pad` and cropped at its own random offset."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    return windows(padded, h, w)[torch.arange(n, device=x.device), offsets[:, 0], offsets[:, 1]]


def windows(padded: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A view of every h x w crop of every image: out[i, dy, dx] = padded[i, :, dy:dy+h, dx:dx+w].

    Indexing it with (image, dy, dx) index tensors copies each chosen crop in one call, whole rows
    at a time, with no per-pixel index tensor.
    """
    n, c, ph, pw = padded.shape
    sn, sc, sh, sw = padded.stride()
    return padded.as_strided((n, ph - h + 1, pw - w + 1, c, h, w), (sn, sh, sw, sc, sh, sw))


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """N x C x H x W -> same shape, each image mirrored left-right with probability 1/2 (its own coin)."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).nonzero().flatten().to(x.device)
    out = x.clone()
    out[flip] = x[flip].flip(-1)  # only the chosen half is copied twice
    return out


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """N x C x H x W -> same shape, a `size` x `size` square (clipped at the border) zeroed per image."""
    n, _, h, w = x.shape
    centres = (torch.rand(n, 2, generator=generator) * torch.tensor([h, w])).long().to(x.device)
    top, left = centres[:, 0] - size // 2, centres[:, 1] - size // 2
    r = torch.arange(h, device=x.device).view(1, h, 1)
    s = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (
        (r >= top.view(-1, 1, 1))
        & (r < (top + size).view(-1, 1, 1))
        & (s >= left.view(-1, 1, 1))
        & (s < (left + size).view(-1, 1, 1))
    )
    return x.masked_fill(inside.unsqueeze(1), 0)


@dataclass
class AugmentedData(TensorData):
    """TensorData whose training batches are augmented on the device by `augment` [suite].

    Same interface as TensorData (mnist5k and digits stay plain TensorData, never augmented).
    Normalisation statistics are computed in chunks, so a large uint8 set never gets a float copy.
    """

    augment: Augment = field(default_factory=Augment)

    def __post_init__(self):
        self.mean, self.std = channel_stats(self.train_x)
        self._padded = None

    def to(self, device: torch.device | str) -> AugmentedData:
        self._padded = None  # rebuilt on the new device when first needed
        return super().to(device)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W -> float, standardised per channel: TensorData's map in two fused passes."""
        scale = (1 / (255 * self.std)).view(1, -1, 1, 1)
        return x.to(torch.float32).sub_((255 * self.mean).view(1, -1, 1, 1)).mul_(scale)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, keep_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented, normalised training batches, seeded from `generator`; remainder dropped
        unless `keep_last` (tensors.batch_bounds).

        Augmentation draws from its own generator, seeded by one draw of `generator` per epoch, so
        switching flip or cutout on or off leaves the order of every epoch's batches unchanged.
        """
        augment = torch.Generator().manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=generator))
        )
        order = torch.randperm(len(self.train_y), generator=generator).to(self.train_y.device)
        for start, stop in batch_bounds(len(order), batch_size, keep_last):
            index = order[start:stop]
            yield (
                self.normalise(self._augmented(index, augment)),
                self.train_y.index_select(0, index),
            )

    def ready(self) -> None:
        """Build the padded training set of the fast path now (the trainer calls this before its clock
        starts, so a CPU record's training peak is the steps' own allocations, not this one-off copy)."""
        a = self.augment
        c, h, w = self.train_x.shape[1:]
        if (
            self._padded is None
            and (a.pad or a.flip)
            and 2 * len(self.train_x) * c * (h + 2 * a.pad) * (w + 2 * a.pad) <= FUSED_MAX_BYTES
        ):
            padded = F.pad(self.train_x, (a.pad,) * 4)
            self._padded = torch.cat([padded, padded.flip(-1)])

    def _augmented(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 batch of training images `index`, augmented: what Augment gives, drawn the same way.

        Fast path: the training set kept zero-padded in both orientations (3.1x its uint8 size, made
        once, when that is at most FUSED_MAX_BYTES), so crop and flip are one gather. A flipped crop
        at column offset dx equals the crop of the mirrored padded image at offset 2 * pad - dx.
        """
        a = self.augment
        n, (c, h, w) = len(index), self.train_x.shape[1:]
        padded_bytes = 2 * len(self.train_x) * c * (h + 2 * a.pad) * (w + 2 * a.pad)
        if not (a.pad or a.flip) or padded_bytes > FUSED_MAX_BYTES:
            # index_select, not train_x[index]: the same rows, an order of magnitude faster on the CPU
            return a(self.train_x.index_select(0, index), generator)
        self.ready()
        device = self.train_x.device
        offsets = (
            torch.randint(0, 2 * a.pad + 1, (n, 2), generator=generator)
            if a.pad
            else torch.zeros(n, 2).long()
        )
        flip = (
            torch.rand(n, generator=generator) < 0.5 if a.flip else torch.zeros(n, dtype=torch.bool)
        )
        (dy, dx), flip = offsets.to(device).unbind(1), flip.to(device)
        source = index + flip.long() * len(self.train_x)
        x = windows(self._padded, h, w)[source, dy, torch.where(flip, 2 * a.pad - dx, dx)]
        return cutout(x, a.cutout, generator) if a.cutout else x


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per channel of uint8 N x C x H x W in [0, 1], as TensorData computes them (std unbiased).

    From each channel's histogram of the 256 values: exact sums, with no float copy of the images
    (float64 passes over CIFAR-10 took 1.5 s of a 2.7 s cached load).
    """
    counts = torch.stack(
        [torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]
    )
    values = torch.arange(256, dtype=torch.float64, device=x.device) / 255
    total, squares = counts.double() @ values, counts.double() @ values.square()
    count = x.numel() // x.shape[1]
    mean = total / count
    var = (squares - count * mean.square()) / max(count - 1, 1)
    return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-6)
