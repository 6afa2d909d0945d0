"""Measures: exact numbers on hand-built volumes, score edges, zones, lobes, missing inputs, phantoms."""
from __future__ import annotations

import json

import numpy as np
import pytest

from covid_mtl.errors import CovidMTLError
from covid_mtl.lungs.mask import LEFT_LUNG, RIGHT_LUNG, LungMask, lung_mask, unavailable
from covid_mtl.demo.phantom import make_phantom
from covid_mtl.measure.quantify import (
    DEFAULT_BINS,
    TOTALSEGMENTATOR_LOBES,
    TOTALSEGMENTATOR_V1_LOBES,
    quantify,
    severity_points,
)

SPACING = (2.0, 1.0, 1.0)  # 2 uL voxels
VOXEL_ML = 0.002


@pytest.mark.parametrize("percent,points", [
    (0.0, 0), (1e-6, 1), (4.999, 1), (5.0, 2), (0.05 * 100, 2), (25.0, 2), (25.01, 3), (50.0, 3),
    (50.01, 4), (75.0, 4), (75.01, 5), (100.0, 5),
])
def test_default_bins_edges(percent: float, points: int) -> None:
    assert severity_points(percent, DEFAULT_BINS) == points


def test_custom_bins_and_bad_bins() -> None:
    bins = ((0.0, False), (10.0, True))
    assert [severity_points(p, bins) for p in (0, 9.9, 10, 80)] == [0, 1, 2, 2]
    lung = _box_lungs()
    result = quantify(np.zeros_like(lung.labels), lung, SPACING, bins=bins)
    assert result["zone_severity_max"] == 12
    with pytest.raises(CovidMTLError):
        quantify(np.zeros_like(lung.labels), lung, SPACING, bins=((5.0, False), (5.0, True)))


def _box_lungs(superior_at_high_z: bool = True) -> LungMask:
    """Right lung x 0..9, left lung x 20..29, both z 0..29 (10 slices per third), 10 rows: 3000 voxels each."""
    labels = np.zeros((30, 10, 30), np.uint8)
    labels[:, :, 0:10] = RIGHT_LUNG
    labels[:, :, 20:30] = LEFT_LUNG
    return LungMask(labels, True, None, SPACING, superior_at_high_z, [])


def _lesion() -> np.ndarray:
    lesion = np.zeros((30, 10, 30), np.uint8)
    lesion[20:30, :, 0:10] = 1          # whole right upper third: 1000 voxels, 100 %
    lesion[0:10, 0:5, 20:22] = 1        # left lower third: 100 of 1000 voxels, 10 %
    lesion[10:20, 0:1, 20:25] = 1       # left middle third: 50 of 1000 voxels, exactly 5 %
    lesion[0:2, 0:5, 12:17] = 1         # 50 voxels between the lungs: outside the lung mask
    return lesion


def test_exact_measures_on_box_lungs() -> None:
    r = quantify(_lesion(), _box_lungs(), SPACING)
    assert r["lesion_voxels"] == 1200 and r["lesion_ml"] == pytest.approx(1200 * VOXEL_ML)
    assert r["lung_ml"] == pytest.approx(6000 * VOXEL_ML)
    assert r["lesion_in_lung_ml"] == pytest.approx(1150 * VOXEL_ML)
    assert r["percent_involved"] == pytest.approx(100 * 1150 / 6000, abs=0.01)
    assert r["lesion_outside_lung_voxels"] == 50 and r["lesion_outside_lung_ml"] == pytest.approx(0.1)
    assert r["lungs"]["right"]["percent_involved"] == pytest.approx(100 * 1000 / 3000, abs=0.01)
    assert r["lungs"]["left"]["percent_involved"] == pytest.approx(5.0)
    zones = {k: (v["percent_involved"], v["points"]) for k, v in r["zones"].items()}
    assert zones == {
        "right_upper": (100.0, 5), "right_middle": (0.0, 0), "right_lower": (0.0, 0),
        "left_upper": (0.0, 0), "left_middle": (5.0, 2), "left_lower": (10.0, 2),
    }
    assert r["zone_severity_score"] == 9 and r["zone_severity_max"] == 30
    assert r["lobes"] is None and r["lobe_severity_score"] is None
    json.dumps(r)  # JSON-safe as it stands


def test_zones_follow_the_head_direction() -> None:
    r = quantify(_lesion(), _box_lungs(superior_at_high_z=False), SPACING)
    assert r["zones"]["right_lower"]["percent_involved"] == 100.0
    assert r["zones"]["left_upper"]["percent_involved"] == 10.0
    assert r["zone_severity_score"] == 9


