"""The patient in a CT, without what the patient lies on or wears: the one place the body is found.

The lung mask, the network's box (through the lung mask) and every measure start from it. A couch shell, a
mattress cover, a PET/CT pallet, a blanket or an ECG lead is thin, and where it touches the patient it joined the
body's tissue: the body's filled outline then enclosed the air and foam layers inside the couch, which look like
lung (7.7-8.4 L of "lung" on a curved Siemens couch). So, per axial slice:

1. tissue: ``HU > BODY_HU``;
2. opened with a disk of ``OPEN_MM``: anything thinner than about twice that (shells, covers, fabric, leads, skin
   folds) is cut away, while the trunk (chest wall, back, abdomen: centimetres thick) stays;
3. the body is the largest 3D component of the opened tissue (a couch-free trunk runs through the scan; arms,
   leads and couch parts thick enough to survive the opening are separate pieces unless they touch it broadly, and
   a piece touching it broadly, an arm, holds no air);
4. grown back by ``OPEN_MM`` inside the tissue (the skin and the thin chest wall the opening shaved) and its
   holes filled;
5. where the lungs can lie (``inside``): points with body on both sides along their column (anterior and
   posterior) or along their row (right and left). That is an orthogonal hull of the body, inside its convex hull
   and far cheaper. Air of a couch lies under the back, with no body below it and none beside it; lungs cut by a
   cropped field of view still have chest wall in front and behind, or mediastinum and chest wall beside them.

The midline is the median over slices of the centre of the body's x extent (a collapsed lung cannot pull it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk

BODY_HU = -300.0
"""Tissue threshold: fat (-100) and denser are body; foam, air and lung are not."""
OPEN_MM = 4.0
"""Radius of the opening that cuts thin things (couch shells, mattress covers, leads) from the body."""
PIXEL_MM = 2.5
"""The body is found on a grid of about this pixel size (every n-th pixel), then copied back: where the lungs can
lie needs no finer outline, and the opening on the lung mask's own 1.4 mm grid cost more than the rest of it."""
MIN_SLICE_PIXELS = 16


@dataclass
class Body:
    """``mask``: the patient (filled outline) per slice; ``inside``: where lungs can be (step 5);
    ``midline_x``: x index of the body's midline; ``posterior_row``: the row (y index, posterior growing) that
    begins the body's posterior quarter, median over slices (None without a body)."""

    mask: np.ndarray
    inside: np.ndarray
    midline_x: float
    posterior_row: float | None = None


def find_body(hu: np.ndarray, spacing: tuple[float, float, float] | None = None) -> Body:
    """The body of a (z, y, x) HU volume (method in the module docstring)."""
    pixel = min(spacing[1], spacing[2]) if spacing is not None else 1.0
    step = max(1, int(round(PIXEL_MM / pixel)))
    tissue = hu[:, ::step, ::step] > BODY_HU
    footprint = disk(max(1, int(round(OPEN_MM / (pixel * step)))))
    opened = np.zeros(tissue.shape, bool)
    for z in range(tissue.shape[0]):
        if tissue[z].sum() >= MIN_SLICE_PIXELS:
            opened[z] = ndi.binary_opening(tissue[z], structure=footprint)
    labels, n = ndi.label(opened)
    small = np.zeros(tissue.shape, bool)
    centres, quarters = [], []
    if n:
        trunk = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        for z in np.flatnonzero(trunk.any(axis=(1, 2))):
            small[z] = ndi.binary_fill_holes(ndi.binary_dilation(trunk[z], structure=footprint) & tissue[z])
            xs = np.flatnonzero(small[z].any(axis=0))
            ys = np.flatnonzero(small[z].any(axis=1))
            centres.append(((xs[0] + xs[-1]) / 2.0) * step)
            quarters.append((ys[0] + 0.75 * (ys[-1] - ys[0])) * step)
    midline = float(np.median(centres)) if centres else (hu.shape[2] - 1) / 2.0
    inside = between(small, axis=1) | between(small, axis=2)
    posterior = float(np.median(quarters)) if quarters else None
    return Body(_full(small, step, hu.shape), _full(inside, step, hu.shape), midline, posterior)


def _full(small: np.ndarray, step: int, shape: tuple[int, ...]) -> np.ndarray:
    if step == 1:
        return small
    return np.repeat(np.repeat(small, step, axis=1), step, axis=2)[:, : shape[1], : shape[2]]


def between(mask: np.ndarray, axis: int) -> np.ndarray:
    """Points with ``mask`` on both sides of them along ``axis`` (the mask itself included)."""
    before = np.maximum.accumulate(mask, axis=axis)
    after = np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
    return before & after
