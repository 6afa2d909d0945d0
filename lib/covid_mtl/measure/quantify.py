"""Measures of a lesion mask: volumes, percent of lung involved, per lung / zone / lobe, severity scores.

The one quantification used by the infer JSON, the CLI report and (through the JSON) the Slicer panel.

Severity points per region follow the bands of Pan et al. 2020 (Radiology 295:715), which scores each of
the five lobes 0-5 (total 0-25): 0 none, 1 <5%, 2 5-25%, 3 26-50%, 4 51-75%, 5 >75%. Exact edges used here
(``DEFAULT_BINS``): 0 for 0% (no lesion voxel); 1 for 0% < p < 5%; 2 for 5% <= p <= 25%; 3 for 25% < p <= 50%;
4 for 50% < p <= 75%; 5 for p > 75%. So 5% -> 2, 25% -> 2, 25.01% -> 3, 75% -> 4.

Without a lobe segmentation the score is taken over six *zones* instead: each lung is cut into upper, middle
and lower thirds of its own z extent, giving ``zone_severity_score`` 0-30. That is an adaptation, not Pan's
lobe score, and is named so. With a TotalSegmentator lobe labelmap, ``lobe_severity_score`` (0-25) is Pan's.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from ..errors import CovidMTLError
from ..image import Image
from .checks import lung_checks
from ..lungs.mask import LEFT_LUNG, LUNG_NAMES, RIGHT_LUNG, LungMask

SeverityBins = Sequence[tuple[float, bool]]

DEFAULT_BINS: tuple[tuple[float, bool], ...] = ((0.0, False), (5.0, True), (25.0, False), (50.0, False), (75.0, False))
"""Lower edge (percent) of the band worth 1, 2, ... points, and whether the edge itself belongs to that band.

A percentage earns the points of the highest band whose edge it passes (``p > edge``, or ``p >= edge`` when
inclusive). Configure by passing another sequence of (edge, inclusive) pairs with increasing edges.
"""

TOTALSEGMENTATOR_LOBES: dict[int, str] = {
    10: "left_upper",
    11: "left_lower",
    12: "right_upper",
    13: "right_middle",
    14: "right_lower",
}
"""Label values of the five lobes in TotalSegmentator v2's ``total`` task (the default accepted)."""

TOTALSEGMENTATOR_V1_LOBES: dict[int, str] = {
    13: "left_upper",
    14: "left_lower",
    15: "right_upper",
    16: "right_middle",
    17: "right_lower",
}
"""Label values of the lobes in TotalSegmentator v1 (104 classes); pass as ``lobe_labels``."""

ZONES = ("upper", "middle", "lower")
_PERCENT_DIGITS = 9  # rounding before binning so 5/100*100 = 5.000000000000001 still counts as 5%


def severity_points(percent: float | None, bins: SeverityBins = DEFAULT_BINS) -> int:
    """Points (0..len(bins)) of an involvement percentage; see ``DEFAULT_BINS`` for the edge rule."""
    if percent is None:
        return 0
    p = round(float(percent), _PERCENT_DIGITS)
    points = 0
    for index, (edge, inclusive) in enumerate(bins):
        if p > edge or (inclusive and p >= edge):
            points = index + 1
    return points


def check_bins(bins: SeverityBins) -> tuple[tuple[float, bool], ...]:
    try:
        out = tuple((float(edge), bool(inclusive)) for edge, inclusive in bins)
    except (TypeError, ValueError) as exc:
        raise CovidMTLError(f"severity bins must be (edge_percent, inclusive) pairs: {exc}") from None
    edges = [edge for edge, _ in out]
    if not out or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0 or edges[-1] >= 100:
        raise CovidMTLError(f"severity bins need increasing edges in [0, 100), got {edges}")
    return out


