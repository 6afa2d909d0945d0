"""Per-sample transforms for CT slices (MONAI dictionary transforms on ``image`` and ``mask``).

Training augmentation randomises what differs between the public slice collections rather than what a lesion
looks like, so the network cannot tell a slice's source from its framing or grey levels:

* orientation: the collections store slices upright, upside down and transposed (Inf-Net's coronacases slices
  lie on their side), so quarter turns and flips along both axes; small rotations (15 degrees) and zooms
  (0.85-1.2) for positioning, body size and how tight the crop is;
* window: each collection exported its 8-bit slices with its own lung window (measured: lung parenchyma at 5 %,
  12 % and 33 % of the grey range in three of them), so gamma (0.6-1.6), contrast scale (+-30 %) and offset
  (+-0.15), then clipping to [0, 1] as any window would;
* resolution and noise: downsampled-and-restored slices, blur and faint Gaussian noise (paper figures are
  screen crops of various sizes; scanners and kernels differ).

The mask follows every spatial change with nearest-neighbour interpolation so it stays 0/1. Padding is 0.
Both pipelines end in plain tensors (no MetaTensor), so the default collate gives plain batches.
"""
from __future__ import annotations

import math

from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    RandZoomd,
    ScaleIntensityRanged,
)

SPATIAL_KEYS = ("image", "mask")
TENSOR_KEYS = ("image", "mask", "has_mask", "cls_target", "cls_weight")


def eval_transforms() -> Compose:
    """No augmentation: numpy arrays to float tensors."""
    return Compose([EnsureTyped(keys=TENSOR_KEYS, data_type="tensor", dtype=None, track_meta=False)])


def train_transforms(seed: int | None = None) -> Compose:
    """The training augmentation above; ``seed`` makes the random draws reproducible."""
    transform = Compose([
        EnsureTyped(keys=TENSOR_KEYS, data_type="tensor", track_meta=False),
        RandRotate90d(keys=SPATIAL_KEYS, prob=0.5, max_k=3),
        RandFlipd(keys=SPATIAL_KEYS, spatial_axis=0, prob=0.5),
        RandFlipd(keys=SPATIAL_KEYS, spatial_axis=1, prob=0.5),
        RandRotated(keys=SPATIAL_KEYS, range_x=math.radians(15), prob=0.5, mode=("bilinear", "nearest"),
                    padding_mode="zeros"),
        RandZoomd(keys=SPATIAL_KEYS, min_zoom=0.85, max_zoom=1.2, prob=0.5, mode=("bilinear", "nearest"),
                  padding_mode="constant", keep_size=True),
        RandAdjustContrastd(keys="image", gamma=(0.6, 1.6), prob=0.5),
        RandScaleIntensityd(keys="image", factors=0.3, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.15, prob=0.5),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        RandSimulateLowResolutiond(keys="image", prob=0.2, zoom_range=(0.4, 0.9), downsample_mode="area",
                                   upsample_mode="bilinear"),
        RandGaussianSmoothd(keys="image", sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), prob=0.15),
        RandGaussianNoised(keys="image", std=0.02, prob=0.3),
        EnsureTyped(keys=SPATIAL_KEYS, data_type="tensor", dtype=None, track_meta=False),
    ])
    if seed is not None:
        transform.set_random_state(seed=seed)
    return transform
