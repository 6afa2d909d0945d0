"""The panel shows the server's named warnings (issue 14) next to the numbers they affect, with real MRML nodes.

The HTTP side is a stand-in that returns a recorded infer reply (the server's own replies are covered by
test_slicer_logic.py against a real server); everything on the Slicer side (volume, labelmap, segmentation, node
attributes) is real MRML in slicer-core.
"""
from __future__ import annotations

import numpy as np

from CovidMTLLib import scene as mrml
from CovidMTLLib.logic import WARNINGS_ATTRIBUTE, CovidMTLLogic, InferenceResult, case_warnings
from tests.slicer.slicer_helpers import RecordedServer

IMPLAUSIBLE = {"name": "lung_volume_implausible", "message": "lung volume 8.50 L is above the plausible adult range",
               "value": 8500.0, "limit": [2500.0, 7500.0],
               "affects": ["lung_ml", "percent_involved", "lungs", "zones", "zone_severity_score"]}
UID = {"name": "dicom_nonconformant_uid", "message": "300 non-conformant UID values", "value": 300, "limit": None,
       "affects": []}


def reply(warnings) -> dict:
    return {"label": "covid", "probabilities": {"covid": 0.8, "normal": 0.1, "other": 0.1}, "lesion_volume_ml": 12.5,
            "model_version": "lite-000000000000",
            "quantification": {"lung_ml": 8500.0, "percent_involved": 4.2, "zone_severity_score": 6,
                               "warnings": [w for w in warnings if w["affects"]]},
            "warnings": warnings}


def classify(scene, oblique_ct, warnings):
    mask = np.zeros(mrml.dimensions(oblique_ct)[::-1], np.uint8)
    mask[4:8, 5:10, 6:12] = 1
    logic = CovidMTLLogic(scene, "http://127.0.0.1:9")
    logic.client = RecordedServer(reply(warnings), mask, mrml.ijk_to_ras(oblique_ct))
    return logic, logic.classify_and_segment(oblique_ct)


def test_warnings_are_shown_next_to_the_numbers_and_kept_on_the_segmentation(scene, oblique_ct):
    logic, result = classify(scene, oblique_ct, [UID, IMPLAUSIBLE])
    assert [w["name"] for w in result.warnings] == ["dicom_nonconformant_uid", "lung_volume_implausible"]
    lines = result.summary().splitlines()
    assert "Lung ml: 8500.0  <! lung_volume_implausible>" in lines
    assert "Percent involved: 4.2  <! lung_volume_implausible>" in lines
    assert not any("<!" in line for line in lines if line.startswith("Lesion volume"))  # not affected
    text = result.warnings_text().splitlines()
    assert text == ["! dicom_nonconformant_uid: 300 non-conformant UID values",
                    "! lung_volume_implausible: lung volume 8.50 L is above the plausible adult range"]
    segmentation = logic.segmentation_for(oblique_ct)
    assert segmentation is result.segmentation_node
    assert segmentation.GetAttribute(WARNINGS_ATTRIBUTE) == "dicom_nonconformant_uid;lung_volume_implausible"
    assert logic.warnings_for(oblique_ct) == ["dicom_nonconformant_uid", "lung_volume_implausible"]


def test_a_clean_case_clears_the_warnings_of_the_last_one(scene, oblique_ct):
    logic, _ = classify(scene, oblique_ct, [IMPLAUSIBLE])
    assert logic.warnings_for(oblique_ct) == ["lung_volume_implausible"]
    logic.client.reply = reply([])
    result = logic.classify_and_segment(oblique_ct)  # same volume, same segmentation node reused
    assert result.warnings == [] and result.warnings_text() == "" and "<!" not in result.summary()
    assert logic.warnings_for(oblique_ct) == []


def test_older_server_replies_without_warnings_still_work():
    assert case_warnings({"label": "covid"}) == []
    assert case_warnings({"quantification": {"warnings": [IMPLAUSIBLE]}}) == [IMPLAUSIBLE]
    empty = InferenceResult("id", "normal", {}, None, {}, None, None, "seg")
    assert empty.warnings == [] and empty.warnings_text() == ""
