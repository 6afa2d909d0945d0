"""Per-sample transforms for CT slices (MONAI dictionary transforms on ``image`` and ``mask``).

Training varies what differs between the public slice collections and the scans users load, not what a lesion
looks like, so the network learns lesions rather than one exporter's screenshots. The ranges are the model's
recorded :class:`covid_mtl.nets.preprocessing.Augmentation` (its docstring says how each was chosen):

* orientation and framing: quarter turns and flips along both axes (the collections store slices upright, upside
  down and transposed), rotations and a zoom for how much of the frame the lungs fill;
* the look of the scan: display window (a linear map about mid-grey) and gamma, clipped to [0, 1] as any window
  is; thick-slice partial volume (HU volumes: the mean of neighbouring slices, prepared in ``train.samples``);
  smooth and sharp kernels; low in-plane resolution; low-dose noise.

The mask follows every spatial change with nearest-neighbour interpolation so it stays 0/1. Padding is 0.
Both pipelines end in plain tensors (no MetaTensor), so the default collate gives plain batches.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import (
    Compose,
    MapTransform,
    RandGaussianSharpend,
    RandomizableTransform,
    EnsureTyped,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandRotated,
    RandSimulateLowResolutiond,
    RandZoomd,
    ScaleIntensityRanged,
)

from ..nets.preprocessing import Augmentation

SPATIAL_KEYS = ("image", "mask")
TENSOR_KEYS = ("image", "mask", "has_mask", "cls_target", "cls_weight")
THICK = "thick"
"""Sample key of a HU slice's thick-slice version (``train.samples``); every pipeline removes it."""


class RandThickSlice(RandomizableTransform, MapTransform):
    """With ``prob``, the slice becomes its thick-slice version when the sample has one; the key is always
    dropped so batches stay uniform."""

    def __init__(self, prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys=(THICK,), allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        thick = d.pop(THICK, None)
        self.randomize(None)
        if thick is not None and self._do_transform:
            d["image"] = thick
        return d


class RandWindowd(RandomizableTransform, MapTransform):
    """Another display window: grey levels mapped by a slope (drawn log-uniformly in ``slope``) about mid-grey
    and shifted by up to +-``offset``, then clipped to [0, 1]."""

    def __init__(self, keys: str, slope: tuple[float, float], offset: float, prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.slope, self.offset = slope, offset
        self._draw = (1.0, 0.0)

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        low, high = np.log(self.slope[0]), np.log(self.slope[1])
        self._draw = (float(np.exp(self.R.uniform(low, high))), float(self.R.uniform(-self.offset, self.offset)))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        if self._do_transform:
            slope, shift = self._draw
            for key in self.key_iterator(d):
                d[key] = (slope * (d[key] - 0.5) + 0.5 + shift).clip(0.0, 1.0)
        return d


def eval_transforms() -> Compose:
    """No augmentation: numpy arrays to float tensors."""
    return Compose([RandThickSlice(prob=0.0),
                    EnsureTyped(keys=TENSOR_KEYS, data_type="tensor", dtype=None, track_meta=False)])


def train_transforms(augmentation: Augmentation | None = None, seed: int | None = None) -> Compose:
    """The training augmentation of ``augmentation`` (default: this version's recipe); ``seed`` makes the random
    draws reproducible."""
    a = augmentation or Augmentation()
    transform = Compose([
        RandThickSlice(prob=a.thick_prob),
        EnsureTyped(keys=TENSOR_KEYS, data_type="tensor", track_meta=False),
        RandRotate90d(keys=SPATIAL_KEYS, prob=0.5, max_k=3),
        RandFlipd(keys=SPATIAL_KEYS, spatial_axis=0, prob=0.5),
        RandFlipd(keys=SPATIAL_KEYS, spatial_axis=1, prob=0.5),
        RandRotated(keys=SPATIAL_KEYS, range_x=math.radians(a.rotate_degrees), prob=0.5, mode=("bilinear", "nearest"),
                    padding_mode="zeros"),
        RandZoomd(keys=SPATIAL_KEYS, min_zoom=a.zoom[0], max_zoom=a.zoom[1], prob=0.5, mode=("bilinear", "nearest"),
                  padding_mode="constant", keep_size=True),
        RandSimulateLowResolutiond(keys="image", prob=a.low_resolution_prob, zoom_range=a.low_resolution,
                                   downsample_mode="area", upsample_mode="bilinear"),
        RandGaussianSmoothd(keys="image", sigma_x=a.blur_sigma, sigma_y=a.blur_sigma, prob=a.blur_prob),
        RandGaussianSharpend(keys="image", sigma1_x=(0.5, 1.0), sigma1_y=(0.5, 1.0), sigma2_x=0.5, sigma2_y=0.5,
                             alpha=a.sharpen, prob=a.sharpen_prob),
        RandGaussianNoised(keys="image", std=a.noise_std, prob=a.noise_prob),
        RandWindowd(keys="image", slope=a.window_slope, offset=a.window_offset, prob=a.window_prob),
        RandAdjustContrastd(keys="image", gamma=a.gamma, prob=a.gamma_prob),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        EnsureTyped(keys=SPATIAL_KEYS, data_type="tensor", dtype=None, track_meta=False),
    ])
    if seed is not None:
        transform.set_random_state(seed=seed)
    return transform
