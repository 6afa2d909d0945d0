"""Scene side of the Slicer module with real MRML nodes (slicer-core): volume <-> NIfTI with geometry, server mask ->
"COVID lesion" segmentation on the CT grid, segment -> 0/1 labelmap on the CT grid. Files are checked with nibabel,
independently of Slicer's own reader."""
from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk

from CovidMTLLib import scene as mrml
from CovidMTLLib.client import CovidMTLLogicError
from tests.slicer.slicer_helpers import add_volume, nifti_zyx, oblique_ijk_to_ras, save_nifti_zyx

SEGMENT = "COVID lesion"


def lesion_like(shape, seed=1) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[3:7, 5:12, 4:15] = 1
    mask[8, 2, 20] = 1  # a lone voxel near a corner: an off-by-one or flipped axis moves it
    return mask


def test_volume_export_keeps_voxels_and_oblique_geometry(oblique_ct, tmp_path):
    path = mrml.write_volume(oblique_ct, tmp_path / "ct.nii.gz")
    voxels, affine = nifti_zyx(path)
    np.testing.assert_array_equal(voxels, slicer.util.arrayFromVolume(oblique_ct))
    np.testing.assert_allclose(affine, oblique_ijk_to_ras(), atol=1e-4)


def test_volume_round_trip_through_slicer_reader(scene, oblique_ct, tmp_path):
    path = mrml.write_volume(oblique_ct, tmp_path / "ct.nii.gz")
    back = mrml.read_volume(scene, path, "back")
    assert mrml.same_grid(back, oblique_ct)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), slicer.util.arrayFromVolume(oblique_ct))


def test_sample_ct_reads_with_nibabel_geometry(scene, sample_data):
    path = sample_data / "covid_001.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} absent: run `make sample-data`")
    node = mrml.read_volume(scene, path, "covid_001")
    voxels, affine = nifti_zyx(path)
    np.testing.assert_allclose(mrml.ijk_to_ras(node), affine, atol=1e-4)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), voxels)


def test_mask_becomes_aligned_lesion_segment(scene, oblique_ct, tmp_path):
    mask = lesion_like(slicer.util.arrayFromVolume(oblique_ct).shape)
    mask_path = save_nifti_zyx(mask, oblique_ijk_to_ras(), tmp_path / "m.nii.gz")
    labelmap = mrml.read_volume(scene, mask_path, "m", labelmap=True)
    segmentation, segment_id = mrml.mask_to_segmentation(labelmap, oblique_ct, SEGMENT)

    assert segmentation.GetSegmentation().GetSegment(segment_id).GetName() == SEGMENT
    internal = segmentation.GetBinaryLabelmapInternalRepresentation(segment_id)
    image_to_world = vtk.vtkMatrix4x4()
    internal.GetImageToWorldMatrix(image_to_world)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(image_to_world), oblique_ijk_to_ras(), atol=1e-4)
    np.testing.assert_array_equal(mrml.segment_array(segmentation, SEGMENT, oblique_ct), mask)


def test_mask_on_another_grid_is_refused(scene, oblique_ct, tmp_path):
    shifted = oblique_ijk_to_ras()
    shifted[:3, 3] += [0.0, 0.0, 2.5]  # one slice off
    mask = lesion_like(slicer.util.arrayFromVolume(oblique_ct).shape)
    labelmap = mrml.read_volume(scene, save_nifti_zyx(mask, shifted, tmp_path / "m.nii.gz"), "m", labelmap=True)
    with pytest.raises(CovidMTLLogicError, match="does not match the CT grid"):
        mrml.mask_to_segmentation(labelmap, oblique_ct, SEGMENT)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_non_binary_mask_values_become_one_segment(scene, oblique_ct):
    mask = lesion_like(slicer.util.arrayFromVolume(oblique_ct).shape) * 7  # a label value other than 1
    labelmap = add_volume(scene, mask, oblique_ijk_to_ras(), "m", labelmap=True)
    segmentation, _ = mrml.mask_to_segmentation(labelmap, oblique_ct, SEGMENT)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    np.testing.assert_array_equal(mrml.segment_array(segmentation, SEGMENT, oblique_ct), mask > 0)


