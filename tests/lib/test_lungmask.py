"""Classical lung mask: phantoms with a known lung, side convention, non-HU refusal, real scans."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covid_mtl.image import Image
from covid_mtl.io import read_image
from covid_mtl.measure.lungmask import LEFT_LUNG, RIGHT_LUNG, lung_mask
from covid_mtl.demo.phantom import make_phantom


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("kind,seed", [("normal", 0), ("covid", 1), ("other", 0), ("other", 2)])
def test_phantom_lung_mask_matches_truth(kind: str, seed: int) -> None:
    ph = make_phantom(kind, seed)
    lm = lung_mask(ph.hu, ph.spacing, ph.affine, lesion=ph.lesion > 0)
    truth = ph.lung > 0
    assert lm.available and lm.superior_at_high_z is True
    assert _dice(lm.mask, truth) >= 0.97
    true_ml = truth.sum() * np.prod(ph.spacing) / 1000
    assert abs(lm.volume_ml() - true_ml) <= 0.03 * true_ml
    # phantom x grows towards the patient's left, so the right lung sits at small x
    right_x = np.argwhere(lm.labels == RIGHT_LUNG)[:, 2].mean()
    left_x = np.argwhere(lm.labels == LEFT_LUNG)[:, 2].mean()
    assert right_x < left_x
    assert 0.35 < lm.volume_ml(RIGHT_LUNG) / lm.volume_ml() < 0.65


def test_consolidated_lobe_needs_the_lesion_to_count_as_lung() -> None:
    ph = make_phantom("other", 1)  # lobar consolidation: dense, never below the air threshold
    assert ph.pattern == "lobar"
    truth = ph.lung > 0
    plain = lung_mask(ph.hu, ph.spacing, ph.affine)
    aware = lung_mask(ph.hu, ph.spacing, ph.affine, lesion=ph.lesion > 0)
    assert _dice(plain.mask, truth) < 0.95  # the classical mask alone misses the lobe
    assert _dice(aware.mask, truth) >= 0.97
    assert "lesion_added" in aware.flags
    assert (aware.mask[ph.lesion > 0]).all()


def test_lungs_touching_at_the_anterior_junction_are_split() -> None:
    ph = make_phantom("normal", 0)
    lung = ph.lung > 0
    hu = ph.hu.copy()
    nx = hu.shape[2]
    rows = np.flatnonzero(lung[15].any(axis=1))
    y = rows[len(rows) // 3]  # anterior part of the lungs
    xs = np.flatnonzero(lung[15, y])
    hu[10:20, y - 2:y + 2, xs[xs < nx // 2].max():xs[xs > nx // 2].min() + 1] = -850  # aerated bridge
    lm = lung_mask(hu, ph.spacing, ph.affine)
    assert "split_by_watershed" in lm.flags
    true_right = lung & (np.arange(nx)[None, None, :] < nx // 2)
    assert _dice(lm.labels == RIGHT_LUNG, true_right) >= 0.97
    assert _dice(lm.labels == LEFT_LUNG, lung & ~true_right) >= 0.97


def test_sides_follow_the_patient_not_the_array() -> None:
    ph = make_phantom("normal", 0)
    lm = lung_mask(ph.hu, ph.spacing, ph.affine)
    # the same scan stored with x reversed (RAS-like layout): labels must mirror, sides must not swap
    affine = ph.affine.copy()
    nx = ph.hu.shape[2]
    affine[:3, 3] = affine[:3, 3] + affine[:3, 0] * (nx - 1)
    affine[:3, 0] = -affine[:3, 0]
    flipped = lung_mask(ph.hu[:, :, ::-1], ph.spacing, affine)
    np.testing.assert_array_equal(flipped.labels[:, :, ::-1], lm.labels)
    assert "orientation_assumed" not in lm.flags
    assumed = lung_mask(ph.hu, ph.spacing)  # no affine: DICOM layout assumed, and said so
    assert "orientation_assumed" in assumed.flags
    np.testing.assert_array_equal(assumed.labels, lm.labels)


def test_non_hu_image_is_skipped_with_a_reason() -> None:
    png_like = Image(array=np.full((1, 64, 64), 128, np.float32), spacing=None, affine=None, is_hu=False,
                     source="slice.png", bit_depth=8)
    lm = lung_mask(png_like)
    assert not lm.available and lm.labels is None
    assert "Hounsfield" in lm.reason
    assert lm.volume_ml() is None and lm.summary()["available"] is False


def test_body_without_air_gives_an_empty_mask_not_an_error() -> None:
    hu = np.full((4, 48, 48), -1000.0, np.float32)
    hu[:, 8:40, 8:40] = 40.0  # soft tissue block in air: no lung
    lm = lung_mask(hu, (2.0, 1.0, 1.0))
    assert lm.available and not lm.mask.any()
    assert "no_lung_found" in lm.flags


# relative path, total mL range, both lungs expected, min mL per lung
REAL_CASES = [
    ("totalsegmentator_example/example_ct.nii.gz", (60, 300), True, 20),  # thorax-abdomen: lung bases only
    ("totalsegmentator_example/pulmonary_report_ct_cropped.nii.gz", (1200, 3500), True, 400),
    ("lungmask_testdata/0.dcm", (8, 30), True, 3),  # one 1 mm slice: 80-300 cm2 of lung
    ("pydicom_ct_small/CT_small.dcm", (2, 20), True, 1),  # 128x128 crop: posterior parts of both lungs
]


@pytest.mark.parametrize("relative,volume_range,both,min_ml", REAL_CASES)
def test_real_scan_lung_volume_is_plausible(real_ct: Path, relative: str, volume_range, both: bool,
                                            min_ml: float) -> None:
    image = read_image(real_ct / relative)
    lm = lung_mask(image)
    low, high = volume_range
    assert lm.available
    assert low <= lm.volume_ml() <= high, lm.summary()
    if both:
        assert lm.volume_ml(RIGHT_LUNG) >= min_ml and lm.volume_ml(LEFT_LUNG) >= min_ml, lm.summary()
    assert not lm.mask[image.array < -1100].any()  # never the -2048 outside the field of view
    # patient's left lung lies towards RAS -x
    ijk_right = np.argwhere(lm.labels == RIGHT_LUNG)[:, ::-1].mean(axis=0)
    ijk_left = np.argwhere(lm.labels == LEFT_LUNG)[:, ::-1].mean(axis=0)
    ras = image.affine[:3, :3]
    assert (ras @ ijk_right)[0] > (ras @ ijk_left)[0]


def test_real_block_gives_the_same_lungs_as_the_full_scan(real_ct: Path) -> None:
    full = lung_mask(read_image(real_ct / "totalsegmentator_example/example_ct.nii.gz"))
    block = lung_mask(read_image(real_ct / "totalsegmentator_example/example_ct_sm.nii.gz"))
    assert block.volume_ml() == pytest.approx(full.volume_ml(), rel=0.02)


def test_real_upper_abdomen_has_little_lung_and_no_bowel_gas(real_ct: Path) -> None:
    image = read_image(real_ct / "totalsegmentator_example/example_ct_dicom")
    lm = lung_mask(image)
    # 20 slices below the domes: stomach/colon gas (about 17 mL here) must not be called lung
    assert lm.available and lm.volume_ml() < 5.0


def test_real_cropped_chest_splits_the_two_lungs(real_ct: Path) -> None:
    image = read_image(real_ct / "totalsegmentator_example/pulmonary_report_ct_cropped.nii.gz")
    lm = lung_mask(image)
    from scipy import ndimage

    for side in (RIGHT_LUNG, LEFT_LUNG):
        labels, n = ndimage.label(lm.labels == side)
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.max() >= 0.8 * sizes.sum()  # one main body per lung
    assert 0.3 < lm.volume_ml(RIGHT_LUNG) / lm.volume_ml() < 0.7


def test_large_volumes_use_the_coarse_grid_and_keep_the_volume() -> None:
    """The speed path (every 2nd pixel in-plane) agrees with the phantom's true lung."""
    from covid_mtl.image import Image
    from covid_mtl.measure.lungmask import FULL_RES_MAX_VOXELS
    from covid_mtl.demo.phantom import make_phantom

    phantom = make_phantom("covid", seed=5, shape=(136, 512, 512), spacing=(2.5, 0.7, 0.7))
    assert phantom.hu.size > FULL_RES_MAX_VOXELS
    image = Image(phantom.hu.astype(np.float32), (2.5, 0.7, 0.7), phantom.affine, True, "phantom")
    lm = lung_mask(image, lesion=phantom.lesion)
    assert "computed_at_1/2_in_plane" in lm.flags
    truth = phantom.lung > 0
    found = lm.labels > 0
    assert 2 * (truth & found).sum() / (truth.sum() + found.sum()) > 0.97
    assert lm.volume_ml() == pytest.approx(truth.sum() * 2.5 * 0.49 / 1000, rel=0.03)
