"""One grid-equality rule: the Slicer module's copy (CovidMTLLib.scene.grids_match, on Slicer's (i, j, k) dimensions)
and the server's (covid_mtl.io.grid.same_grid, on the core's (z, y, x) shapes) give the same answer on every case,
so a mask the module accepts is one the server's PUT /datastore/label accepts, and the other way round.

Both functions take IJK-to-RAS matrices: Slicer's GetIJKToRASMatrix and the core's Image.affine (the NIfTI affine of
``array.transpose(2, 1, 0)``) map the same (i, j, k) index to the same RAS point (checked below on a real file).
"""
from __future__ import annotations

import numpy as np
import pytest

from CovidMTLLib import scene as mrml
from tests.slicer.slicer_helpers import add_volume, oblique_ijk_to_ras, save_nifti_zyx

grid = pytest.importorskip("covid_mtl.io.grid", reason="the core (covid_mtl) is installed in the project venv")

DIMS = (24, 20, 12)  # Slicer (i, j, k); the core's shape is (12, 20, 24)


def reference() -> np.ndarray:
    """Anisotropic (0.7, 0.8, 2.5 mm), oblique, origin far from 0: the tolerance is 1 % of 0.7 mm."""
    return oblique_ijk_to_ras()


def shifted(fraction_of_voxel: float) -> np.ndarray:
    matrix = reference()
    matrix[:3, 3] += fraction_of_voxel * 0.7 * np.array([1.0, 0.0, 0.0])
    return matrix


def rescaled() -> np.ndarray:
    matrix = reference()
    matrix[:3, :3] *= 1.05
    return matrix


def flipped() -> np.ndarray:
    matrix = reference()
    matrix[:3, 0] *= -1
    return matrix


def swapped() -> np.ndarray:
    matrix = reference()
    matrix[:3, [0, 1]] = matrix[:3, [1, 0]]
    return matrix


def anisotropic_other() -> np.ndarray:
    matrix = reference()
    matrix[:3, 2] *= 2.0 / 2.5  # 2.0 mm slices instead of 2.5
    return matrix


CASES = {
    "identical": (DIMS, reference(), True),
    "shifted 0.5 % of a voxel": (DIMS, shifted(0.005), True),
    "shifted 2 % of a voxel": (DIMS, shifted(0.02), False),
    "rescaled by 5 %": (DIMS, rescaled(), False),
    "flipped i axis": (DIMS, flipped(), False),
    "swapped i and j axes": (DIMS, swapped(), False),
    "other slice thickness": (DIMS, anisotropic_other(), False),
    "float32 rounding of the affine": (DIMS, reference().astype(np.float32).astype(np.float64), True),
    "different shape": ((24, 20, 13), reference(), False),
    "transposed shape": ((20, 24, 12), reference(), False),
}


def core_same_grid(dims_a, matrix_a, dims_b, matrix_b) -> bool:
    """The server's rule, given the core's (z, y, x) shapes."""
    return grid.same_grid(tuple(reversed(dims_a)), matrix_a, tuple(reversed(dims_b)), matrix_b)


@pytest.mark.parametrize("name", list(CASES))
def test_module_copy_and_core_agree(name):
    dims, matrix, expected = CASES[name]
    module = mrml.grids_match(dims, matrix, DIMS, reference())
    core = core_same_grid(dims, matrix, DIMS, reference())
    assert module == core == expected, f"{name}: module {module}, core {core}, expected {expected}"


def test_same_tolerance_in_mm():
    assert mrml.TOLERANCE_VOXELS == grid.TOLERANCE_VOXELS
    for matrix in (reference(), anisotropic_other(), np.diag([0.3, 5.0, 1.0, 1.0])):
        assert mrml.tolerance_mm(matrix) == pytest.approx(grid.tolerance_mm(matrix))
    assert mrml.tolerance_mm(reference()) == pytest.approx(0.007)  # 1 % of the smallest side, 0.7 mm


@pytest.mark.parametrize("factor, expected", [(0.99, True), (1.01, False)])
def test_just_inside_and_just_outside_the_tolerance(factor, expected):
    tolerance = mrml.tolerance_mm(reference())
    for component in [(0, 3), (1, 3), (2, 3), (0, 0), (2, 1), (1, 2)]:  # origin and axis-vector components
        matrix = reference()
        matrix[component] += factor * tolerance
        assert mrml.grids_match(DIMS, matrix, DIMS, reference()) is expected, component
        assert core_same_grid(DIMS, matrix, DIMS, reference()) is expected, component


def test_the_reference_sets_the_tolerance():
    """Grid b is the reference: a 0.05 mm shift is inside 1 % of a 10 mm voxel, outside 1 % of a 0.7 mm one."""
    coarse = np.diag([10.0, 10.0, 10.0, 1.0])
    moved = coarse.copy()
    moved[0, 3] += 0.05
    assert mrml.grids_match(DIMS, moved, DIMS, coarse) and core_same_grid(DIMS, moved, DIMS, coarse)
    fine = reference()
    moved_fine = fine.copy()
    moved_fine[0, 3] += 0.05
    assert not mrml.grids_match(DIMS, moved_fine, DIMS, fine) and not core_same_grid(DIMS, moved_fine, DIMS, fine)


def test_node_rule_is_the_matrix_rule(scene):
    shape_zyx = tuple(reversed(DIMS))
    ct = add_volume(scene, np.zeros(shape_zyx, np.int16), reference(), "ct")
    for name, (dims, matrix, expected) in CASES.items():
        mask = add_volume(scene, np.zeros(tuple(reversed(dims)), np.uint8), matrix, "m", labelmap=True)
        assert mrml.same_grid(mask, ct) is expected, name
        scene.RemoveNode(mask)


def test_slicer_ijk_to_ras_is_the_cores_affine(scene, tmp_path):
    """The same file read by Slicer and by the core: Slicer's dims are the core's shape reversed and its IJK-to-RAS
    is the core's affine, so both rules compare the same numbers."""
    from covid_mtl.io import read_image

    path = save_nifti_zyx(np.arange(np.prod(DIMS), dtype=np.int16).reshape(tuple(reversed(DIMS))), reference(),
                          tmp_path / "ct.nii.gz")
    node = mrml.read_volume(scene, path, "ct")
    image = read_image(path)
    assert tuple(reversed(mrml.dimensions(node))) == tuple(image.shape)
    np.testing.assert_allclose(mrml.ijk_to_ras(node), image.affine, atol=1e-4)
    assert mrml.grids_match(mrml.dimensions(node), mrml.ijk_to_ras(node), DIMS, reference())
    assert grid.same_grid(image.shape, image.affine, tuple(reversed(DIMS)), reference())
