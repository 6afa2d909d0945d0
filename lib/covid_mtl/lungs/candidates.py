"""Which air in a CT can be lung: the body, per-slice air candidates, and the 3D components that look like lung.

Part of :mod:`covid_mtl.lungs.mask` (the method is described there).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

AIR_HU = -400.0
"""Upper HU bound of lung candidates (aerated lung, most ground glass; denser lesion comes in by filling).

Half-way between aerated lung (about -850) and soft tissue (about +40): the partial-volume edge of the lung.
-320 made the outline one voxel fatter, +5 % on the thin basal crescents of the real thorax-abdomen CT
against a slice-by-slice count (tests/lib/test_lungmask.py); the phantoms did not move (0.1 %)."""
GAS_HU = -950.0
"""2D components whose median HU is below this are free gas (outside air, airways, bowel), not lung."""
MAX_GAS_FRACTION = 0.1
"""3D components with more than this fraction of voxels below ``GAS_HU`` are gas pockets, not lung."""
MIN_COMPONENT_FRACTION = 0.05
"""3D components smaller than this fraction of the largest are dropped (bowel gas, noise)."""
MIN_LUNG_ML = 0.5
"""Below this a component is never a lung (mL; voxel count x voxel volume)."""
MIN_INSIDE_BODY = 0.5
"""A 2D air component must have this share of its pixels where the body surrounds them
(``covid_mtl.lungs.body.Body.inside``): the air and foam of a couch, a mattress or a pallet lie under the back,
outside it."""


def candidates(hu: np.ndarray, within: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Air voxels that can be lung: per-slice 2D air components that are not free gas and lie in the body.

    Dropped: components that are *gas-like* (more than half the voxels below ``GAS_HU``: outside air, -2048
    outside the field of view, trachea, main bronchi, bowel gas; aerated lung sits near -850 HU because of its
    tissue and blood), and components away from the image border with less than ``MIN_INSIDE_BODY`` of their
    pixels ``within`` the body (``Body.inside``: couch, mattress and pallet lie outside it). A component touching
    the border stays a candidate: a chest cropped to the mediastinum has lungs running into the border with no
    chest wall around them. A couch wider than the field of view runs into the border too; in 3D it is told apart
    by its constant cross-section (``lung_components``).
    ``exclude``: voxels that are never lung (the airways, ``covid_mtl.lungs.airways``), taken out with a one-pixel
    rim so the partial-volume wall of a bronchus no longer joins it to its lung.
    """
    air = hu < AIR_HU
    if exclude is not None and exclude.any():
        rim = np.zeros((3, 3, 3), bool)
        rim[1] = ndi.generate_binary_structure(2, 1)
        air &= ~ndi.binary_dilation(exclude, structure=rim)
    gas_voxels = hu < GAS_HU
    keep = np.zeros(hu.shape, bool)
    for z in range(hu.shape[0]):
        labels, n = ndi.label(air[z])
        if n == 0:
            continue
        flat = labels.ravel()
        # "median below GAS_HU" == "more than half the voxels below it"; bincount is ~20x faster than ndi.median
        gas = np.bincount(flat, weights=gas_voxels[z].ravel(), minlength=n + 1)
        size = np.bincount(flat, minlength=n + 1)
        inside = np.bincount(flat, weights=within[z].ravel(), minlength=n + 1)
        border = np.zeros(n + 1, bool)
        for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
            border[edge] = True
        good = (gas <= 0.5 * size) & (border | (inside >= MIN_INSIDE_BODY * size))
        good[0] = False
        keep[z] = good[labels]
    return keep


