"""Resizing a stack of axial slices to the model's size (``covid_mtl.nets.preprocessing`` decides which slices
and which box; training and prediction both go through it)."""
from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Resize


def resize_slices(stack: np.ndarray | torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(n, h, w) -> (n, size, size) float32 tensor; slices ride in the channel axis of MONAI ``Resize``."""
    tensor = torch.as_tensor(stack, dtype=torch.float32)
    if tuple(tensor.shape[-2:]) == (size, size):
        return tensor.clone()
    resized = Resize(spatial_size=(size, size), mode=mode, anti_aliasing=False)(tensor)
    return resized.as_tensor() if hasattr(resized, "as_tensor") else resized  # plain tensor, not MetaTensor