def _percent(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def _region(lesion: np.ndarray, region: np.ndarray, voxel_ml: float | None, bins) -> dict[str, Any]:
    """Lung / lesion volumes, percent involved and points of one region (a lung, zone or lobe)."""
    n_region = int(region.sum())
    n_lesion = int((lesion & region).sum())
    percent = _percent(n_lesion, n_region)
    return {
        "lung_voxels": n_region,
        "lesion_voxels": n_lesion,
        "lung_ml": _ml(n_region, voxel_ml),
        "lesion_ml": _ml(n_lesion, voxel_ml),
        "percent_involved": None if percent is None else round(percent, 2),
        "points": severity_points(percent, bins) if n_region else 0,
    }


def _ml(voxels: int, voxel_ml: float | None) -> float | None:
    return None if voxel_ml is None else round(voxels * voxel_ml, 3)


def lesion_ml(lesion_mask: np.ndarray, spacing: tuple[float, float, float] | None) -> float | None:
    """Lesion volume in mL (None without spacing): the number :func:`quantify` reports as ``lesion_ml``."""
    voxel_ml = float(np.prod(spacing)) / 1000.0 if spacing is not None else None
    return _ml(int((np.asarray(lesion_mask) > 0).sum()), voxel_ml)


def zone_masks(labels: np.ndarray, side: int, superior_at_high_z: bool) -> dict[str, np.ndarray]:
    """Upper / middle / lower thirds of one lung along z of that lung's own extent (by slice index)."""
    lung = labels == side
    zs = np.flatnonzero(lung.any(axis=(1, 2)))
    out = {zone: np.zeros_like(lung) for zone in ZONES}
    if zs.size == 0:
        return out
    low, count = int(zs[0]), int(zs[-1] - zs[0] + 1)
    third = np.clip((3 * (np.arange(lung.shape[0]) - low)) // count, 0, 2)  # 0 = lowest z index
    names = ("lower", "middle", "upper") if superior_at_high_z else ("upper", "middle", "lower")
    for k in range(3):
        sel = third == k
        out[names[k]][sel] = lung[sel]
    return out


def _lobes(lesion, lobes, lobe_labels, voxel_ml, bins, flags) -> tuple[dict | None, int | None]:
    if lobes.shape != lesion.shape:
        raise CovidMTLError(f"lobe labelmap shape {lobes.shape} differs from the lesion mask's {lesion.shape}")
    lobes = np.asarray(lobes).astype(np.int64, copy=False)
    found = set(np.unique(lobes).tolist()) - {0}
    missing = [name for value, name in lobe_labels.items() if value not in found]
    if len(missing) == len(lobe_labels):
        raise CovidMTLError(
            f"lobe labelmap holds none of the lobe labels {sorted(lobe_labels)} (values found: {sorted(found)[:10]}); "
            f"TotalSegmentator v2 lobes are 10-14, pass lobe_labels=TOTALSEGMENTATOR_V1_LOBES for v1"
        )
    if missing:
        flags.append("lobes_missing:" + ",".join(missing))
    per_lobe = {name: _region(lesion, lobes == value, voxel_ml, bins) for value, name in lobe_labels.items()}
    return per_lobe, sum(r["points"] for r in per_lobe.values())


def quantify(
    lesion_mask: np.ndarray,
    lung: LungMask | None,
    spacing: tuple[float, float, float] | None,
    lobes: np.ndarray | None = None,
    bins: SeverityBins = DEFAULT_BINS,
    lobe_labels: dict[int, str] = TOTALSEGMENTATOR_LOBES,
    hu: np.ndarray | None = None,
    dropped_voxels: int | None = None,
) -> dict[str, Any]:
    """JSON-safe measures of a (z, y, x) lesion mask; see the module docstring for scores and edges.

    ``lung`` None or unavailable: only lesion volume (fractions and scores are None, flagged). ``spacing``
    None (PNG slice): volumes are None and only voxel counts and fractions are given. ``lobes``: a lobe
    labelmap on the same grid with ``lobe_labels`` values (TotalSegmentator v2 by default). ``warnings``: the
    self-checks of :mod:`covid_mtl.measure.checks` (``hu``, the CT in HU on the same grid, adds the check of
    dense voxels in the lung mask). ``dropped_voxels``: the predicted lesion voxels left out because they lie
    outside the lungs (``covid_mtl.lungs.confine``); given, they are ``lesion_outside_lung_*``; otherwise the
    lesion outside the lung mask is.
    """
    lesion = np.asarray(lesion_mask) > 0
    if lesion.ndim == 2:
        lesion = lesion[None]
    if lesion.ndim != 3:
        raise CovidMTLError(f"lesion mask must be (z, y, x), got shape {np.shape(lesion_mask)}")
    bins = check_bins(bins)
    flags: list[str] = []
    voxel_ml = float(np.prod(spacing)) / 1000.0 if spacing is not None else None
    if voxel_ml is None:
        flags.append("spacing_unknown:volumes_skipped")
    if lesion.shape[0] == 1:
        flags.append("single_slice")
    out: dict[str, Any] = {
        "lesion_voxels": int(lesion.sum()),
        "lesion_ml": _ml(int(lesion.sum()), voxel_ml),
        "voxel_ml": voxel_ml,
        "lung_available": False,
        "lung_ml": None,
        "lesion_in_lung_ml": None,
        "percent_involved": None,
        "lesion_outside_lung_voxels": None,
        "lesion_outside_lung_ml": None,
        "lungs": None,
        "zones": None,
        "zone_severity_score": None,
        "zone_severity_max": 6 * len(bins),
        "lobes": None,
        "lobe_severity_score": None,
        "lobe_severity_max": len(lobe_labels) * len(bins),
        "bins": [[edge, inclusive] for edge, inclusive in bins],
        "flags": flags,
        "warnings": [],
    }
    if lung is None or not lung.available or lung.labels is None:
        flags.append("no_lung_mask" + (f": {lung.reason}" if lung is not None and lung.reason else ""))
    else:
        labels = lung.labels
        if labels.shape != lesion.shape:
            raise CovidMTLError(f"lung mask shape {labels.shape} differs from the lesion mask's {lesion.shape}")
        # every measure lies in the lungs' and the lesion's in-plane box: a third of a chest CT's voxels
        rows = np.flatnonzero((labels > 0).any(axis=(0, 2)) | lesion.any(axis=(0, 2)))
        cols = np.flatnonzero((labels > 0).any(axis=(0, 1)) | lesion.any(axis=(0, 1)))
        if rows.size:
            box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            lesion_in, labels = lesion[box], labels[box]
            lung = replace(lung, labels=labels)
            hu = None if hu is None or hu.shape != lesion.shape else hu[box]
        else:
            lesion_in = lesion
        _lung_measures(out, lesion_in, lung, voxel_ml, bins, flags, dropped_voxels)
        out["warnings"] = lung_checks(labels, lesion_in, voxel_ml, out["lungs"]["right"]["lung_voxels"],
                                     out["lungs"]["left"]["lung_voxels"], out["lesion_outside_lung_voxels"], hu)
    if lobes is not None:
        out["lobes"], out["lobe_severity_score"] = _lobes(lesion, lobes, lobe_labels, voxel_ml, bins, flags)
    return out


def _lung_measures(out, lesion, lung: LungMask, voxel_ml, bins, flags, dropped: int | None) -> None:
    labels = lung.labels
    whole = _region(lesion, labels > 0, voxel_ml, bins)
    outside = int((lesion & (labels == 0)).sum()) if dropped is None else int(dropped)
    out.update(
        lung_available=True,
        lung_ml=whole["lung_ml"],
        lesion_in_lung_ml=whole["lesion_ml"],
        percent_involved=whole["percent_involved"],
        lesion_outside_lung_voxels=outside,
        lesion_outside_lung_ml=_ml(outside, voxel_ml),
        lungs={LUNG_NAMES[side]: _region(lesion, labels == side, voxel_ml, bins) for side in (RIGHT_LUNG, LEFT_LUNG)},
    )
    if whole["lung_voxels"] == 0:
        flags.append("lung_mask_empty")
        return
    if lung.superior_at_high_z is None or labels.shape[0] < 3:
        flags.append("zones_skipped:need_3d_lung_mask")
        return
    zones: dict[str, Any] = {}
    for side in (RIGHT_LUNG, LEFT_LUNG):
        for zone, region in zone_masks(labels, side, lung.superior_at_high_z).items():
            zones[f"{LUNG_NAMES[side]}_{zone}"] = _region(lesion, region, voxel_ml, bins)
    empty = [name for name, r in zones.items() if r["lung_voxels"] == 0]
    if empty:
        flags.append("zones_empty:" + ",".join(empty))
    out["zones"] = zones
    out["zone_severity_score"] = int(sum(r["points"] for r in zones.values()))
