"""DataOptions: the typed settings of on-disk datasets (image size, augmentation, workers, cache, .beton names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.data.augment import Augment


@dataclass(frozen=True)
class BetonSpec:
    """How an image folder is written to FFCV .beton files; the parameters are part of the file name.

    Named like ffcv-imagenet: `{split}_{max_res}_{jpeg_proportion}_{quality}.beton`, e.g. train_500_0.50_90.beton.
    """

    max_res: int = 500  # longest image side written; larger images are downscaled (cv2 INTER_AREA)
    jpeg_proportion: float = (
        0.5  # share of images stored as JPEG, the rest raw; 0 = all raw, 1 = all JPEG
    )
    quality: int = 90  # JPEG quality of the re-encoded images

    def __post_init__(self):
        if not isinstance(self.max_res, int) or self.max_res < 1:
            raise ValueError(
                f"bad value {self.max_res!r} for beton 'max_res'; accepted: an integer >= 1"
            )
        if not 0.0 <= float(self.jpeg_proportion) <= 1.0:
            raise ValueError(
                f"bad value {self.jpeg_proportion!r} for beton 'jpeg_proportion'; accepted: 0 to 1"
            )
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(
                f"bad value {self.quality!r} for beton 'quality'; accepted: an integer 1 to 100"
            )

    def filename(self, split: str) -> str:
        return f"{split}_{self.max_res}_{self.jpeg_proportion:.2f}_{self.quality}.beton"


@dataclass(frozen=True)
class DataOptions:
    """Settings of the on-disk datasets; the embedded ones (mnist5k, digits) ignore them all [suite]."""

    image_size: int | None = (
        None  # image folders: square side after resize + centre crop (None: as stored,
    )
    #                                all one size); imagenet: training and evaluation resolution (None: 224)
    augment: Augment = field(
        default_factory=Augment
    )  # on-device training augmentation (cifar, image folders)
    workers: int = 2  # decode processes, DataLoader workers, FFCV threads
    cache_dir: Path | None = (
        None  # decoded image folders; None: DATA_DIR/.cache (or ~/.cache/bench if read-only)
    )
    max_device_bytes: int = (
        4 << 30
    )  # image folders larger than this as uint8 tensors stream instead
    beton: BetonSpec = field(default_factory=BetonSpec)

    @classmethod
    def from_recipe(cls, recipe: dict) -> DataOptions:
        """The options from a resolved training recipe; keys it lacks keep their defaults.

        Recipe keys: image_size (0: None), crop_pad, flip, cutout, data_workers, beton_max_res,
        beton_jpeg_proportion, beton_quality.
        """
        augment, beton = Augment(), BetonSpec()
        return cls(
            image_size=recipe.get("image_size") or None,
            augment=Augment(
                pad=recipe.get("crop_pad", augment.pad),
                flip=recipe.get("flip", augment.flip),
                cutout=recipe.get("cutout", augment.cutout),
            ),
            workers=recipe.get("data_workers", cls.workers),
            beton=BetonSpec(
                max_res=recipe.get("beton_max_res", beton.max_res),
                jpeg_proportion=recipe.get("beton_jpeg_proportion", beton.jpeg_proportion),
                quality=recipe.get("beton_quality", beton.quality),
            ),
        )

    def __post_init__(self):
        if self.image_size is not None and (
            not isinstance(self.image_size, int) or self.image_size < 1
        ):
            raise ValueError(
                f"bad value {self.image_size!r} for 'image_size'; accepted: an integer >= 1 or None"
            )
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"bad value {self.workers!r} for 'workers'; accepted: an integer >= 0")
