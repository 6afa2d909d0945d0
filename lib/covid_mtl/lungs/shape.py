"""Shaping the lung components into the final labelmap: right/left split, filling.

Part of :mod:`covid_mtl.lungs.mask` (the method is described there).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

RIGHT_LUNG = 1
LEFT_LUNG = 2
LUNG_NAMES = {RIGHT_LUNG: "right", LEFT_LUNG: "left"}

CLOSING_MM = 4.0
"""Radius of the per-slice closing that pulls juxtapleural nodules/vessels into the lung."""


def disk(radius_px: int) -> np.ndarray:
    r = max(int(radius_px), 1)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy * yy + xx * xx) <= r * r


STRADDLE_FRACTION = 0.2
"""A 2D piece with at least this share of its pixels on each side of the midline holds both lungs."""


def split_merged(component: np.ndarray, ras_x, midline: float, flags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Split a component holding both lungs into (right, left), slice by slice.

    The lungs touch at the anterior (or posterior) junction in a few slices only: in every other slice each 2D
    piece lies on one side and goes there whole. A piece that straddles the midline (``STRADDLE_FRACTION`` on each
    side) is split by in-plane erosion until it falls into a right and a left part, then watershed from those;
    failing that, at the midline. Per slice, because a 3D erosion needs the junction to be thin in every slice at
    once, and a 3D watershed over both lungs cost seconds on a whole chest CT."""
    right = np.zeros(component.shape, bool)
    how = set()
    for z in np.flatnonzero(component.any(axis=(1, 2))):
        pieces, n = ndi.label(component[z])
        for i in range(1, n + 1):
            piece = pieces == i
            yx = np.argwhere(piece)
            on_right = ras_x(np.c_[np.full(len(yx), z), yx]) > midline
            share = float(on_right.mean())
            if min(share, 1 - share) < STRADDLE_FRACTION:
                if share > 0.5:
                    right[z][piece] = True
                continue
            part, method = _split_piece(piece, z, ras_x, midline)
            right[z] |= part
            how.add(method)
    flags.extend(f"split_by_{method}" for method in sorted(how))
    return right, component & ~right


def _split_piece(piece: np.ndarray, z: int, ras_x, midline: float) -> tuple[np.ndarray, str]:
    """The right part of one straddling 2D piece, and how it was found (``watershed`` or ``midline``)."""
    from skimage.segmentation import watershed

    def side_x(mask: np.ndarray) -> float:
        yx = np.argwhere(mask).mean(axis=0)
        return float(ras_x(np.array([[z, yx[0], yx[1]]]))[0])

    eroded = piece
    cross = ndi.generate_binary_structure(2, 1)
    for _ in range(12):
        eroded = ndi.binary_erosion(eroded, structure=cross)
        labels, n = ndi.label(eroded)
        if n == 0:
            break
        if n < 2:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        a, b = order[0] + 1, order[1] + 1
        if sizes[order[1]] < 0.1 * sizes[order[0]]:
            continue  # a chip came off, not the other lung
        xa, xb = side_x(labels == a), side_x(labels == b)
        if (xa - midline) * (xb - midline) > 0:
            continue  # both on one side: not a right/left split
        markers = np.zeros(piece.shape, np.int32)
        markers[labels == (a if xa > xb else b)] = RIGHT_LUNG
        markers[labels == (b if xa > xb else a)] = LEFT_LUNG
        split = watershed(-ndi.distance_transform_edt(piece), markers, mask=piece)
        return split == RIGHT_LUNG, "watershed"
    yx = np.argwhere(piece)
    right = np.zeros(piece.shape, bool)
    on_right = ras_x(np.c_[np.full(len(yx), z), yx]) > midline
    right[tuple(yx[on_right].T)] = True
    return right, "midline"


def fill_enclosed(lung: np.ndarray, radius_px: int, edges_are_lung: tuple[bool, bool] = (False, False)) -> np.ndarray:
    """Per-slice closing, then the slice's holes, but only hole voxels that the lung encloses along z too.

    A 2D hole is a vessel or a consolidation only if lung also lies above and below it: going up and down
    the column from a hole voxel (through the holes of other slices), the first voxel that is not a hole must
    be lung in both directions. The basal lung forms a ring around the dome of the diaphragm in an axial
    slice, and 2D filling alone closes that ring over the liver or stomach (up to litres on real chest CT);
    below such a "hole" lies the organ, not lung, so it stays out. Beyond the lung's z extent counts as
    not-lung unless ``edges_are_lung`` (low z, high z) says otherwise (a single slice: plain 2D filling).
    """
    zs = np.flatnonzero(lung.any(axis=(1, 2)))
    out = lung.copy()
    if zs.size == 0:
        return out
    rows = np.flatnonzero(lung.any(axis=(0, 2)))
    cols = np.flatnonzero(lung.any(axis=(0, 1)))
    box = (slice(zs[0], zs[-1] + 1), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    sub = lung[box]
    closed = np.zeros_like(sub)
    holes = np.zeros_like(sub)
    structure = disk(radius_px)
    pad = radius_px + 1  # padding keeps the closing from eroding lungs that touch the image border
    for k in range(sub.shape[0]):
        if not sub[k].any():
            continue
        raw = sub[k]
        sl = ndi.binary_closing(np.pad(raw, pad), structure=structure)[pad:-pad, pad:-pad] | raw
        # what the closing adds inside the raw lung's own holes is filling too (a small dome apex, a vessel
        # narrower than the disk), so it faces the z test; what it adds at the outline only smooths it
        smoothing = sl & ~ndi.binary_fill_holes(raw)
        closed[k] = raw | smoothing
        holes[k] = ndi.binary_fill_holes(sl) & ~closed[k]
    out[box] |= closed | (holes & enclosed_along_z(closed, holes, edges_are_lung))
    return out


def enclosed_along_z(lung: np.ndarray, holes: np.ndarray, edges_are_lung: tuple[bool, bool] = (False, False)
                     ) -> np.ndarray:
    """True where the first non-hole voxel above and the first below (same y, x) are both lung."""
    below = np.empty(lung.shape, bool)
    state = np.full(lung.shape[1:], edges_are_lung[0])  # what lies beyond the stack
    for k in range(lung.shape[0]):
        state = np.where(holes[k], state, lung[k])
        below[k] = state
    state = np.full(lung.shape[1:], edges_are_lung[1])
    for k in range(lung.shape[0] - 1, -1, -1):
        state = np.where(holes[k], state, lung[k])
        below[k] &= state
    return below