def test_zones_use_each_lungs_own_extent() -> None:
    lung = _box_lungs()
    lung.labels[0:15, :, 20:30] = 0  # left lung only in z 15..29: its thirds are 5 slices each
    lesion = np.zeros_like(lung.labels)
    lesion[15:20, :, 20:30] = 1
    r = quantify(lesion, lung, SPACING)
    assert r["zones"]["left_lower"]["percent_involved"] == 100.0
    assert r["zones"]["left_middle"]["lung_voxels"] == 500


def test_unknown_spacing_gives_fractions_only() -> None:
    r = quantify(_lesion(), _box_lungs(), None)
    assert r["lesion_ml"] is None and r["lung_ml"] is None and r["lesion_outside_lung_ml"] is None
    assert r["percent_involved"] == pytest.approx(100 * 1150 / 6000, abs=0.01)
    assert r["zone_severity_score"] == 9
    assert any(f.startswith("spacing_unknown") for f in r["flags"])


def test_without_a_lung_mask_only_the_lesion_is_measured() -> None:
    for lung in (None, unavailable("image is not in Hounsfield units")):
        r = quantify(_lesion(), lung, SPACING)
        assert r["lesion_ml"] == pytest.approx(2.4)
        assert r["percent_involved"] is None and r["zones"] is None and r["zone_severity_score"] is None
        assert any(f.startswith("no_lung_mask") for f in r["flags"])
    r = quantify(_lesion(), unavailable("not HU"), SPACING)
    assert "not HU" in " ".join(r["flags"])


def test_single_slice_skips_zones() -> None:
    labels = np.zeros((1, 20, 20), np.uint8)
    labels[0, :, :10], labels[0, :, 10:] = RIGHT_LUNG, LEFT_LUNG
    lesion = np.zeros_like(labels)
    lesion[0, :10, :10] = 1
    r = quantify(lesion, LungMask(labels, True, None, (1.0, 1.0, 1.0), None, []), (1.0, 1.0, 1.0))
    assert r["lungs"]["right"]["percent_involved"] == 50.0 and r["zones"] is None
    assert "zones_skipped:need_3d_lung_mask" in r["flags"] and "single_slice" in r["flags"]


def test_lobes_totalsegmentator_labels() -> None:
    lesion = np.zeros((10, 10, 50), np.uint8)
    lobes = np.zeros_like(lesion)
    for i, value in enumerate(sorted(TOTALSEGMENTATOR_LOBES)):  # 10..14, each a 10x10x10 block
        lobes[:, :, 10 * i:10 * (i + 1)] = value
    lesion[:, :, 0:10] = 1            # left upper (10): 100 %
    lesion[0:3, :, 10:20] = 1         # left lower (11): 30 %
    lesion[0, 0:5, 40:50] = 1         # right lower (14): 5 %
    r = quantify(lesion, None, SPACING, lobes=lobes)
    got = {k: (v["percent_involved"], v["points"]) for k, v in r["lobes"].items()}
    assert got == {"left_upper": (100.0, 5), "left_lower": (30.0, 3), "right_upper": (0.0, 0),
                   "right_middle": (0.0, 0), "right_lower": (5.0, 2)}
    assert r["lobe_severity_score"] == 10 and r["lobe_severity_max"] == 25
    v1 = quantify(lesion, None, SPACING, lobes=lobes + 3, lobe_labels=TOTALSEGMENTATOR_V1_LOBES)
    assert v1["lobe_severity_score"] == 10
    with pytest.raises(CovidMTLError, match="lobe labels"):
        quantify(lesion, None, SPACING, lobes=(lobes > 0).astype(np.uint8))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(CovidMTLError, match="shape"):
        quantify(np.zeros((30, 10, 31)), _box_lungs(), SPACING)


