"""The same scan gives the same answer however the file stores it (issue 13, item 6).

The real chest crop (LPS on disk) is re-stored as RAS and as sagittal slices (axes transposed) with affines that
describe the same patient; the analysis must give the same class, P(covid) within 0.02 and lesion volume within
5 % (here: identical, since reorientation only reorders voxels), the same lungs, zones and scores (measured once
in the canonical layout, issue 19), map the mask back onto each file's own grid, name the orientation it used and
warn for the re-cut one.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from covid_mtl.image import Image
from covid_mtl.io import read_image
from covid_mtl.io.geometry import reorient
from covid_mtl.nets.packaged import packaged_model_path
from covid_mtl.predict.predictor import Predictor

torch.set_num_threads(1)


def restored(image: Image, flip_xy: bool = False, transpose_xz: bool = False) -> Image:
    """``image`` stored another way: (x, y) flipped (LPS <-> RAS) and/or x and z swapped, affine kept true."""
    xyz = image.array.transpose(2, 1, 0)
    affine = image.affine.copy()
    if flip_xy:
        for axis in (0, 1):
            n = xyz.shape[axis]
            xyz = np.flip(xyz, axis)
            flip = np.eye(4)
            flip[axis, axis], flip[axis, 3] = -1, n - 1
            affine = affine @ flip
    if transpose_xz:
        xyz = xyz.transpose(2, 1, 0)
        affine = affine[:, [2, 1, 0, 3]]
    array = np.ascontiguousarray(xyz.transpose(2, 1, 0))
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[::-1])
    return Image(array, spacing, affine, image.is_hu, image.source, image.bit_depth, dict(image.meta))


def to_world_set(mask: np.ndarray, affine: np.ndarray) -> set[tuple[int, int, int]]:
    """Lesion voxels as rounded patient coordinates, comparable across storage layouts."""
    zyx = np.argwhere(mask > 0)
    if zyx.size == 0:
        return set()
    xyz1 = np.c_[zyx[:, ::-1], np.ones(len(zyx))]
    return {tuple(p) for p in np.rint((affine @ xyz1.T).T[:, :3] * 10).astype(int)}


def test_reorient_round_trip_and_codes():
    rng = np.random.default_rng(0)
    base = Image(rng.normal(size=(5, 6, 7)).astype(np.float32), (3.0, 2.0, 1.0), np.diag([-1.0, -2.0, 3.0, 1.0]),
                 True, "x")
    for flip, swap in ((False, False), (True, False), (False, True), (True, True)):
        image = restored(base, flip, swap)
        oriented = reorient(image.array, image.affine, image.spacing)
        assert oriented.codes == "LPS"
        np.testing.assert_array_equal(oriented.array, reorient(base.array, base.affine, base.spacing).array)
        assert oriented.spacing == (3.0, 2.0, 1.0)
        assert oriented.resliced == swap
        np.testing.assert_array_equal(oriented.back(np.ascontiguousarray(oriented.array)), image.array)


def test_same_scan_stored_three_ways_gives_the_same_answer(real_ct):
    from covid_mtl.measure.analysis import analyze

    path = packaged_model_path()
    assert path, "the package ships a model"
    predictor = Predictor.from_checkpoint(path, device="cpu")
    scan = read_image(real_ct / "totalsegmentator_example" / "pulmonary_report_ct_cropped.nii.gz")
    results = {}
    for name, image in (("as stored", scan), ("flipped", restored(scan, flip_xy=True)),
                        ("sagittal", restored(scan, transpose_xz=True))):
        analysis = analyze(image, predictor)
        mask = analysis.mask()
        assert mask.shape == image.array.shape
        voxel_ml = float(np.prod(image.spacing)) / 1000
        results[name] = (analysis, mask.sum() * voxel_ml, to_world_set(mask, image.affine),
                         to_world_set(analysis.lung_labels() == 1, image.affine))
        geometry = analysis.result["geometry"]
        assert geometry["orientation"] == "LPS"
        assert ("warning" in geometry) == (name == "sagittal")
        assert ("resliced" in [w["name"] for w in analysis.result["warnings"]]) == (name == "sagittal")
    reference, ref_ml, ref_world, ref_right = results["as stored"]
    assert results["flipped"][0].result["geometry"]["input_orientation"] == "RAS"
    ref_q = reference.result["quantification"]
    for name, (analysis, ml, world, right) in results.items():
        assert analysis.result["label"] == reference.result["label"], name
        assert analysis.result["probabilities"]["covid"] == pytest.approx(
            reference.result["probabilities"]["covid"], abs=0.02)
        assert ml == pytest.approx(ref_ml, rel=0.05, abs=0.05), name
        assert world == ref_world, f"{name}: the mask lands on other patient coordinates"
        assert right == ref_right, f"{name}: the right lung is another set of voxels"
        q = analysis.result["quantification"]
        for key in ("lung_ml", "lesion_ml", "zone_severity_score", "zones", "lungs"):
            assert q[key] == ref_q[key], (name, key)