def lung_components(hu: np.ndarray, within: np.ndarray, voxel_ml: float | None, gap_slices: int,
                    exclude: np.ndarray | None = None, superior_at_high_z: bool | None = True,
                    posterior_row: float | None = None) -> tuple[np.ndarray, list[int]]:
    """3D components of the candidates and the ids that look like lung.

    Gas pockets with partial volume (stomach, colon, stool) pass the 2D median test but keep a core below
    -950 HU; aerated lung rarely has more than a few percent there. The reference is the largest component
    with a lung-like gas fraction; emphysema (every component gas-rich) falls back to the largest one.
    A component lying under the lungs already chosen (``under_the_lungs``: stomach or colon gas below a dome of the
    diaphragm) is not lung, however lung-like its air. Nor is one shaped like a couch (``couch_like``).
    """
    air = candidates(hu, within, exclude)
    components, n = ndi.label(air)
    if n == 0:
        return components, []
    where = np.flatnonzero(air)  # counting over candidate voxels only: a tenth of the volume
    ids = components.ravel()[where]
    sizes = np.bincount(ids, minlength=n + 1)[1:].astype(float)
    gas = np.bincount(ids, weights=hu.ravel()[where] < GAS_HU, minlength=n + 1)[1:] / np.maximum(sizes, 1)
    big = sizes * voxel_ml >= MIN_LUNG_ML if voxel_ml is not None else np.ones(n, bool)
    if posterior_row is not None:
        rows = (where // hu.shape[2]) % hu.shape[1]
        big &= ~couch_like(components.ravel()[where], where // (hu.shape[1] * hu.shape[2]), n, hu.shape[0],
                           within.ravel()[where], rows, posterior_row)
    lung_like = big & (gas <= MAX_GAS_FRACTION)
    pool = lung_like if lung_like.any() else big
    if not pool.any():
        return components, []
    ref = int(np.argmax(np.where(pool, sizes, -1)))
    gas_limit = MAX_GAS_FRACTION if lung_like.any() else gas[ref] + MAX_GAS_FRACTION
    keep = big & (sizes >= MIN_COMPONENT_FRACTION * sizes[ref]) & (gas <= gas_limit)
    chosen = _chain_in_z(components, keep, ref, gap_slices)
    return components, _not_under(components, chosen, ref + 1, sizes, superior_at_high_z)


COUCH_SPAN = 0.9
"""A couch runs through (nearly) the whole scan: at least this share of its slices ..."""
COUCH_AREA_CV = 0.1
"""... with a nearly constant cross-section: the spread of its per-slice area below this share of the mean. The
lungs' area grows from apex to base several-fold, even in a scan cut to the lungs."""


def couch_like(ids: np.ndarray, zs: np.ndarray, n: int, nz: int, within: np.ndarray, rows: np.ndarray,
               posterior_row: float) -> np.ndarray:
    """Per 3D component (``ids`` 1..n of candidate voxels at slices ``zs`` and ``rows``): air that lies mostly
    outside the body (``within`` False), behind its posterior quarter on average (``posterior_row``: under the
    back, where a supine patient's couch is), through at least ``COUCH_SPAN`` of the slices, with a nearly
    constant area. The position matters: lungs of a chest cropped to the mediastinum lie outside the body too, and
    over a few mid-chest slices their area hardly changes."""
    if nz < 5:
        return np.zeros(n, bool)
    area = np.bincount(ids.astype(np.int64) * nz + zs, minlength=(n + 1) * nz).reshape(n + 1, nz)[1:]
    outside = np.bincount(ids, weights=~within, minlength=n + 1)[1:] / np.maximum(area.sum(axis=1), 1)
    present = area > 0
    span = present.sum(axis=1) / nz
    mean = area.sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    spread = np.sqrt((np.where(present, area - mean[:, None], 0.0) ** 2).sum(axis=1)
                     / np.maximum(present.sum(axis=1), 1))
    row = np.bincount(ids, weights=rows, minlength=n + 1)[1:] / np.maximum(area.sum(axis=1), 1)
    return (outside > 0.5) & (row > posterior_row) & (span >= COUCH_SPAN) & (spread <= COUCH_AREA_CV * mean)


UNDER_SHARE = 0.5
"""A component whose footprint lies under the chosen lungs for more than this share is below the diaphragm."""


def _not_under(components: np.ndarray, chosen: list[int], ref: int, sizes: np.ndarray,
               superior_at_high_z: bool | None) -> list[int]:
    """``chosen`` without the components that lie under the lungs: gas below a dome of the diaphragm.

    Taken largest first; a component's footprint column counts as "under" where lung already accepted reaches
    higher (towards the head) than the component's own highest voxel there. Stomach and colon gas under the left
    dome is covered by lung over nearly all of its footprint; the other lung, beside the first, hardly at all.
    """
    if len(chosen) < 2 or superior_at_high_z is None:
        return chosen
    nz = components.shape[0]
    height = np.arange(nz) if superior_at_high_z else np.arange(nz)[::-1]  # larger = nearer the head
    height = height.astype(np.int32)[:, None, None]
    boxes = ndi.find_objects(components)

    def highest(comp: int, box) -> np.ndarray:
        mine = components[box] == comp
        return np.where(mine, height[box[0]], -1).max(axis=0)  # -1 where the column holds none of it

    reach = np.full(components.shape[1:], -1, np.int32)  # highest accepted lung per (y, x) column
    box = boxes[ref - 1]
    reach[box[1], box[2]] = highest(ref, box)
    accepted = [ref]
    for comp in sorted((c for c in chosen if c != ref), key=lambda c: -sizes[c - 1]):
        box = boxes[comp - 1]
        top = highest(comp, box)
        footprint = top >= 0
        under = footprint & (reach[box[1], box[2]] > top)
        if under.sum() > UNDER_SHARE * footprint.sum():
            continue
        accepted.append(comp)
        reach[box[1], box[2]] = np.maximum(reach[box[1], box[2]], top)
    return sorted(accepted)


def _chain_in_z(components: np.ndarray, keep: np.ndarray, ref: int, gap_slices: int) -> list[int]:
    """Ids (1-based) of kept components whose z range reaches the reference's, directly or through others.

    Lungs are one block along z; an air-like pocket far below it (pelvis, bowel) is not lung.
    """
    extents = {i: (s[0].start, s[0].stop) for i, s in enumerate(ndi.find_objects(components)) if s is not None}
    low, high = extents[ref]
    chosen, pending = [ref], [i for i in np.flatnonzero(keep) if i != ref]
    changed = True
    while changed:
        changed = False
        for i in list(pending):
            start, stop = extents[i]
            if start <= high + gap_slices and stop >= low - gap_slices:
                chosen.append(i)
                pending.remove(i)
                low, high = min(low, start), max(high, stop)
                changed = True
    return sorted(int(i) + 1 for i in chosen)
