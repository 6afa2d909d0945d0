"""The synthetic chest-CT phantom: determinism, anatomy in HU, and where each kind puts its lesions."""
import numpy as np
import pytest
from scipy import ndimage

from covid_mtl.errors import CovidMTLError
from covid_mtl.demo.phantom import OTHER_PATTERNS, make_phantom

SMALL = (12, 64, 64)


@pytest.fixture(scope="module")
def default_phantoms():
    return {kind: make_phantom(kind, 3) for kind in ("covid", "normal", "other")}


def _sides(mask: np.ndarray) -> tuple[int, int]:
    half = mask.shape[2] // 2
    return int(mask[:, :, :half].sum()), int(mask[:, :, half:].sum())


def _wall_distance(hu: np.ndarray, spacing) -> np.ndarray:
    """In-plane distance (mm) of each voxel to the outside of the body."""
    body = np.stack([ndimage.binary_fill_holes(s > -400) for s in hu])
    return np.stack([ndimage.distance_transform_edt(b, sampling=spacing[1:]) for b in body])


def test_same_seed_gives_identical_volumes():
    a, b = make_phantom("covid", 11, SMALL), make_phantom("covid", 11, SMALL)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.lesion, b.lesion) and np.array_equal(a.lung, b.lung)


def test_different_seeds_give_different_anatomy():
    a, b = make_phantom("normal", 1, SMALL), make_phantom("normal", 2, SMALL)
    assert not np.array_equal(a.lung, b.lung)
    assert np.mean(a.hu != b.hu) > 0.2


def test_kinds_of_one_seed_differ_only_inside_the_lesion():
    normal = make_phantom("normal", 5, SMALL)
    for kind in ("covid", "other"):
        sick = make_phantom(kind, 5, SMALL)
        assert np.array_equal(sick.lung, normal.lung)
        outside = sick.lesion == 0
        assert np.array_equal(sick.hu[outside], normal.hu[outside])
        assert not np.array_equal(sick.hu, normal.hu)


def test_types_and_grid(default_phantoms):
    p = default_phantoms["covid"]
    assert p.hu.dtype == np.int16 and p.hu.shape == (32, 160, 160)
    assert p.lesion.dtype == np.uint8 and set(np.unique(p.lesion)) == {0, 1}
    assert p.lung.dtype == np.uint8 and p.spacing == (5.0, 2.2, 2.2)
    centre = p.affine @ np.array([79.5, 79.5, 15.5, 1.0])
    assert np.allclose(centre[:3], 0.0)
    assert p.affine[0, 0] < 0 and p.affine[1, 1] < 0 and p.affine[2, 2] > 0  # x to left, y to posterior


def test_tissue_hounsfield_units(default_phantoms):
    p = default_phantoms["normal"]
    hu = p.hu.astype(float)
    assert hu[:, 0, 0].tolist() == [-1000.0] * hu.shape[0]  # air outside the body
    assert -880 < np.median(hu[p.lung == 1]) < -820
    body = (hu > -400) & (p.lung == 0)
    soft = np.abs(hu[body] - 40) < 40
    fat = np.abs(hu[body] + 100) < 40
    assert soft.mean() > 0.5 and fat.mean() > 0.05
    bone = hu > 500
    # the spine: bone on the midline in the posterior half of every slice
    mid = hu.shape[2] // 2
    assert all(bone[z, hu.shape[1] // 2:, mid - 3:mid + 4].any() for z in range(hu.shape[0]))
    assert 600 < np.median(hu[bone]) < 800
    assert hu.min() >= -1024


def test_vessels_and_trachea(default_phantoms):
    p = default_phantoms["normal"]
    lung_hu = p.hu[p.lung == 1]
    assert (lung_hu > -100).mean() > 0.005  # bright vessels inside the lungs
    top = p.hu[-4:]  # above the apex: air inside the body is the trachea
    body = np.stack([ndimage.binary_fill_holes(s > -400) for s in top])
    assert ((top < -950) & body).sum(axis=(1, 2)).min() > 5


def test_lung_volume_and_apex_to_base_profile(default_phantoms):
    p = default_phantoms["normal"]
    litres = p.lung.sum() * np.prod(p.spacing) / 1e6
    assert 1.5 < litres < 6.0  # 160 mm of chest; a whole chest at full inspiration holds 4-6 L
    right, left = _sides(p.lung)
    assert 0.35 < right / (right + left) < 0.65
    area = p.lung.sum(axis=(1, 2))
    zs = np.flatnonzero(area)
    assert area.max() > 3 * area[zs[0]] and area.max() > 3 * area[zs[-1]]


@pytest.mark.parametrize("seed", range(6))
def test_lesions_stay_inside_the_lungs(seed):
    for kind in ("covid", "other"):
        p = make_phantom(kind, seed, SMALL)
        assert p.lesion.any()
        assert not (p.lesion & (1 - p.lung)).any()


@pytest.mark.parametrize("seed", range(4))
def test_normal_has_no_lesion(seed):
    assert not make_phantom("normal", seed, SMALL).lesion.any()


@pytest.mark.parametrize("seed", range(4))
def test_covid_lesions_are_bilateral_peripheral_posterior_ground_glass(seed):
    p = make_phantom("covid", seed)
    right, left = _sides(p.lesion)
    assert right > 0 and left > 0
    wall = _wall_distance(p.hu, p.spacing)
    lesion, lung = p.lesion == 1, p.lung == 1
    assert wall[lesion].mean() < 0.8 * wall[lung].mean()
    ys = np.indices(p.hu.shape)[1]
    assert ys[lesion].mean() > ys[lung].mean()  # y grows towards posterior
    hu = p.hu[lesion].astype(float)
    assert -750 < np.median(hu) < -250  # mostly ground glass ...
    assert np.median(hu) > np.median(p.hu[lung & ~lesion]) + 200


def test_other_is_unilateral_dense_and_covers_every_pattern():
    patterns = set()
    for seed in range(8):
        p = make_phantom("other", seed, SMALL)
        patterns.add(p.pattern)
        assert min(_sides(p.lesion)) == 0 and max(_sides(p.lesion)) > 0
        if p.pattern in ("lobar", "nodules"):
            assert np.median(p.hu[p.lesion == 1]) > -100  # dense, unlike ground glass
    assert patterns == set(OTHER_PATTERNS)


def test_small_grids_still_hold_a_chest():
    p = make_phantom("covid", 0, (4, 32, 32), (10.0, 8.0, 8.0))
    assert p.lung.any() and p.lesion.any() and min(_sides(p.lesion)) > 0


@pytest.mark.parametrize("args", [
    ("flu", 0, SMALL),
    ("covid", -1, SMALL),
    ("covid", 0, (1, 64, 64)),
    ("covid", 0, (8, 16, 64)),
    ("covid", 0, (8, 64)),
])
def test_bad_arguments_raise(args):
    with pytest.raises(CovidMTLError):
        make_phantom(*args)


def test_bad_spacing_raises():
    with pytest.raises(CovidMTLError, match="spacing"):
        make_phantom("normal", 0, SMALL, (5.0, 0.0, 2.2))