def test_second_mask_replaces_the_segment_in_the_same_node(scene, oblique_ct):
    shape = slicer.util.arrayFromVolume(oblique_ct).shape
    first = add_volume(scene, lesion_like(shape), oblique_ijk_to_ras(), "m1", labelmap=True)
    segmentation, _ = mrml.mask_to_segmentation(first, oblique_ct, SEGMENT)
    empty = add_volume(scene, np.zeros(shape, np.uint8), oblique_ijk_to_ras(), "m2", labelmap=True)
    again, _ = mrml.mask_to_segmentation(empty, oblique_ct, SEGMENT, segmentation)
    assert again is segmentation and segmentation.GetSegmentation().GetNumberOfSegments() == 1
    assert mrml.segment_array(segmentation, SEGMENT, oblique_ct).sum() == 0


def test_segment_edited_on_a_cropped_extent_exports_on_the_ct_grid(scene, oblique_ct):
    """The Segment Editor keeps a segment's labelmap on its own (often cropped) extent; the export must
    resample it onto the full CT grid with every voxel in place."""
    shape = slicer.util.arrayFromVolume(oblique_ct).shape
    labelmap = add_volume(scene, np.zeros(shape, np.uint8), oblique_ijk_to_ras(), "m", labelmap=True)
    segmentation, segment_id = mrml.mask_to_segmentation(labelmap, oblique_ct, SEGMENT)

    cropped = slicer.vtkOrientedImageData()
    cropped.SetExtent(4, 9, 2, 6, 1, 3)  # i, j, k ranges inside the CT
    cropped.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    cropped.GetPointData().GetScalars().Fill(1)
    cropped.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(oblique_ijk_to_ras()))
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        cropped, segmentation, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    expected = np.zeros(shape, np.uint8)
    expected[1:4, 2:7, 4:10] = 1  # (z, y, x) = (k, j, i)
    exported = mrml.segment_array(segmentation, SEGMENT, oblique_ct)
    assert exported.dtype == np.uint8 and exported.shape == shape
    np.testing.assert_array_equal(exported, expected)


def test_segment_export_leaves_no_temporary_nodes(scene, oblique_ct):
    shape = slicer.util.arrayFromVolume(oblique_ct).shape
    labelmap = add_volume(scene, lesion_like(shape), oblique_ijk_to_ras(), "m", labelmap=True)
    segmentation, _ = mrml.mask_to_segmentation(labelmap, oblique_ct, SEGMENT)
    before = scene.GetNumberOfNodes()
    mrml.segment_array(segmentation, SEGMENT, oblique_ct)
    assert scene.GetNumberOfNodes() == before


def test_missing_segment_is_a_readable_error(scene, oblique_ct):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edited")
    with pytest.raises(CovidMTLLogicError, match='no segment named "COVID lesion"'):
        mrml.segment_array(segmentation, SEGMENT, oblique_ct)


def test_labelmap_file_is_uint8_zero_one_on_the_ct_grid(oblique_ct, tmp_path):
    mask = lesion_like(slicer.util.arrayFromVolume(oblique_ct).shape) * 3
    path = mrml.write_labelmap(mask, oblique_ct, tmp_path / "label.nii.gz")
    voxels, affine = nifti_zyx(path)
    assert voxels.dtype == np.uint8
    np.testing.assert_array_equal(voxels, mask > 0)
    np.testing.assert_allclose(affine, oblique_ijk_to_ras(), atol=1e-4)
    with pytest.raises(CovidMTLLogicError, match="differs from the volume"):
        mrml.write_labelmap(mask[:-1], oblique_ct, tmp_path / "bad.nii.gz")


def test_content_id_is_stable_safe_and_content_sensitive(scene, oblique_ct):
    oblique_ct.SetName("Chest CT 3/4 (axial)")
    first = mrml.content_id(oblique_ct)
    assert first == mrml.content_id(oblique_ct)
    assert first.startswith("Chest_CT_3_4_axial-")
    voxels = slicer.util.arrayFromVolume(oblique_ct).copy()
    twin = add_volume(scene, voxels, oblique_ijk_to_ras(), "Chest CT 3/4 (axial)")
    assert mrml.content_id(twin) == first  # same scan loaded twice: uploaded once
    slicer.util.arrayFromVolume(twin)[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(twin)
    assert mrml.content_id(twin) != first
