"""The one intensity normalisation, used by training, inference and every tool: values to [0, 1].

HU images are windowed with the radiologists' standard lung window, W 1500 / L -600, i.e. [-1350, 150] HU:
lung parenchyma (about -850 HU) lands near 0.33, ground glass (-700..-300) and consolidation (0..40) stay
distinguishable, bone saturates. Non-HU images (PNG/JPG/TIFF) are divided by their bit depth's maximum: the public
COVID-19 slice collections are 8-bit lung-window screen exports, so an 8-bit export of a CT slice in this window
(``lung_window_u8``) normalises to the same values as its HU original (within 1/255). Exports made with other
windows differ by a linear map; training randomises the window (``covid_mtl.train.augment``) so the model does
not depend on it. Images with neither HU nor a bit depth (NIfTI masks, scaled exports) are min-max scaled.
"""
from __future__ import annotations

import numpy as np

from ..image import Image

LUNG_WINDOW: tuple[float, float] = (-1350.0, 150.0)
"""HU mapped to 0 and 1 (W 1500 / L -600); the only lung window of the project (reports, exports, the model)."""


def normalize_array(array: np.ndarray, is_hu: bool, bit_depth: int | None = None,
                    window: tuple[float, float] = LUNG_WINDOW) -> np.ndarray:
    """Scale ``array`` to float32 in [0, 1] by the rule above (``window``: the HU mapped to 0 and 1; a model's
    own is recorded in its checkpoint, ``covid_mtl.nets.preprocessing``)."""
    a = np.asarray(array, dtype=np.float32)
    if is_hu:
        low, high = window
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


def lung_window_u8(hu: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> np.ndarray:
    """8-bit rendering of HU in a lung window (``window``: the HU mapped to 0 and 255), as a radiologist's
    screenshot would have it."""
    low, high = window
    return np.rint((np.clip(hu.astype(np.float32), low, high) - low) * (255.0 / (high - low))).astype(np.uint8)
