"""Sanity checks every reader's output passes before anyone computes on it."""
from __future__ import annotations

import numpy as np

from ..errors import CovidMTLError

MIN_SIDE = 8
"""Smallest in-plane side accepted: below this no slice carries anatomy (a 1x1 image is an error)."""

MAX_VOXELS = 2048 * 2048 * 2048
"""Larger arrays are refused before they exhaust memory (a CT is ~512*512*1000)."""

MAX_SIDE = 8192
"""Refuse absurd in-plane sizes (decompression bombs) before decoding where the header tells."""


def check_shape(shape: tuple[int, ...], source: str) -> None:
    if len(shape) != 3:
        raise CovidMTLError(f"{source}: expected a 2D or 3D image, got {len(shape)} dimensions {shape}")
    z, y, x = shape
    if min(y, x) < MIN_SIDE or z < 1:
        raise CovidMTLError(f"{source}: image too small ({x}x{y}x{z} voxels); need at least {MIN_SIDE}x{MIN_SIDE}")
    if max(y, x) > MAX_SIDE or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise CovidMTLError(f"{source}: image too large ({x}x{y}x{z} voxels); refusing to load it")


def check_array(array: np.ndarray, source: str) -> None:
    check_shape(tuple(array.shape), source)
    if array.dtype != np.float32:
        raise CovidMTLError(f"{source}: internal error, reader returned {array.dtype}, not float32")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise CovidMTLError(f"{source}: {bad} voxels are NaN or infinite")
