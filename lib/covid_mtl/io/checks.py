"""Sanity checks every reader's output passes before anyone computes on it, and the memory budget every reader
applies from the file header, before it allocates anything."""
from __future__ import annotations

import os

import numpy as np

from ..errors import CovidMTLError

MIN_SIDE = 8
"""Smallest in-plane side accepted: below this no slice carries anatomy (a 1x1 image is an error)."""

MAX_SIDE = 8192
"""Refuse absurd in-plane sizes (decompression bombs) before decoding where the header tells."""

DEFAULT_MAX_IMAGE_MB = 2048
"""Memory one image may take while it is read (stored samples + the float32 volume): a 512x512x1000 int16 CT
needs 1500 MB. Sized for a 2-core 24 GB server shared by several users: inference holds about three times this
at its peak, which leaves room for a training run and a second request. A program sets its own once at start-up
with :func:`set_max_image_mb` (the CLI from ``COVID_MTL_MAX_IMAGE_MB``, the server from its settings)."""

OUTPUT_BYTES_PER_VOXEL = 4
"""Every reader returns float32."""

DEFLATE_MAX_RATIO = 1032
"""zlib/gzip cannot expand data by more than this (the deflate format's limit for runs of one byte value)."""


_max_image_mb: float = float(DEFAULT_MAX_IMAGE_MB)


def set_max_image_mb(mb: float | None) -> None:
    """This process's memory budget for one image (None: the default); called once when a program starts."""
    global _max_image_mb
    _max_image_mb = float(mb) if mb else float(DEFAULT_MAX_IMAGE_MB)


def max_image_mb_from_env(environ=os.environ) -> float | None:
    """``COVID_MTL_MAX_IMAGE_MB`` as a number (None when unset, not a number or not positive)."""
    value = environ.get("COVID_MTL_MAX_IMAGE_MB", "").strip()
    try:
        mb = float(value) if value else 0.0
    except ValueError:
        return None
    return mb if mb > 0 else None


def max_image_bytes() -> int:
    return int(_max_image_mb * 2**20)


def _mb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


def check_budget(shape: tuple[int, ...], bytes_per_voxel: int, source: str) -> None:
    """Refuse an image whose voxels x bytes per voxel exceed the budget; call it with header values only."""
    voxels = int(np.prod([int(s) for s in shape], dtype=np.int64)) if shape else 0
    need, budget = voxels * int(bytes_per_voxel), max_image_bytes()
    if need > budget:
        dims = "x".join(str(int(s)) for s in reversed(shape))
        raise CovidMTLError(
            f"{source}: image too large ({dims} voxels need {_mb(need)} to read; this server's limit is "
            f"{_mb(budget)}, setting COVID_MTL_MAX_IMAGE_MB)"
        )


def check_stored_size(claimed_bytes: int, stored_bytes: int, compressed: bool, source: str,
                      kind: str = "image file") -> None:
    """Refuse a header that claims more data than the file can hold: a 132-byte gzip cannot inflate to 8 GB.

    ``stored_bytes``: bytes of the file after the header; ``compressed``: deflate (gzip), whose output is at most
    ``DEFLATE_MAX_RATIO`` times its input.
    """
    capacity = stored_bytes * (DEFLATE_MAX_RATIO if compressed else 1)
    if claimed_bytes > capacity:
        how = "compressed " if compressed else ""
        raise CovidMTLError(
            f"{source}: not a readable {kind}: header claims {_mb(claimed_bytes)} of voxel data but the {how}file holds {stored_bytes} "
            f"bytes (at most {_mb(capacity)}); the file is truncated or its header is wrong"
        )


def check_shape(shape: tuple[int, ...], source: str, bytes_per_voxel: int = OUTPUT_BYTES_PER_VOXEL) -> None:
    if len(shape) != 3:
        raise CovidMTLError(f"{source}: expected a 2D or 3D image, got {len(shape)} dimensions {shape}")
    z, y, x = shape
    if min(y, x) < MIN_SIDE or z < 1:
        raise CovidMTLError(f"{source}: image too small ({x}x{y}x{z} voxels); need at least {MIN_SIDE}x{MIN_SIDE}")
    if max(y, x) > MAX_SIDE:
        raise CovidMTLError(f"{source}: image too large ({x}x{y}x{z} voxels); refusing to load it")
    check_budget(shape, bytes_per_voxel, source)


def check_array(array: np.ndarray, source: str) -> None:
    check_shape(tuple(array.shape), source)
    if array.dtype != np.float32:
        raise CovidMTLError(f"{source}: internal error, reader returned {array.dtype}, not float32")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise CovidMTLError(f"{source}: {bad} voxels are NaN or infinite")
