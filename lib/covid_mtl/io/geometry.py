"""One canonical axial orientation for the network, and the way back to the input's grid.

The same scan can be stored RAS or LPS, slice by slice or sagittally; slicing "the third array axis" would then
give a different answer for the same patient. The predictor therefore reorders the voxels (flips and axis
swaps only, no resampling, so the mask maps back exactly) into the DICOM patient layout: array (z, y, x) with x
towards the patient's left, y towards the back and z towards the head (``LPS`` for (x, y, z)), which is also how
an axial DICOM series is read. The orientation is taken from the affine with nibabel's ``io_orientation`` (the
closest axes for oblique scans). Images without an affine (PNG/JPG) are used as stored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from typing import TYPE_CHECKING

from nibabel.orientations import aff2axcodes, apply_orientation, axcodes2ornt, io_orientation, ornt_transform

if TYPE_CHECKING:
    from ..image import Image

CANONICAL = ("L", "P", "S")
"""Axis codes of the canonical (x, y, z) array: x -> patient left, y -> posterior, z -> superior."""


@dataclass
class Reoriented:
    """An image's array in the canonical layout plus what it takes to go back.

    ``array`` (z, y, x) is a view when possible; ``spacing`` (z, y, x) follows the axes; ``input_codes`` /
    ``codes`` are the (x, y, z) axis codes before and after; ``resliced`` says the canonical slices are not the
    stored slices (the file's third axis was not head-foot)."""

    array: np.ndarray
    spacing: tuple[float, float, float] | None
    input_codes: str
    codes: str
    resliced: bool
    to_canonical: np.ndarray | None = None
    to_input: np.ndarray | None = None

    def forward(self, array_zyx: np.ndarray) -> np.ndarray:
        """Another array on the input grid (a mask) reordered the same way into the canonical layout."""
        if self.to_canonical is None:
            return array_zyx
        return apply_orientation(array_zyx.transpose(2, 1, 0), self.to_canonical).transpose(2, 1, 0)

    def back(self, array_zyx: np.ndarray) -> np.ndarray:
        """An array on the canonical grid mapped onto the input grid (same voxels, input order)."""
        if self.to_input is None:
            return array_zyx
        return np.ascontiguousarray(apply_orientation(array_zyx.transpose(2, 1, 0), self.to_input).transpose(2, 1, 0))


def reorient(array_zyx: np.ndarray, affine: np.ndarray | None,
             spacing: tuple[float, float, float] | None) -> Reoriented:
    """``array_zyx`` (with the nibabel-style ``affine`` of its (x, y, z) transpose) in the canonical layout."""
    if affine is None or array_zyx.shape[0] == 1:
        codes = "".join(aff2axcodes(affine)) if affine is not None else "unknown"
        return Reoriented(array_zyx, spacing, codes, codes, resliced=False)
    current = io_orientation(affine)
    input_codes = "".join(aff2axcodes(affine))
    target = axcodes2ornt(CANONICAL)
    forward = ornt_transform(current, target)
    if np.array_equal(forward, [[0, 1], [1, 1], [2, 1]]):
        return Reoriented(array_zyx, spacing, input_codes, "".join(CANONICAL), resliced=False)
    array = apply_orientation(array_zyx.transpose(2, 1, 0), forward).transpose(2, 1, 0)
    new_spacing = None
    if spacing is not None:
        xyz = np.array(spacing[::-1], dtype=float)  # (x, y, z) spacing
        out_xyz = np.empty(3)
        for axis, (new_axis, _flip) in enumerate(forward):
            out_xyz[int(new_axis)] = xyz[axis]
        new_spacing = tuple(float(v) for v in out_xyz[::-1])
    # the canonical z axis (index 2 of xyz) came from input axis j where forward[j, 0] == 2
    source_of_z = int(np.flatnonzero(forward[:, 0] == 2)[0])
    return Reoriented(array, new_spacing, input_codes, "".join(CANONICAL), resliced=source_of_z != 2,
                      to_canonical=forward, to_input=ornt_transform(target, current))


def canonical(image: "Image") -> tuple["Image", Reoriented]:
    """``image`` in the canonical layout (same voxels, reordered; its affine follows) and the way back.

    Everything after reading works on this image: the lung mask, the network, the measures and the report views,
    so sides and zones never depend on how the file stored the scan; outputs go back once through
    ``Reoriented.back``. An image already canonical (or without an affine) comes back as it is."""
    from dataclasses import replace

    from nibabel.orientations import inv_ornt_aff

    oriented = reorient(image.array, image.affine, image.spacing)
    if oriented.to_canonical is None:
        return image, oriented
    shape_xyz = image.array.shape[::-1]
    affine = np.asarray(image.affine, float) @ inv_ornt_aff(oriented.to_canonical, shape_xyz)
    return replace(image, array=np.ascontiguousarray(oriented.array), spacing=oriented.spacing,
                   affine=affine, meta=dict(image.meta)), oriented
