"""The lesion mask kept: what the network paints in the lungs, and the dense edge of lesions that lie in them.

The network was trained on lung-cropped slices; on a whole chest CT it also paints the chest wall, the liver edge,
bowel and the neck. Only the lungs can hold a COVID-19 lesion, so the mask that is written, shown and measured is
built from the predicted lesion's 3D components:

* a component with at least ``LUNG_SHARE`` of its voxels inside the (air-based) lung mask is a lung lesion: it
  keeps its voxels inside the lung mask and those up to ``REACH_MM`` beside it in the same axial slice. That is
  the margin for subpleural lesions: dense consolidation (about 0 HU) is not in the air-based mask where it abuts
  the pleura, but its ground-glass halo is, so the patch is kept whole; the kept voxels beside the mask then join
  the nearest lung (:func:`with_lesion`), so lung volume and percent involved count them;
* a component lying mostly outside the lungs is paint on the chest wall, an organ or bowel: only its voxels inside
  the lung mask are kept (none, usually).

The price: a lobe consolidated solid (no air left, so no lung mask there) is counted only where it still touches
aerated lung, up to ``REACH_MM``; and an organ painted as one piece with a lung lesion joins it up to that depth.

One more place paints lesion that is not in the lung: the dome of the diaphragm. With slices of 2.5-5 mm a slice
that cuts the top of a dome holds lung and liver, spleen or a contrast-filled stomach in one voxel, which reads
as a ground-glass patch inside the lung (-480 HU on average on one of the staged LIDC scans, 9 mL of "lesion"
over its gastric fundus). A kept component lying on the diaphragm, ``DOME_SHARE`` or more of its lung voxels
within ``DOME_MM`` above a voxel that is not lung, is that partial volume and is dropped too. The price: a
lesion no thicker than ``DOME_MM`` lying on the dome is not counted (a thicker basal lesion keeps everything).

What is dropped is not lost silently: its volume is reported (``lesion_outside_lung_ml``; the dome part also as
``dropped_on_diaphragm_voxels``) as a quality figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .shape import disk

REACH_MM = 10.0
"""How far beside the lung mask (in-plane) a lesion that lies mostly in the lungs is still counted."""
LUNG_SHARE = 0.5
"""Share of a lesion component's voxels inside the lung mask for it to count as a lung lesion."""
DOME_MM = 5.0
"""A lung voxel with a non-lung voxel this close below it (towards the feet) lies on the diaphragm."""
DOME_SHARE = 0.7
"""A lesion component with at least this share of its lung voxels on the diaphragm is partial volume."""
CONNECTIVITY = np.ones((3, 3, 3), bool)


@dataclass(frozen=True)
class Confined:
    """``lesion``: uint8 (z, y, x), the kept lesion; ``dropped_voxels``: predicted voxels left out (of which
    ``dropped_on_diaphragm_voxels`` as diaphragm partial volume)."""

    lesion: np.ndarray
    dropped_voxels: int
    dropped_on_diaphragm_voxels: int = 0


def lung_region(lung: np.ndarray, spacing: tuple[float, float, float] | None, reach_mm: float,
                where: np.ndarray) -> np.ndarray:
    """Voxels of ``where`` within ``reach_mm`` of ``lung`` in their own axial slice (1 mm pixels without spacing).

    In-plane only, so a 5 mm slice does not reach the next organ; computed in the box of ``where``."""
    out = np.zeros(lung.shape, bool)
    if not where.any() or not lung.any():
        return out
    pixel = min(spacing[1], spacing[2]) if spacing is not None else 1.0
    radius = max(1, int(round(reach_mm / pixel)))
    coords = np.argwhere(where)
    low = np.maximum(coords.min(axis=0) - [0, radius, radius], 0)
    high = np.minimum(coords.max(axis=0) + [1, radius + 1, radius + 1], lung.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    grown = ndi.binary_dilation(lung[box], structure=disk(radius)[None])
    out[box] = grown & where[box]
    return out


def confine(lesion: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float] | None,
            superior_at_high_z: bool | None = True) -> Confined:
    """The predicted ``lesion`` (z, y, x) kept by the rules above, given ``lung`` (bool or labels, same grid).
    The diaphragm rule needs a volume with spacing and the head-foot direction."""
    lesion = np.asarray(lesion) > 0
    lung = np.asarray(lung) > 0
    if lesion.shape != lung.shape:
        raise ValueError(f"lesion mask shape {lesion.shape} differs from the lung mask's {lung.shape}")
    if not lesion.any():
        return Confined(np.zeros(lesion.shape, np.uint8), 0, 0)
    # everything below happens near the lesion: its box, grown by what the rules look at (labelling a whole
    # 512 x 512 x 300 CT costs a second per pass)
    pixel = min(spacing[1], spacing[2]) if spacing is not None else 1.0
    pad = [int(np.ceil(DOME_MM / spacing[0])) + 1 if spacing is not None else 1] + [int(np.ceil(REACH_MM / pixel)) + 1] * 2
    coords = np.argwhere(lesion.any(axis=(1, 2)))[:, 0], np.flatnonzero(lesion.any(axis=(0, 2))), \
        np.flatnonzero(lesion.any(axis=(0, 1)))
    box = tuple(slice(max(0, int(c[0]) - p), min(n, int(c[-1]) + 1 + p)) for c, p, n in zip(coords, pad, lesion.shape))
    kept = _confine(lesion[box], lung[box], spacing, superior_at_high_z)
    out = np.zeros(lesion.shape, np.uint8)
    out[box] = kept.lesion
    return Confined(out, kept.dropped_voxels, kept.dropped_on_diaphragm_voxels)


