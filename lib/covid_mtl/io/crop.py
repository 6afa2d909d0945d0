"""Where the lungs are in a slice, so the network sees the lungs and not the page around them.

Public COVID-19 slice collections differ by where they come from in everything around the lungs: paper-figure
borders, arrows and text, the table, how much of the body the crop kept. A network shown whole slices can learn
the source instead of the lung. Every slice the network sees, in training and in prediction, is therefore cut to
the box around its dark, body-enclosed regions (the lungs and airways) plus a margin, then resized.

Which images are cut (``image_box``): volumes (z > 1), with one box for all their slices, the union over their
lung slices, so neighbouring slices stay aligned and apical slices are not blown up. 2D images are used whole: the
public slice collections are already tight lung crops (lungs touching the image edge, where no per-slice box is
reliable: measured on the training sets, a per-slice box often kept one lung), so a 3D scan cut to its lung box
is what looks like them.

Works on normalised [0, 1] slices (``covid_mtl.io.normalize``) so an 8-bit screen export and an HU volume take the
same path: Otsu's threshold splits air-like from tissue-like pixels; regions as dark as air (median below -950 HU:
the air around the patient, bowel and stomach gas, the trachea) are dropped, and so are regions touching the slice
edge unless they are large (``MIN_EDGE_REGION``) and look like lung: a scan cropped through the lungs keeps its
lungs (on the real chest crop in shared/data/real_ct, dropping every edge region kept 30 % of the lung), while
air pockets of the table do not count. Regions below ``MIN_REGION`` of the slice are ignored. When no
region survives (a crop that cuts through the lungs, an abdomen slice) the whole slice is used.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from .normalize import LUNG_WINDOW, normalize_array

Box = tuple[int, int, int, int]
"""(y0, y1, x0, x1), half-open, in pixels of the slice."""

MIN_REGION = 0.005
"""Smallest dark region (share of the slice's pixels) that counts as lung; smaller ones are noise or bowel gas."""
MIN_EDGE_REGION = 0.03
"""Smallest region touching the slice edge that can be lung cut by the field of view (share of the slice)."""
MIN_BOX = 0.04
"""A box smaller than this share of the slice is not trusted (whole slice used instead)."""
MARGIN = 0.08
"""Margin added on each side, as a share of the box's own height/width: keeps the pleura and chest wall."""
AIR_LEVEL = (-950.0 - LUNG_WINDOW[0]) / (LUNG_WINDOW[1] - LUNG_WINDOW[0])
"""Normalised value of -950 HU: an edge region darker than this (median) is air around the patient, not lung."""
MAX_SIDE = 256
"""Slices are examined at most at this size (the box is scaled back): a 512 x 512 slice costs a quarter."""


def lung_box(slice01: np.ndarray) -> Box | None:
    """Box around the lungs of one normalised (h, w) slice, or None when no lung region is found."""
    h, w = slice01.shape
    step = max(1, int(np.ceil(max(h, w) / MAX_SIDE)))
    small = np.asarray(slice01[::step, ::step], dtype=np.float32)
    if small.size < 16 or float(small.max() - small.min()) < 1e-3:
        return None
    dark = small < threshold_otsu(small)
    labels, n = ndimage.label(dark)
    if n == 0:
        return None
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=index)
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = (sizes >= MIN_REGION * small.size) & (np.asarray(ndimage.median(small, labels, index=index)) >= AIR_LEVEL)
    keep[edge[sizes[edge - 1] < MIN_EDGE_REGION * small.size]] = False
    region = keep[labels]
    if not region.any():
        return None
    ys, xs = np.nonzero(region)
    return _finish((ys.min() * step, (ys.max() + 1) * step, xs.min() * step, (xs.max() + 1) * step), h, w)


def volume_lung_box(slices01: Iterable[np.ndarray]) -> Box | None:
    """One box for a volume: the union of ``lung_box`` over the given normalised slices, or None."""
    boxes = [b for b in (lung_box(s) for s in slices01) if b is not None]
    if not boxes:
        return None
    arr = np.array(boxes)
    return (int(arr[:, 0].min()), int(arr[:, 1].max()), int(arr[:, 2].min()), int(arr[:, 3].max()))


def _finish(box: Box, h: int, w: int) -> Box | None:
    y0, y1, x0, x1 = box
    dy, dx = int(round(MARGIN * (y1 - y0))), int(round(MARGIN * (x1 - x0)))
    y0, y1, x0, x1 = max(0, y0 - dy), min(h, y1 + dy), max(0, x0 - dx), min(w, x1 + dx)
    if (y1 - y0) * (x1 - x0) < MIN_BOX * h * w:
        return None
    return (y0, y1, x0, x1)


def image_box(array: np.ndarray, is_hu: bool, bit_depth: int | None, lung: np.ndarray, every: int = 4) -> Box:
    """The box the network sees of a (z, h, w) image with lung-slice flags ``lung`` (rule above). Only every
    ``every``-th lung slice is examined (plenty for a union) and normalised, so no whole-volume copy is made."""
    z, h, w = array.shape
    box = None
    if z > 1:
        zs = np.flatnonzero(lung) if lung.any() else np.arange(z)
        box = volume_lung_box(normalize_array(array[zi], is_hu, bit_depth) for zi in zs[::every])
    return box or (0, h, 0, w)
