"""The one grid-equality rule: does a label lie on its image's voxel grid?

Shape alone is not enough: a mask whose affine is mirrored, transposed, shifted or rescaled has the right shape and
would teach training a wrong lesion position. Two grids are the same when their shapes are equal and every origin
and axis-vector component of their affines differs by at most ``TOLERANCE_VOXELS`` of the image's smallest voxel
side. The server (``PUT /datastore/label``) applies it through :func:`grid_difference`; the Slicer module keeps a
copy of :func:`same_grid` (``CovidMTLLib/scene.py``: Slicer's Python lacks this package), and
``tests/slicer/test_grid_rule.py`` checks the two agree.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..image import Image

TOLERANCE_VOXELS = 0.01
"""Allowed difference of origin and axis vectors, as a fraction of the image's smallest voxel side (a label
exported by Slicer or ITK carries float32 rounding of the image's own geometry, ~1e-5 mm)."""

_RAS_AXES = ("left-right", "posterior-anterior", "inferior-superior")
_IJK = ("x (i)", "y (j)", "z (k)")


def _axis_name(direction: np.ndarray) -> str:
    return _RAS_AXES[int(np.argmax(np.abs(direction)))]


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def tolerance_mm(affine: np.ndarray) -> float:
    """The rule's tolerance in mm for a grid with this affine (its smallest voxel side times ``TOLERANCE_VOXELS``)."""
    sides = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    return TOLERANCE_VOXELS * float(max(min(sides), 1e-6))


def same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    """Whether grid ``a`` lies on grid ``b`` (``b`` is the reference whose voxel size sets the tolerance)."""
    if tuple(shape_a) != tuple(shape_b):
        return False
    a, b = np.asarray(affine_a, float), np.asarray(affine_b, float)
    return bool(np.all(np.abs(a[:3, :] - b[:3, :]) <= tolerance_mm(b)))


def grid_difference(label: Image, image: Image) -> Optional[str]:
    """None when ``label`` lies on ``image``'s grid, else what differs (shape first, then the affine)."""
    if tuple(label.shape) != tuple(image.shape):
        return f"label shape {list(label.shape)} (z, y, x) differs from the image's {list(image.shape)}"
    if label.affine is None or image.affine is None:  # PNG slices carry no geometry to compare
        return None
    la, ia = np.asarray(label.affine, float), np.asarray(image.affine, float)
    lz, iz = np.linalg.norm(la[:3, :3], axis=0), np.linalg.norm(ia[:3, :3], axis=0)
    tol = tolerance_mm(ia)
    if same_grid(label.shape, la, image.shape, ia):
        return None
    problems = []
    ld, idir = la[:3, :3] / np.maximum(lz, 1e-12), ia[:3, :3] / np.maximum(iz, 1e-12)
    l_axes = [int(np.argmax(np.abs(ld[:, k]))) for k in range(3)]
    i_axes = [int(np.argmax(np.abs(idir[:, k]))) for k in range(3)]
    if l_axes != i_axes:
        problems.append("axes swapped (label array axes run along "
                        + ", ".join(_RAS_AXES[a] for a in l_axes) + "; image's along "
                        + ", ".join(_RAS_AXES[a] for a in i_axes) + ")")
    else:
        for k in range(3):
            cos = float(np.dot(ld[:, k], idir[:, k]))
            if cos < 0:
                problems.append(f"flipped {_axis_name(idir[:, k])} (array axis {_IJK[k]})")
            elif cos < 1 - 1e-6 and np.linalg.norm(ld[:, k] - idir[:, k]) * iz[k] > tol:
                problems.append(f"rotated by {np.degrees(np.arccos(min(cos, 1.0))):.2g} degrees along {_IJK[k]}")
    if np.any(np.abs(lz - iz) > tol):
        problems.append(f"voxel size {_fmt(lz)} mm differs from the image's {_fmt(iz)} mm (x, y, z)")
    shift = la[:3, 3] - ia[:3, 3]
    if np.any(np.abs(shift) > tol):
        problems.append(f"origin shifted by {_fmt(shift)} mm (RAS)")
    if not problems:
        problems.append(f"affine differs by up to {float(np.max(np.abs(la[:3, :] - ia[:3, :]))):.3g} mm")
    return ("label geometry differs from the image's: " + "; ".join(problems)
            + f" (tolerance {tol:.3g} mm); export the label on the image's grid")