def _confine(lesion: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float] | None,
             superior_at_high_z: bool | None) -> Confined:
    keep = lesion & lung
    outside = lesion & ~lung
    if outside.any():
        pieces, n = ndi.label(lesion, structure=CONNECTIVITY)
        inside = np.bincount(pieces[lesion & lung], minlength=n + 1)  # bincount over the lesion only: fast
        size = np.bincount(pieces[lesion], minlength=n + 1)
        lung_like = inside >= LUNG_SHARE * np.maximum(size, 1)
        lung_like[0] = False
        beside = outside & lung_like[pieces]
        keep |= lung_region(lung, spacing, REACH_MM, beside)
    on_dome = 0
    if spacing is not None and superior_at_high_z is not None and lung.shape[0] > 2 and keep.any():
        dome = on_diaphragm(keep, lung, spacing, superior_at_high_z)
        on_dome = int(dome.sum())
        keep &= ~dome
    return Confined(keep.astype(np.uint8), int(lesion.sum() - keep.sum()), on_dome)


def on_diaphragm(lesion: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float],
                 superior_at_high_z: bool) -> np.ndarray:
    """The lesion components lying on the diaphragm (see the module docstring), as a boolean mask."""
    reach = max(1, int(round(DOME_MM / spacing[0])))
    step = -1 if superior_at_high_z else 1  # towards the feet
    nz = lung.shape[0]
    pieces, n = ndi.label(lesion, structure=CONNECTIVITY)
    zyx = np.argwhere(lesion & lung)
    if n == 0 or zyx.size == 0:
        return np.zeros(lesion.shape, bool)
    near = np.zeros(len(zyx), bool)  # lung voxels of the lesion with non-lung within `reach` slices footward
    for k in range(1, reach + 1):
        z = zyx[:, 0] + step * k
        inside = (z >= 0) & (z < nz)
        below_lung = np.zeros(len(zyx), bool)
        below_lung[inside] = lung[z[inside], zyx[inside, 1], zyx[inside, 2]]
        near |= ~below_lung  # beyond the scan counts as not lung
    ids = pieces[tuple(zyx.T)]
    in_lung = np.bincount(ids, minlength=n + 1)
    on = np.bincount(ids, weights=near, minlength=n + 1)
    dome = (in_lung > 0) & (on >= DOME_SHARE * np.maximum(in_lung, 1))
    dome[0] = False
    return dome[pieces]


def with_lesion(labels: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, int]:
    """``labels`` (0 / right / left) with the kept lesion outside them given to the nearest lung in its slice:
    consolidation beside the air-based mask is lung that no longer holds air, so lung volume and percent
    involved count it. Returns the labels and how many voxels were added."""
    add = (np.asarray(kept) > 0) & (labels == 0)
    if not add.any() or not labels.any():
        return labels, 0
    out = labels.copy()
    for z in np.flatnonzero(add.any(axis=(1, 2))):
        if not labels[z].any():
            continue  # kept lesion beside lung is always in a slice with lung; nothing to join otherwise
        nearest = ndi.distance_transform_edt(labels[z] == 0, return_distances=False, return_indices=True)
        out[z][add[z]] = labels[z][nearest[0][add[z]], nearest[1][add[z]]]
    return out, int((out != labels).sum())
