"""Per-sample transforms for CT slices (MONAI dictionary transforms on ``image`` and ``mask``).

Training augmentation stays small, as a chest CT slice varies little in practice: rotations up to 10 degrees
and zoom 0.9-1.1 (patient positioning and size), left-right flips, and intensity jitter (scale +-10 %, shift
+-0.05 of the [0, 1] range, faint Gaussian noise: scanner and reconstruction-kernel differences). The mask
follows every spatial change with nearest-neighbour interpolation so it stays 0/1. Padding is 0 (= -1000 HU air).
Both pipelines end in plain tensors (no MetaTensor), so the default collate gives plain batches.
"""
from __future__ import annotations

import math

from monai.transforms import (
    Compose,
    EnsureTyped,
    RandFlipd,
    RandGaussianNoised,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
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
        RandRotated(keys=SPATIAL_KEYS, range_x=math.radians(10), prob=0.5, mode=("bilinear", "nearest"),
                    padding_mode="zeros"),
        RandZoomd(keys=SPATIAL_KEYS, min_zoom=0.9, max_zoom=1.1, prob=0.3, mode=("bilinear", "nearest"),
                  padding_mode="constant", keep_size=True),
        RandFlipd(keys=SPATIAL_KEYS, spatial_axis=1, prob=0.5),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        RandGaussianNoised(keys="image", std=0.01, prob=0.3),
        EnsureTyped(keys=SPATIAL_KEYS, data_type="tensor", dtype=None, track_meta=False),
    ])
    if seed is not None:
        transform.set_random_state(seed=seed)
    return transform
