"""The in-memory image every part of covid_mtl passes around."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

CLASSES: tuple[str, ...] = ("covid", "normal", "other")
"""Order of the three sigmoid outputs of the classifier: P(covid), P(normal), P(other)."""

LABELS: tuple[str, ...] = CLASSES + ("non-covid",)
"""Accepted class labels; ``non-covid`` means only "not COVID" is known."""


@dataclass
class Image:
    """A read image.

    ``array`` is float32 in (z, y, x) order (z = 1 for a 2D slice). ``affine`` is the nibabel-style
    voxel-to-RAS matrix of ``array.transpose(2, 1, 0)``, so ``nib.Nifti1Image(a.transpose(2, 1, 0), affine)``
    writes an array on this image's grid. ``spacing`` is in mm, (z, y, x), or None when unknown.
    ``is_hu`` says the values are Hounsfield units; otherwise ``bit_depth`` says how they scale.
    ``meta`` carries source metadata needed later (``series_uid``, ``study_uid``, ``sop_instance_uids`` in
    z order, ``frame_of_reference_uid``, ``modality``, ``files`` for DICOM).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] | None
    affine: np.ndarray | None
    is_hu: bool
    source: str
    bit_depth: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def is_2d(self) -> bool:
        return self.array.shape[0] == 1
