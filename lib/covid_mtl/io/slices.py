"""Axial slices as the network sees them: which slices hold lung, and resizing a stack to the model's size.

Shared by training (which slices become samples) and prediction (which slices the network runs on), so both
pick and resize slices the same way.
"""
from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Resize

LUNG_HU_RANGE: tuple[float, float] = (-950.0, -500.0)
"""Aerated lung (about -850 HU) and most ground-glass; excludes air (-1000) and soft tissue."""
LUNG_MIN_FRACTION = 0.01
"""A slice contains lung when at least this fraction of its pixels lies in LUNG_HU_RANGE (lenient, so lung
apices and bases count; abdomen slices with bowel gas at -1000 HU do not)."""



def lung_slices(array: np.ndarray, is_hu: bool) -> np.ndarray:
    """Boolean (z,): which axial slices contain lung. Without HU every slice counts."""
    if not is_hu:
        return np.ones(array.shape[0], dtype=bool)
    low, high = LUNG_HU_RANGE
    fraction = ((array >= low) & (array <= high)).reshape(array.shape[0], -1).mean(axis=1)
    return fraction >= LUNG_MIN_FRACTION


def resize_slices(stack: np.ndarray | torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(n, h, w) -> (n, size, size) float32 tensor; slices ride in the channel axis of MONAI ``Resize``."""
    tensor = torch.as_tensor(stack, dtype=torch.float32)
    if tuple(tensor.shape[-2:]) == (size, size):
        return tensor.clone()
    resized = Resize(spatial_size=(size, size), mode=mode, anti_aliasing=False)(tensor)
    return resized.as_tensor() if hasattr(resized, "as_tensor") else resized  # plain tensor, not MetaTensor
