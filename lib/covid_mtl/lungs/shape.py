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


def split_merged(component: np.ndarray, ras_x, midline: float, flags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Split a component holding both lungs into (right, left) by erosion + watershed, else by the midline."""
    from skimage.segmentation import watershed

    # in-plane erosion: lungs touch at the anterior junction within slices, and thick slices (5 mm) would
    # vanish under a 3D erosion long before a thin junction breaks
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndi.generate_binary_structure(2, 1)
    eroded = component.copy()
    for _ in range(12):
        eroded = ndi.binary_erosion(eroded, structure=in_plane)
        labels, n = ndi.label(eroded)
        if n < 2:
            if n == 0:
                break
            continue
        sizes = np.bincount(labels.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        a, b = order[0] + 1, order[1] + 1
        if sizes[order[1]] < 0.1 * sizes[order[0]]:
            continue  # a chip came off, not the other lung
        xa = float(ras_x(np.argwhere(labels == a).mean(axis=0))[0])
        xb = float(ras_x(np.argwhere(labels == b).mean(axis=0))[0])
        if (xa - midline) * (xb - midline) > 0:
            continue  # both on one side: not a right/left split
        markers = np.zeros(component.shape, np.int32)
        right_id, left_id = (a, b) if xa > xb else (b, a)
        markers[labels == right_id] = RIGHT_LUNG
        markers[labels == left_id] = LEFT_LUNG
        distance = ndi.distance_transform_edt(component)
        split = watershed(-distance, markers, mask=component)
        flags.append("split_by_watershed")
        return split == RIGHT_LUNG, split == LEFT_LUNG
    flags.append("split_by_midline")
    coords = np.argwhere(component)
    right = ras_x(coords) > midline
    r = np.zeros(component.shape, bool)
    r[tuple(coords[right].T)] = True
    return r, component & ~r


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
