"""The radiologist's workflow through CovidMTLLogic against a real covid-mtl MONAI Label server on loopback, with real
MRML nodes (slicer-core): connect, classify & segment a CT loaded as a scalar volume node, edit the lesion segment,
submit it with an overridden class, fetch the next case, start / watch / stop training, and the server's errors.

One server for the module (tests/server.py over a private copy of sample_data/). Server-side results are checked
through plain HTTP + nibabel, independently of the module's own client and of Slicer's readers.
"""
from __future__ import annotations

import gzip
import time

import nibabel as nib
import numpy as np
import pytest
import requests
import slicer
import vtk
import vtk.util.numpy_support

from CovidMTLLib import scene as mrml
from CovidMTLLib.client import CovidMTLLogicError
from CovidMTLLib.logic import IMAGE_ID_ATTRIBUTE, SEGMENT_NAME, CovidMTLLogic
from tests.server import copy_studies, running_server
from tests.slicer.slicer_helpers import application_scene, nifti_zyx

SAMPLE_CT = "covid_002.nii.gz"  # unlabelled in sample_data/, so "next case" still has others to offer
REAL_CT = "totalsegmentator_example/example_ct_sm.nii.gz"  # 30 real slices: a short inference on CPU


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_data):
    if not (sample_data / SAMPLE_CT).is_file():
        pytest.skip(f"{sample_data / SAMPLE_CT} absent: run `make sample-data`")
    work = tmp_path_factory.mktemp("slicer_server")
    with running_server(copy_studies(work / "studies"), work) as running:
        yield running


@pytest.fixture(scope="module")
def module_scene():
    with application_scene() as scene:
        yield scene


@pytest.fixture(scope="module")
def logic(server, module_scene):
    return CovidMTLLogic(module_scene, server.url, timeout=300)


@pytest.fixture(scope="module")
def classified(logic, module_scene, sample_data):
    """The sample CT loaded the way Slicer loads a file, then one Classify & Segment (with the idle hook on, as in
    the application), recording progress and idle calls."""
    volume = mrml.read_volume(module_scene, sample_data / SAMPLE_CT, "covid_002")
    steps, idles = [], []
    logic.set_idle_callback(lambda: idles.append(1))
    try:
        result = logic.classify_and_segment(volume, progress=lambda message, percent: steps.append((message, percent)))
    finally:
        logic.set_idle_callback(None)
    return volume, result, steps, idles


def nifti_bytes_zyx(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    image = nib.Nifti1Image.from_bytes(data)
    return np.asarray(image.dataobj).transpose(2, 1, 0), image.affine


def get(server, path: str, **params) -> requests.Response:
    response = requests.get(server.url + path, params=params, timeout=60)
    response.raise_for_status()
    return response


def assert_segmentation_matches(volume, result) -> np.ndarray:
    """Segment on the CT grid == the mask file the server sent; returns the mask (z, y, x)."""
    segmentation = result.segmentation_node
    assert segmentation.GetScene() is volume.GetScene() and segmentation.GetName() == SEGMENT_NAME
    assert segmentation.GetSegmentation().GetSegment(result.segment_id).GetName() == SEGMENT_NAME
    internal = segmentation.GetBinaryLabelmapInternalRepresentation(result.segment_id)
    image_to_world = vtk.vtkMatrix4x4()
    internal.GetImageToWorldMatrix(image_to_world)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(image_to_world), mrml.ijk_to_ras(volume), atol=1e-3)
    server_mask, server_affine = nifti_bytes_zyx(result.mask_file)
    np.testing.assert_allclose(server_affine, mrml.ijk_to_ras(volume), atol=1e-3)
    np.testing.assert_array_equal(mrml.segment_array(segmentation, SEGMENT_NAME, volume), server_mask > 0)
    return server_mask


