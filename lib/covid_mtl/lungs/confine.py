"""The lesion mask kept: what the network paints inside the lungs, plus a thin margin at their edge.

The network was trained on lung-cropped slices; on a whole chest CT it also paints the chest wall, the liver edge,
bowel and the neck. Only the lungs can hold a COVID-19 lesion, so the mask that is written, shown and measured is
the predicted lesion inside the lung mask grown by ``MARGIN_MM`` within each axial slice. The margin keeps
subpleural consolidation, which is dense (about 0 HU) and so lies outside the air-based lung mask, where it
abuts the pleura; 5 mm is the partial-volume rim of the lung mask at -400 HU plus a few millimetres of dense
subpleural band. The price: a consolidation deeper than the margin into a lobe that no longer holds air is
only counted up to the margin.

One more place paints lesion that is not in the lung: the dome of the diaphragm. With slices of 2.5-5 mm a slice
that cuts the top of a dome holds lung and liver, spleen or a contrast-filled stomach in one voxel, which reads
as a ground-glass patch inside the lung (-480 HU on average on one of the staged LIDC scans, 9 mL of "lesion"
over its gastric fundus). A lesion component lying on the diaphragm, ``DOME_SHARE`` or more of its lung voxels
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

MARGIN_MM = 3.0
"""In-plane distance from the lung mask within which a lesion voxel still counts as lung lesion."""
REACH_MM = 10.0
"""How far from the lung a lesion component that lies mostly in the lungs is still counted."""
LUNG_SHARE = 0.5
"""Share of a lesion component's voxels within the margin for it to count as a lung lesion up to ``REACH_MM``."""
DOME_MM = 5.0
"""A lung voxel with a non-lung voxel this close below it (towards the feet) lies on the diaphragm."""
DOME_SHARE = 0.7
"""A lesion component with at least this share of its lung voxels on the diaphragm is partial volume."""


@dataclass(frozen=True)
class Confined:
    """``lesion``: uint8 (z, y, x), the kept lesion; ``dropped_voxels``: how many predicted voxels were outside."""

    lesion: np.ndarray
    dropped_voxels: int
    margin_mm: float = MARGIN_MM
    dropped_on_diaphragm_voxels: int = 0


def lung_region(lung: np.ndarray, spacing: tuple[float, float, float] | None, margin_mm: float = MARGIN_MM,
                where: np.ndarray | None = None) -> np.ndarray:
    """The lung mask grown by ``margin_mm`` within each axial slice (pixels of 1 mm without spacing).

    ``where`` (optional, bool, same shape): only voxels there are needed, so the growing runs in their box."""
    lung = np.asarray(lung, bool)
    out = lung.copy()
    pixel = min(spacing[1], spacing[2]) if spacing is not None else 1.0
    radius = int(round(margin_mm / pixel))
    if radius < 1 or not lung.any():
        return out
    box = tuple(slice(None) for _ in range(3))
    if where is not None:
        if not where.any():
            return out
        coords = np.argwhere(where)
        low = np.maximum(coords.min(axis=0) - [0, radius, radius], 0)
        high = np.minimum(coords.max(axis=0) + [1, radius + 1, radius + 1], lung.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    structure = disk(radius)[None]  # (1, d, d): in-plane only, so a 5 mm slice does not reach the next organ
    out[box] = ndi.binary_dilation(lung[box], structure=structure)
    return out


def confine(lesion: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float] | None,
            margin_mm: float = MARGIN_MM, superior_at_high_z: bool | None = True) -> Confined:
    """The predicted ``lesion`` (z, y, x) kept inside ``lung`` (bool or labels, same grid) plus the margin, without
    the partial volume of the diaphragm (needs a volume with spacing and the head-foot direction)."""
    lesion = np.asarray(lesion) > 0
    lung = np.asarray(lung) > 0
    if lesion.shape != lung.shape:
        raise ValueError(f"lesion mask shape {lesion.shape} differs from the lung mask's {lung.shape}")
    outside = lesion & ~lung
    keep = lesion.copy()
    if outside.any():
        near = lung_region(lung, spacing, margin_mm, where=outside)
        keep &= near
        far = lesion & ~near
        if far.any():  # beyond the margin: only the components that lie mostly in the lungs, up to REACH_MM
            pieces, n = ndi.label(lesion, structure=np.ones((3, 3, 3), bool))
            ids = np.arange(1, n + 1)
            share = ndi.sum_labels(keep, pieces, ids) / np.maximum(ndi.sum_labels(lesion, pieces, ids), 1)
            lung_like = np.concatenate([[False], share >= LUNG_SHARE])[pieces]
            if (far & lung_like).any():
                keep |= far & lung_like & lung_region(lung, spacing, REACH_MM, where=far & lung_like)
    on_dome = 0
    if spacing is not None and superior_at_high_z is not None and lung.shape[0] > 2 and keep.any():
        dome = on_diaphragm(keep, lung, spacing, superior_at_high_z)
        on_dome = int(dome.sum())
        keep &= ~dome
    return Confined(keep.astype(np.uint8), int(lesion.sum() - keep.sum()), margin_mm, on_dome)


def on_diaphragm(lesion: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float],
                 superior_at_high_z: bool) -> np.ndarray:
    """The lesion components lying on the diaphragm (see the module docstring), as a boolean mask."""
    reach = max(1, int(round(DOME_MM / spacing[0])))
    step = -1 if superior_at_high_z else 1  # towards the feet
    nz = lung.shape[0]
    near = np.zeros(lung.shape, bool)  # lung voxels with non-lung within `reach` slices towards the feet
    for k in range(1, reach + 1):
        below = np.ones(lung.shape, bool)  # beyond the scan: unknown, taken as not lung
        if step < 0:
            below[k:] = ~lung[:nz - k]
        else:
            below[:nz - k] = ~lung[k:]
        near |= below
    near &= lung
    pieces, n = ndi.label(lesion, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros(lesion.shape, bool)
    ids = np.arange(1, n + 1)
    in_lung = ndi.sum_labels(lesion & lung, pieces, ids)
    on = ndi.sum_labels(lesion & near, pieces, ids)
    dome = np.concatenate([[False], (in_lung > 0) & (on >= DOME_SHARE * np.maximum(in_lung, 1))])
    return dome[pieces]


def with_lesion(labels: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, int]:
    """``labels`` (0 / right / left) with the kept lesion outside them given to the nearest lung: consolidation
    beside the air-based mask is lung that no longer holds air, so lung volume and percent involved count it.
    Returns the labels and how many voxels were added."""
    add = (np.asarray(kept) > 0) & (labels == 0)
    if not add.any() or not labels.any():
        return labels, 0
    coords = np.argwhere(add)
    pad = 2 * int(np.ceil(REACH_MM))  # voxels: enough for the nearest lung of anything within REACH_MM
    low = np.maximum(coords.min(axis=0) - pad, 0)
    high = np.minimum(coords.max(axis=0) + pad + 1, labels.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    sub = labels[box]
    if not sub.any():
        return labels, 0
    nearest = ndi.distance_transform_edt(sub == 0, return_distances=False, return_indices=True)
    out = labels.copy()
    out[box][add[box]] = sub[tuple(nearest)][add[box]]
    return out, int(add.sum())
