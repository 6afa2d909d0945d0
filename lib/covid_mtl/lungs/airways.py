"""The trachea and main bronchi, found so they can be left out of the lung mask (and reported apart).

Their air is not lung, and at the -400 HU air threshold they join both lungs into one component: the lung mask
then runs up the trachea into the neck, and the "highest lung slice" is the thoracic inlet. Their lumen is not
always darker than lung either (-915 HU median on one of the staged LIDC scans, whose aerated lung sits at
-850), so a darkness test alone does not find them.

What does: in an axial slice, the trachea and the main bronchi are small air islands (``AIRWAY_MAX_AREA_MM2``)
of their own, while a lung's cross-section is large everywhere but at its very apex and base. Chained along z,
the small islands of the trachea form one long tube near the body's midline, running from above the lungs (or the
top of the scan) down to the carina, and on along each main bronchus until it enters its lung, where its island
merges into the lung's large cross-section and the chain stops. The airway is the largest such chain that is at
least ``MIN_LENGTH_MM`` long and centred within ``MAX_OFFSET_MM`` of the midline; lung apices are small islands
too, but lateral and short, and bowel gas is not in the chest's midline over a long stretch.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

AIRWAY_MAX_AREA_MM2 = 600.0
"""Largest 2D air island that can be an airway cross-section (an adult trachea is 1.5-3 cm^2, a main bronchus
about 1-2 cm^2); a lung's cross-section is larger except within a few slices of its apex or base."""
MIN_LENGTH_MM = 30.0
"""A chain of small islands shorter than this along z is not the trachea (a lung apex, a bowel loop)."""
MAX_OFFSET_MM = 35.0
"""The trachea's centre lies within this distance of the body's midline (it can be pushed aside a little)."""


def find_airways(air: np.ndarray, spacing: tuple[float, float, float] | None, midline_x: float) -> np.ndarray:
    """Boolean (z, y, x): the trachea and main bronchi within ``air`` (the air inside the body), or nothing.

    Needs a volume with known spacing (a single slice or unknown spacing gives an empty result)."""
    out = np.zeros(air.shape, bool)
    if spacing is None or air.shape[0] < 3:
        return out
    pixel_mm2 = float(spacing[1] * spacing[2])
    limit = AIRWAY_MAX_AREA_MM2 / pixel_mm2
    small = np.zeros(air.shape, bool)
    for z in range(air.shape[0]):
        labels, n = ndi.label(air[z])
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        keep = sizes <= limit
        keep[0] = False
        small[z] = keep[labels]
    chains, n = ndi.label(small)
    if n == 0:
        return out
    boxes = ndi.find_objects(chains)
    zyx = np.nonzero(small)
    ids = chains[zyx]
    sizes = np.bincount(ids, minlength=n + 1)[1:].astype(float)  # bincount over the islands only: fast
    centre_x = np.bincount(ids, weights=zyx[2], minlength=n + 1)[1:] / np.maximum(sizes, 1)
    best, best_size = 0, 0.0
    for i, box in enumerate(boxes):
        if box is None:
            continue
        length_mm = (box[0].stop - box[0].start) * spacing[0]
        offset_mm = abs(centre_x[i] - midline_x) * spacing[2]
        if length_mm >= MIN_LENGTH_MM and offset_mm <= MAX_OFFSET_MM and sizes[i] > best_size:
            best, best_size = i + 1, float(sizes[i])
    if best:
        out[boxes[best - 1]] = chains[boxes[best - 1]] == best
    return out
