"""The one intensity normalisation, used by training, inference and every tool: values to [0, 1].

HU images are windowed with the lung window [-1000, 400] HU: lung parenchyma (about -850), ground-glass
(-700..-300) and consolidation (0..40) all stay distinguishable while bone saturates. Non-HU images
(PNG/JPG/TIFF) are divided by their bit depth's maximum, so an 8-bit and a 16-bit export of the same
slice land on the same scale. Images with neither (NIfTI masks, scaled exports) are min-max scaled.
"""
from __future__ import annotations

import numpy as np

from ..image import Image

HU_WINDOW: tuple[float, float] = (-1000.0, 400.0)


def normalize_array(array: np.ndarray, is_hu: bool, bit_depth: int | None = None) -> np.ndarray:
    """Scale ``array`` to float32 in [0, 1] by the rule above."""
    a = np.asarray(array, dtype=np.float32)
    if is_hu:
        low, high = HU_WINDOW
        return np.clip((a - low) / (high - low), 0.0, 1.0, dtype=np.float32)
    if bit_depth:
        return np.clip(a / float(2**bit_depth - 1), 0.0, 1.0, dtype=np.float32)
    low, high = float(a.min()), float(a.max())
    if high <= low:
        return np.zeros_like(a)
    return ((a - low) / (high - low)).astype(np.float32)


def normalize(image: Image) -> np.ndarray:
    """The image's pixels scaled to float32 [0, 1], (z, y, x)."""
    return normalize_array(image.array, image.is_hu, image.bit_depth)