@pytest.mark.parametrize("kind,seed", [("covid", 0), ("covid", 3)])
def test_phantom_measures_within_tolerance(kind: str, seed: int) -> None:
    from dataclasses import replace

    from covid_mtl.lungs.confine import confine, with_lesion

    ph = make_phantom(kind, seed)
    lm = lung_mask(ph.hu, ph.spacing, ph.affine)
    kept = confine(ph.lesion, lm.labels, ph.spacing)
    # the consolidated cores at the pleura lie outside the air-based mask; kept up to the reach, they join it
    assert kept.dropped_voxels <= 0.05 * (ph.lesion > 0).sum()
    lm = replace(lm, labels=with_lesion(lm.labels, kept.lesion)[0])
    r = quantify(kept.lesion, lm, ph.spacing, dropped_voxels=kept.dropped_voxels)
    voxel_ml = float(np.prod(ph.spacing)) / 1000
    truth_lung = ph.lung > 0
    truth_lesion = ph.lesion > 0
    true_percent = 100 * (truth_lesion & truth_lung).sum() / truth_lung.sum()
    assert r["lesion_ml"] == pytest.approx(truth_lesion.sum() * voxel_ml, rel=0.05)
    assert r["lesion_ml"] + r["lesion_outside_lung_ml"] == pytest.approx(truth_lesion.sum() * voxel_ml, abs=1e-3)
    assert r["lung_ml"] == pytest.approx(truth_lung.sum() * voxel_ml, rel=0.03)
    assert abs(r["percent_involved"] - true_percent) <= 1.0  # percentage points
    assert 0 < r["zone_severity_score"] <= 30


def test_consolidation_beyond_the_reach_is_reported_not_counted() -> None:
    """The price of keeping the lesion inside the air-based lung mask: a lobe consolidated solid (no air left, so
    no lung in the mask) is counted only near the aerated lung, and what is dropped is reported, not lost."""
    from scipy import ndimage

    from covid_mtl.lungs.confine import REACH_MM, confine

    ph = make_phantom("other", 1)
    assert ph.pattern == "lobar"
    lm = lung_mask(ph.hu, ph.spacing, ph.affine)
    kept = confine(ph.lesion, lm.labels, ph.spacing)
    r = quantify(kept.lesion, lm, ph.spacing, dropped_voxels=kept.dropped_voxels)
    voxel_ml = float(np.prod(ph.spacing)) / 1000
    assert kept.dropped_voxels > 0.5 * (ph.lesion > 0).sum()
    assert r["lesion_outside_lung_ml"] == pytest.approx(kept.dropped_voxels * voxel_ml, abs=1e-3)
    assert r["lesion_ml"] + r["lesion_outside_lung_ml"] == pytest.approx((ph.lesion > 0).sum() * voxel_ml, abs=1e-3)
    beyond = (kept.lesion > 0) & (lm.labels == 0)  # what is kept outside the lung mask lies within the reach
    distance = ndimage.distance_transform_edt(lm.labels == 0, sampling=(1e6,) + ph.spacing[1:])  # in-plane only
    assert not beyond.any() or distance[beyond].max() <= REACH_MM + 1e-6


def test_paint_outside_the_lungs_keeps_only_what_lies_in_them() -> None:
    """A painted organ beside the lung (mostly outside it) keeps only its voxels in the lung mask; a lesion lying
    mostly in the lung keeps its dense edge beside the mask."""
    from covid_mtl.lungs.confine import confine

    lung = np.zeros((6, 60, 60), bool)
    lung[:, 10:50, 10:30] = True
    organ = np.zeros_like(lung)
    organ[1:5, 10:50, 28:50] = True  # 2 columns in the lung, 20 beside it
    patch = np.zeros_like(lung)
    patch[1:5, 20:30, 20:33] = True  # 10 columns in the lung, 3 beside it (the consolidated subpleural edge)
    kept = confine(organ, lung, (5.0, 1.0, 1.0), superior_at_high_z=None)
    assert (kept.lesion > 0).sum() == (organ & lung).sum() and kept.dropped_voxels == (organ & ~lung).sum()
    kept = confine(patch, lung, (5.0, 1.0, 1.0), superior_at_high_z=None)
    assert kept.dropped_voxels == 0


def test_partial_volume_on_the_diaphragm_is_dropped() -> None:
    """A thin "lesion" lying on the lung's footward surface is the dome of the diaphragm in a thick slice."""
    from covid_mtl.lungs.confine import confine

    lung = np.zeros((12, 40, 40), bool)
    lung[4:12, 5:35, 5:35] = True  # lung above slice 4; below it the abdomen (head at high z)
    on_dome = np.zeros_like(lung)
    on_dome[4, 10:20, 10:20] = True
    inside = np.zeros_like(lung)
    inside[7:10, 10:20, 22:30] = True
    kept = confine(on_dome | inside, lung, (2.5, 1.0, 1.0), superior_at_high_z=True)
    assert not (kept.lesion[on_dome] > 0).any() and (kept.lesion[inside] > 0).all()
    assert kept.dropped_on_diaphragm_voxels == on_dome.sum()


# --- issue 14: self-checks as named warnings -----------------------------------------------------------------

def _names(result) -> list[str]:
    return [w["name"] for w in result["warnings"]]


