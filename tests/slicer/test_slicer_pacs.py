"""The radiologist's workflow through CovidMTLLogic on a PACS: a real Orthanc on loopback, a real covid-mtl server
serving it over DICOMweb, real MRML nodes. Load a PACS series from the server, one click gives the class statement
and a mask, the edited mask goes back and lands in Orthanc as a DICOM SEG that reads back voxel for voxel.
"""
from __future__ import annotations

import numpy as np
import pytest
import slicer  # noqa: F401  (conftest skips the module without slicer-core)

from CovidMTLLib import scene as mrml
from CovidMTLLib.logic import IMAGE_ID_ATTRIBUTE, SEGMENT_NAME, CovidMTLLogic
from covid_mtl.io import read_image
from covid_mtl.measure.dicom_seg import read_dicom_seg, seg_classification
from tests.pacs_site import SAMPLE_SERIES
from tests.slicer.slicer_helpers import application_scene
from tests.slicer.test_slicer_logic import paint


@pytest.fixture(scope="module")
def logic(pacs):
    with application_scene() as scene:
        yield CovidMTLLogic(scene, pacs.server.url, timeout=300)


def test_load_classify_correct_a_pacs_series(pacs, logic):
    logic.connect()
    assert f"Datastore from the PACS {pacs.orthanc.dicomweb}: 1 images" in logic.describe_server()
    volume = logic.load_server_image(pacs.ct_series)
    assert volume.GetAttribute(IMAGE_ID_ATTRIBUTE) == pacs.ct_series
    source = read_image(SAMPLE_SERIES)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), source.array)

    result = logic.classify_and_segment(volume)
    assert result.image_id == pacs.ct_series  # the PACS series itself, nothing uploaded
    assert "P(COVID-19)" in result.statement and result.label in logic.correction_classes

    edited = mrml.segment_array(result.segmentation_node, SEGMENT_NAME, volume)
    edited[4:9, 60:100, 40:90] = 1
    paint(result.segmentation_node, result.segment_id, edited, volume)
    chosen = next(c for c in ("covid", "non-covid") if c != result.label and c in logic.correction_classes)
    logic.submit_correction(volume, chosen)

    segs = pacs.segs()
    assert len(segs) == 1
    seg = pacs.seg_file(segs[0]["Instances"][0])
    assert seg_classification(seg) == chosen
    np.testing.assert_array_equal(read_dicom_seg(seg, source), edited)
