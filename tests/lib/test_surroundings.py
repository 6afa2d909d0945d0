"""The lung mask of a chest CT whatever the patient lies on, wears or is scanned with (issue 32).

Synthetic members of each family a real scan exposed (``covid_mtl.demo.surroundings``): a curved couch shell with
air and foam layers touching the back (the Siemens couch whose air became 7.7-8.4 L of "lung"), a flat couch with
a foam mattress in a cover, a PET/CT pallet, arms down and up, 5, 7.5 and 10 mm slices, a neck-to-thigh scan. Each is
checked against the phantom's own lung truth: volume, extent along z, and no lung in anything added. Before the
body was found without its couch (``covid_mtl.lungs.body``), the curved shell added 457 mL of "lung" running
from the first slice to the last, and the pallet 796 mL.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from covid_mtl.demo import surroundings as around
from covid_mtl.demo.phantom import make_phantom
from covid_mtl.lungs.mask import lung_mask
from covid_mtl.measure.checks import coverage_check

# fine enough in-plane (1.4 mm) that a 2.5 mm couch wall is a continuous line, as on a real 0.7 mm scan
SHAPE, SPACING = (48, 256, 256), (2.5, 1.4, 1.4)


@lru_cache(maxsize=4)
def chest(seed: int = 3) -> around.Scan:
    return around.from_phantom(make_phantom("normal", seed, shape=SHAPE, spacing=SPACING))


def check_lungs(scan: around.Scan) -> float:
    """Asserts the lung mask of ``scan`` against its truth; returns the volume found (mL)."""
    lm = lung_mask(scan.hu, scan.spacing, scan.affine)
    found, truth = lm.mask, scan.lung > 0
    voxel_ml = float(np.prod(scan.spacing)) / 1000.0
    assert not (found & scan.not_lung).any(), f"{(found & scan.not_lung).sum() * voxel_ml:.1f} mL of lung in " \
                                              f"what lies around the patient"
    volume = found.sum() * voxel_ml
    assert 0.93 * scan.lung_ml <= volume <= 1.03 * scan.lung_ml, (volume, scan.lung_ml)
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.95
    z_found, z_truth = (np.flatnonzero(m.any(axis=(1, 2))) for m in (found, truth))
    assert abs(z_found[0] - z_truth[0]) <= 1 and abs(z_found[-1] - z_truth[-1]) <= 1, (z_found[[0, -1]],
                                                                                      z_truth[[0, -1]])
    assert coverage_check(lm.labels) == []  # the scan covers the lungs, and says so
    return volume


@pytest.mark.parametrize("narrow", [False, True], ids=["couch_inside_the_image", "couch_wider_than_the_image"])
@pytest.mark.parametrize("couch", around.COUCHES)
def test_no_couch_is_lung(couch: str, narrow: bool) -> None:
    scan = around.with_couch(chest(), couch)
    if narrow:
        scan = around.narrowed(scan)
        assert scan.not_lung[:, :, 0].any() and scan.not_lung[:, :, -1].any()  # the couch runs into the border
    air_in_couch = scan.not_lung & (scan.hu < -400) & (scan.hu > -950)  # lung-like air and foam
    assert air_in_couch.sum() * np.prod(scan.spacing) / 1000 > 50  # there is a trap to fall into
    check_lungs(scan)


@pytest.mark.parametrize("position", ["down", "up"])
def test_arms_are_not_lung(position: str) -> None:
    check_lungs(around.with_arms(around.with_couch(chest(), "curved_shell"), position))


@pytest.mark.parametrize("factor", [2, 3, 4])  # 5, 7.5 and 10 mm slices
def test_thick_slices_on_a_couch(factor: int) -> None:
    thin = around.with_couch(chest(), "curved_shell")
    check_lungs(around.with_thick_slices(thin, factor))


def test_a_neck_to_thigh_scan_has_lungs_only_in_the_chest() -> None:
    scan = around.neck_to_thigh(around.with_couch(chest(), "flat_mattress"))
    gas = scan.not_lung & (scan.hu < -500)
    assert gas[: scan.hu.shape[0] // 2].sum() * np.prod(scan.spacing) / 1000 > 20  # bowel gas below the chest
    check_lungs(scan)


@pytest.mark.parametrize("seed", [3, 11])
def test_a_couch_added_under_a_scan_leaves_its_lung_volume_unchanged(seed: int) -> None:
    plain = chest(seed)
    lm = lung_mask(plain.hu, plain.spacing, plain.affine)
    before = lm.volume_ml()
    for couch in around.COUCHES:
        scan = around.with_couch(plain, couch, seed=seed)
        after = lung_mask(scan.hu, scan.spacing, scan.affine).volume_ml()
        assert abs(after - before) <= 0.005 * before, (couch, before, after)


def test_a_scan_that_cuts_the_lungs_says_so() -> None:
    scan = around.with_couch(chest(), "pet_pallet")
    truth_z = np.flatnonzero(scan.lung.any(axis=(1, 2)))
    cut = int(truth_z.mean())
    lm = lung_mask(scan.hu[cut:], scan.spacing, scan.affine)
    assert [w["name"] for w in coverage_check(lm.labels)] == ["lungs_not_fully_covered"]


def test_a_chest_cropped_to_the_mediastinum_keeps_its_lungs() -> None:
    """Mid-chest slices only, cut inside the chest wall: the lungs run into every border and their area hardly
    changes from slice to slice (spread 4 %), as a couch's does. They lie beside the mediastinum, not under the
    back, so they stay lung."""
    phantom = make_phantom("normal", 3, shape=SHAPE, spacing=SPACING)
    truth = phantom.lung > 0
    zs = slice(20, 34)
    ys, xs = np.nonzero(truth[zs].any(axis=0))
    crop = (zs, slice(ys.min() + 15, ys.max() - 15), slice(xs.min() + 20, xs.max() - 20))
    hu, lungs = phantom.hu[crop], truth[crop]
    area = lungs.sum(axis=(1, 2))
    assert area.std() < 0.1 * area.mean()
    found = lung_mask(hu, phantom.spacing, phantom.affine).mask
    assert 2 * (found & lungs).sum() / (found.sum() + lungs.sum()) > 0.95