def paint(segmentation, segment_id: str, array_zyx: np.ndarray, volume) -> None:
    """Replace the segment's voxels the way Segment Editor effects do (SetBinaryLabelmapToSegment)."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*reversed(array_zyx.shape))
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(mrml.ijk_to_ras(volume)))
    scalars = vtk.util.numpy_support.numpy_to_vtk(np.ascontiguousarray(array_zyx, np.uint8).ravel(), deep=True,
                                                  array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    logic_cls = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic_cls.SetBinaryLabelmapToSegment(image, segmentation, segment_id, logic_cls.MODE_REPLACE)


def test_connect_shows_what_the_server_offers(logic):
    info = logic.connect()
    assert "covid_mtl" in info["models"] and "uncertainty" in info["strategies"] and "covid_mtl" in info["trainers"]
    text = logic.describe_server()
    assert logic.server_url in text and "Models: covid_mtl" in text


def test_connect_learns_model_classes_strategy_and_window_from_the_server(server, module_scene):
    logic = CovidMTLLogic(module_scene, server.url, timeout=60)
    assert logic.served is None and logic.correction_classes == ()
    logic.connect()
    published = requests.get(server.url + "/info/", timeout=30).json()["models"]["covid_mtl"]
    served = logic.served
    assert served.name == "covid_mtl" and list(served.classes) == published["classes"]
    assert set(served.correction_classes) == set(published["classes"]) | {"non-covid"}
    assert served.strategy == "uncertainty" and served.trainer == "covid_mtl"
    # the lung window the served model was trained with (W 1500 / L -600), published or the logic's fallback
    assert served.window == logic.lung_window == (1500.0, -600.0)


def test_classify_builds_aligned_segmentation_and_returns_the_prediction(server, logic, classified):
    volume, result, steps, idles = classified
    assert result.label in logic.correction_classes and result.label == result.details["label"]
    # only the classes the served model was trained on (issue 12), and its statement in words on the panel
    assert set(result.probabilities) == set(result.details["probabilities"]) and "covid" in result.probabilities
    assert all(0.0 <= p <= 1.0 for p in result.probabilities.values())
    assert isinstance(result.quantification, dict) and "Prediction: " + result.label in result.summary()
    assert result.statement == result.details["statement"] and result.statement in result.summary()
    # the server's named self-checks reach the panel and the segmentation node (issue 14)
    assert isinstance(result.details["warnings"], list) and result.warnings == result.details["warnings"]
    assert result.segmentation_node.GetAttribute("CovidMTL.Warnings") == ";".join(w["name"] for w in result.warnings)

    mask = assert_segmentation_matches(volume, result)
    if result.lesion_volume_ml is not None:  # the panel's volume is the segment's voxels x voxel volume
        voxel_ml = abs(np.linalg.det(mrml.ijk_to_ras(volume)[:3, :3])) / 1000.0
        assert result.lesion_volume_ml == pytest.approx(mask.sum() * voxel_ml, rel=1e-3, abs=1e-3)

    percents = [percent for _, percent in steps]
    assert percents == sorted(percents) and percents[-1] == 100
    assert idles, "the idle hook (slicer.app.processEvents in Slicer) was never called during the requests"


def test_classify_shows_the_ct_in_the_models_lung_window(logic, classified):
    volume, _, _, _ = classified  # read from a file without a display node, then classified
    display = volume.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == logic.served.window == (1500.0, -600.0)
    assert not display.GetAutoWindowLevel()


def test_uploaded_image_is_the_volume_on_its_grid_and_is_not_uploaded_twice(server, logic, classified):
    volume, result, _, _ = classified
    assert volume.GetAttribute(IMAGE_ID_ATTRIBUTE) == result.image_id and result.image_id.startswith("covid_002-")
    stored, affine = nifti_bytes_zyx(get(server, "/datastore/image", image=result.image_id).content)
    np.testing.assert_array_equal(stored, slicer.util.arrayFromVolume(volume))
    np.testing.assert_allclose(affine, mrml.ijk_to_ras(volume), atol=1e-3)

    uploads = []
    upload = logic.client.upload_image
    logic.client.upload_image = lambda *args: uploads.append(args) or upload(*args)  # count, still real HTTP
    try:
        volume.RemoveAttribute(IMAGE_ID_ATTRIBUTE)  # a new session: only the content-derived id is known
        assert logic.ensure_image_on_server(volume) == result.image_id
    finally:
        logic.client.upload_image = upload
    assert uploads == []


def test_submit_edited_mask_with_overridden_class(server, logic, classified):
    volume, result, _, _ = classified
    edited = mrml.segment_array(result.segmentation_node, SEGMENT_NAME, volume)
    edited[10:14, 5:25, 5:25] = 1  # painted
    edited[20:22, :, :] = 0  # erased
    paint(result.segmentation_node, result.segment_id, edited, volume)
    chosen = next(c for c in ("other", "normal", "covid") if c != result.label)  # the radiologist disagrees

    logic.submit_correction(volume, chosen)

    label, affine = nifti_bytes_zyx(get(server, "/datastore/label", label=result.image_id, tag="final").content)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, edited)
    np.testing.assert_allclose(affine, mrml.ijk_to_ras(volume), atol=1e-3)
    assert get(server, "/datastore/label/info", label=result.image_id, tag="final").json()["classification"] == chosen


def test_unknown_class_is_refused_with_the_servers_reason(logic, classified):
    volume, _, _, _ = classified
    with pytest.raises(CovidMTLLogicError) as caught:
        logic.submit_correction(volume, "influenza")
    message = str(caught.value)
    assert "unknown classification 'influenza'" in message and "HTTP 422" in message and "Traceback" not in message


def test_unknown_image_gives_the_servers_detail(logic):
    expected = r"refused the classification of image no_such_case: .*no_such_case.* not found.*\(HTTP 404\)$"
    with pytest.raises(CovidMTLLogicError, match=expected):
        logic.client.infer("covid_mtl", "no_such_case")


def test_next_case_loads_an_unlabelled_image(server, logic, module_scene):
    node = logic.next_case()
    image_id = node.GetAttribute(IMAGE_ID_ATTRIBUTE)
    assert node.GetScene() is module_scene and node.IsA("vtkMRMLScalarVolumeNode") and node.GetName() == image_id
    label = requests.head(f"{server.url}/datastore/label", params={"image": image_id, "tag": "final"}, timeout=30)
    assert label.status_code == 404
    on_disk = next(server.studies.glob(f"{image_id}.*"))
    voxels, affine = nifti_zyx(on_disk)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), voxels)
    np.testing.assert_allclose(mrml.ijk_to_ras(node), affine, atol=1e-3)
    assert logic.ensure_image_on_server(node) == image_id  # known to the server: classified without an upload
    assert (node.GetDisplayNode().GetWindow(), node.GetDisplayNode().GetLevel()) == logic.lung_window


def test_real_ct_is_classified_on_its_own_grid(logic, module_scene, real_ct):
    volume = mrml.read_volume(module_scene, real_ct / REAL_CT, "example_ct_sm")
    result = logic.classify_and_segment(volume)
    assert result.label in logic.correction_classes
    assert_segmentation_matches(volume, result)


def test_training_starts_reports_status_and_stops(logic):
    logic.start_training(max_epochs=1)
    deadline = time.monotonic() + 60
    status = logic.training_status()
    while status.state == "SUBMITTED" and time.monotonic() < deadline:
        time.sleep(1)
        status = logic.training_status()
    assert status.state in ("RUNNING", "DONE"), status.details
    assert status.summary().startswith(f"Training: {status.state.lower()}")

    logic.stop_training()
    deadline = time.monotonic() + 30
    while logic.training_status().running and time.monotonic() < deadline:
        time.sleep(1)
    final = logic.training_status()
    assert not final.running and final.state in ("STOPPED", "DONE"), final.details
