"""Self-checks of the measures: named warnings a radiologist sees next to the numbers they affect.

Each warning is a JSON-safe dict ``{name, message, value, limit, affects}``; ``affects`` lists the keys of the
quantify() dict whose numbers it puts in doubt. The checks never change a number, they say when one is doubtful:

- ``lungs_not_fully_covered``: the lung mask reaches the first or last slice, so the scan cuts the lungs and
  volumes and percentages cover only the part scanned.
- ``lung_volume_implausible``: total lung volume of a fully covered chest outside ``PLAUSIBLE_LUNG_ML`` (adult
  CT lung volumes are mostly 3 to 6.5 L; 7.9 to 8.5 L on real scans came from a mask enclosing the liver dome).
- ``lung_mask_dense``: more than ``MAX_DENSE_SHARE`` of the lung mask's voxels outside the lesion mask are above
  ``DENSE_HU`` (soft tissue: an organ, the chest wall or the table inside the mask, or lesion the model missed).
  Vessels, bronchial walls and partial volume put 3.1 % there on the real chest crop in shared/ and 1.4-2.1 %
  on phantoms; a liver dome enclosed in a 5-6 L lung mask adds 15-20 %.
- ``lung_imbalance``: in a fully covered chest, the smaller lung, even with the lesion the lung mask missed added
  to it, is under ``MIN_SIDE_RATIO`` of the larger (normal left/right ratios are about 0.8 to 0.95), or a lung
  is missing. Not checked on a cut scan: its lung bases or apices alone say nothing about the sides.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


PLAUSIBLE_LUNG_ML = (2500.0, 7500.0)
DENSE_HU = -200.0
MAX_DENSE_SHARE = 0.10
MIN_SIDE_RATIO = 0.6
VOLUME_KEYS = ["lung_ml", "percent_involved", "lungs", "zones", "zone_severity_score"]


def warning(name: str, message: str, value: Any = None, limit: Any = None, affects: list[str] | None = None
            ) -> dict[str, Any]:
    """One named warning (JSON-safe)."""
    return {"name": name, "message": message, "value": value, "limit": limit, "affects": list(affects or [])}


def doubting(warnings: list[Mapping[str, Any]] | None, key: str) -> list[str]:
    """The names of the warnings that put ``key``'s number in doubt (``key`` in their ``affects``)."""
    return [str(w.get("name")) for w in warnings or [] if key in (w.get("affects") or [])]


def coverage_check(labels: np.ndarray) -> list[dict[str, Any]]:
    if labels.shape[0] < 3:
        return []
    cut = [where for where, z in (("first", 0), ("last", -1)) if labels[z].any()]
    if not cut:
        return []
    return [warning("lungs_not_fully_covered",
                    f"the lung mask reaches the {' and '.join(cut)} slice: the scan cuts the lungs, so lung volume "
                    "and percentages cover only the part scanned", value=cut, affects=VOLUME_KEYS)]


def volume_check(total_ml: float | None, covered: bool) -> list[dict[str, Any]]:
    low, high = PLAUSIBLE_LUNG_ML
    if total_ml is None or not covered or low <= total_ml <= high:
        return []
    side = "above" if total_ml > high else "below"
    return [warning("lung_volume_implausible",
                    f"lung volume {total_ml / 1000:.2f} L is {side} the plausible adult range "
                    f"{low / 1000:.1f}-{high / 1000:.1f} L: check the lung mask (report's coronal view) before "
                    "reading percentages and scores", value=round(total_ml, 1), limit=[low, high],
                    affects=VOLUME_KEYS)]


def dense_check(labels: np.ndarray, lesion: np.ndarray, hu: np.ndarray | None) -> list[dict[str, Any]]:
    if hu is None or hu.shape != labels.shape:
        return []
    lung = (labels > 0) & ~lesion
    n = int(lung.sum())
    if n == 0:
        return []
    share = float((hu[lung] > DENSE_HU).sum()) / n
    if share <= MAX_DENSE_SHARE:
        return []
    return [warning("lung_mask_dense",
                    f"{100 * share:.0f} % of the lung mask outside the lesion is above {DENSE_HU:.0f} HU (normal: under "
                    f"{100 * MAX_DENSE_SHARE:.0f} %): the mask may hold an organ, chest wall or table, or lesion the "
                    "model missed", value=round(share, 4), limit=MAX_DENSE_SHARE, affects=VOLUME_KEYS)]


def balance_check(right_ml: float, left_ml: float, missed_lesion_ml: float) -> list[dict[str, Any]]:
    """Volumes (or voxel counts) of each lung and the lesion outside the lung mask, in the same unit."""
    large, small = max(right_ml, left_ml), min(right_ml, left_ml)
    if large <= 0:
        return []
    ratio = (small + max(missed_lesion_ml, 0.0)) / large
    if ratio >= MIN_SIDE_RATIO:
        return []
    smaller = "right" if right_ml < left_ml else "left"
    what = "is missing" if small == 0 else f"is {100 * small / large:.0f} % of the other"
    return [warning("lung_imbalance",
                    f"the {smaller} lung {what}, more than the lesion outside the lung mask explains: one lung may be "
                    "cut, collapsed or partly missed by the mask", value=round(ratio, 3), limit=MIN_SIDE_RATIO,
                    affects=["lungs", "zones", "percent_involved", "zone_severity_score"])]


def lung_checks(labels: np.ndarray, lesion: np.ndarray, voxel_ml: float | None, right_voxels: int,
                left_voxels: int, outside_voxels: int, hu: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Every check of a lung labelmap (z, y, x) with its lesion mask, given the voxel counts quantify has already
    taken (each lung, lesion outside the lung mask); ``hu`` enables ``lung_mask_dense``."""
    if right_voxels + left_voxels == 0:
        return []
    unit = voxel_ml if voxel_ml is not None else 1.0
    out = coverage_check(labels)
    covered = not out and labels.shape[0] >= 3
    total = (right_voxels + left_voxels) * voxel_ml if voxel_ml is not None else None
    out += volume_check(total, covered)
    out += dense_check(labels, lesion, hu)
    if not covered:
        return out
    out += balance_check(right_voxels * unit, left_voxels * unit, outside_voxels * unit)
    return out