def _chest_lungs(right_ml: float, left_ml: float, spacing=(10.0, 10.0, 10.0)) -> LungMask:
    """Two box lungs inside a 12-slice stack (slices 0 and 11 empty: the chest is fully covered); 1 mL voxels."""
    nz = 12
    labels = np.zeros((nz, 40, 80), np.uint8)
    for side, ml, x0 in ((RIGHT_LUNG, right_ml, 0), (LEFT_LUNG, left_ml, 40)):
        n = int(round(ml / (np.prod(spacing) / 1000)))
        flat = labels[1:nz - 1, :, x0:x0 + 40].reshape(-1)
        flat[:n] = side
        labels[1:nz - 1, :, x0:x0 + 40] = flat.reshape(nz - 2, 40, 40)
    return LungMask(labels, True, None, spacing, True, [])


def test_plausible_chest_has_no_warnings() -> None:
    lung = _chest_lungs(2600, 2300)
    r = quantify(np.zeros_like(lung.labels), lung, lung.spacing, hu=np.where(lung.labels > 0, -850.0, 40.0))
    assert r["lung_ml"] == pytest.approx(4900) and r["warnings"] == []


@pytest.mark.parametrize("right,left,name", [(4400, 4100, "lung_volume_implausible"),  # the 8.5 L report
                                             (900, 800, "lung_volume_implausible"),
                                             (3000, 1200, "lung_imbalance"), (3000, 0, "lung_imbalance")])
def test_implausible_volume_and_imbalance_are_named(right: float, left: float, name: str) -> None:
    lung = _chest_lungs(right, left)
    r = quantify(np.zeros_like(lung.labels), lung, lung.spacing)
    assert name in _names(r)
    w = next(w for w in r["warnings"] if w["name"] == name)
    assert w["message"] and ("percent_involved" in w["affects"]) and json.dumps(w)


def test_imbalance_explained_by_missed_lesion_is_not_flagged() -> None:
    lung = _chest_lungs(3000, 1500)
    lesion = np.zeros_like(lung.labels)
    assert "lung_imbalance" in _names(quantify(lesion, lung, lung.spacing))
    lesion[0, :, 40:80] = 1  # 1600 mL of lesion outside the lung mask (a consolidated, collapsed lower lobe)
    assert "lung_imbalance" not in _names(quantify(lesion, lung, lung.spacing))


def test_dense_lung_mask_outside_the_lesion_is_flagged_and_lesion_excuses_it() -> None:
    lung = _chest_lungs(2600, 2300)
    hu = np.where(lung.labels > 0, -850.0, 40.0)
    dense = np.zeros(hu.shape, bool)
    dense[1:11, 0:8, :] = lung.labels[1:11, 0:8, :] > 0  # a quarter of the mask at liver HU
    hu[dense] = 60.0
    share = dense.sum() / (lung.labels > 0).sum()
    assert 0.2 < share < 0.3
    r = quantify(np.zeros_like(lung.labels), lung, lung.spacing, hu=hu)
    assert _names(r) == ["lung_mask_dense"] and r["warnings"][0]["value"] == pytest.approx(share, abs=1e-4)
    assert _names(quantify(dense.astype(np.uint8), lung, lung.spacing, hu=hu)) == []  # dense = the lesion
    assert _names(quantify(np.zeros_like(lung.labels), lung, lung.spacing)) == []  # no HU: not checked


def test_cut_scan_says_so_instead_of_judging_volume_or_sides() -> None:
    lung = _chest_lungs(900, 300)  # too small and unbalanced, but the scan cuts the lungs
    lung.labels[0] = lung.labels[1]
    r = quantify(np.zeros_like(lung.labels), lung, lung.spacing)
    assert _names(r) == ["lungs_not_fully_covered"] and r["warnings"][0]["value"] == ["first"]


def test_quantify_checks_the_hu_of_real_images() -> None:
    from covid_mtl.image import Image

    ph = make_phantom("covid", 2, shape=(12, 96, 96), spacing=(5.0, 2.0, 2.0))
    hu = ph.hu.astype(np.float32)
    image = Image(hu, ph.spacing, ph.affine, True, "phantom")
    lung = lung_mask(image)
    leaky = LungMask(np.where((lung.labels == 0) & (hu > 0) & (np.arange(96)[None, :, None] < 70), RIGHT_LUNG,
                              lung.labels).astype(np.uint8), True, None, ph.spacing, True, [])
    assert "lung_mask_dense" not in _names(quantify(ph.lesion, lung, ph.spacing, hu=hu))
    assert "lung_mask_dense" in _names(quantify(ph.lesion, leaky, ph.spacing, hu=hu))
