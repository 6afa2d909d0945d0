"""What the module learns from the server's /info/ (model, classes, correction classes, strategy, trainer, lung window)
and where it uses it: the infer call, the class lists, and the CT's window after Classify & Segment (real volume
and display nodes in slicer-core; the HTTP side is a recorded server, the real one is test_slicer_logic.py's)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from CovidMTLLib import scene as mrml
from CovidMTLLib.client import CovidMTLLogicError
from CovidMTLLib.logic import CovidMTLLogic
from CovidMTLLib.served import LUNG_WINDOW, ServedModel
from tests.slicer.slicer_helpers import SERVER_INFO, RecordedServer

URL = "http://127.0.0.1:9"
REPLY = {"label": "covid", "probabilities": {"covid": 0.8}, "lesion_volume_ml": 1.0, "quantification": {},
         "warnings": []}


def info(**model_entry) -> dict:
    """SERVER_INFO with the covid_mtl entry's keys replaced (None removes a key)."""
    out = copy.deepcopy(SERVER_INFO)
    entry = out["models"]["covid_mtl"]
    for key, value in model_entry.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return out


def recorded_logic(scene, volume, server_info: dict) -> CovidMTLLogic:
    mask = np.zeros(mrml.dimensions(volume)[::-1], np.uint8)
    mask[2:4, 3:6, 4:8] = 1
    logic = CovidMTLLogic(scene, URL)
    logic.client = RecordedServer(REPLY, mask, mrml.ijk_to_ras(volume), info=server_info)
    return logic


def test_everything_comes_from_the_servers_info():
    served = ServedModel.from_info(SERVER_INFO, URL)
    assert served == ServedModel("covid_mtl", ("covid", "normal", "other"), ("covid", "normal", "other", "non-covid"),
                                 "uncertainty", "covid_mtl", (1500.0, -600.0))


def test_another_model_name_and_classes_are_used_as_published():
    other = {"models": {"deepedit": {"labels": {"lung": 1}},  # an infer model without classes is not the one
                        "pneumonia": {"classes": ["viral", "bacterial"], "correction_classes": ["viral", "bacterial",
                                                                                                "none"],
                                      "window": {"width": 1200, "level": -500}}},
             "strategies": {"random": {}, "first": {}}, "trainers": {}}
    served = ServedModel.from_info(other, URL)
    assert (served.name, served.classes, served.correction_classes) == (
        "pneumonia", ("viral", "bacterial"), ("viral", "bacterial", "none"))
    assert served.strategy == "random" and served.trainer is None and served.window == (1200.0, -500.0)


def test_without_published_correction_classes_they_are_the_classes_and_non_covid():
    served = ServedModel.from_info(info(correction_classes=None), URL)
    assert served.correction_classes == ("covid", "normal", "other", "non-covid")


@pytest.mark.parametrize("window", [None, {"width": "wide", "level": -600}, {"width": 0, "level": -600}, [1500, -600]])
def test_a_missing_or_unusable_window_falls_back_to_the_lung_window(window):
    assert ServedModel.from_info(info(window=window), URL).window == LUNG_WINDOW == (1500.0, -600.0)


def test_a_server_without_a_classification_model_is_refused():
    with pytest.raises(CovidMTLLogicError, match=r"offers no classification model: none of its models \(deepedit\)"):
        ServedModel.from_info({"models": {"deepedit": {"labels": {}}}}, URL)
    with pytest.raises(CovidMTLLogicError, match=r"\(none\)"):
        ServedModel.from_info({}, URL)


def test_before_connecting_the_logic_knows_no_classes_and_shows_the_lung_window(scene):
    logic = CovidMTLLogic(scene, URL)
    assert logic.served is None and logic.correction_classes == () and logic.lung_window == LUNG_WINDOW


def test_classify_connects_first_and_infers_with_the_published_model(scene, oblique_ct):
    logic = recorded_logic(scene, oblique_ct, SERVER_INFO)
    logic.classify_and_segment(oblique_ct)  # nobody pressed Connect: the logic reads /info/ itself
    assert logic.client.infers[0][0] == "covid_mtl"
    assert logic.correction_classes == ("covid", "normal", "other", "non-covid")
    assert "Using: covid_mtl (covid, normal, other); next case: uncertainty; lung window W 1500 / L -600" in \
        logic.describe_server()


def test_classify_shows_the_ct_in_the_models_lung_window(scene, oblique_ct):
    assert oblique_ct.GetDisplayNode() is None  # as a volume read from a file, before it is shown
    recorded_logic(scene, oblique_ct, SERVER_INFO).classify_and_segment(oblique_ct)
    display = oblique_ct.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (1500.0, -600.0)
    assert not display.GetAutoWindowLevel()  # Slicer's automatic window would override it


def test_the_window_a_server_publishes_wins_over_the_default(scene, oblique_ct):
    oblique_ct.CreateDefaultDisplayNodes()
    oblique_ct.GetDisplayNode().SetWindowLevel(400.0, 40.0)  # the radiologist's soft-tissue window
    recorded_logic(scene, oblique_ct, info(window={"width": 1600.0, "level": -550.0})).classify_and_segment(oblique_ct)
    display = oblique_ct.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (1600.0, -550.0)


def test_a_server_without_the_model_gets_no_upload(scene, oblique_ct):
    logic = recorded_logic(scene, oblique_ct, {"models": {}, "strategies": {}, "trainers": {}})
    with pytest.raises(CovidMTLLogicError, match="offers no classification model"):
        logic.classify_and_segment(oblique_ct)
    assert logic.client.infers == [] and oblique_ct.GetAttribute("CovidMTL.ImageId") is None


def test_next_case_and_training_need_what_the_server_offers(scene, oblique_ct):
    bare = copy.deepcopy(SERVER_INFO)
    bare["strategies"], bare["trainers"] = {}, {}
    logic = recorded_logic(scene, oblique_ct, bare)
    with pytest.raises(CovidMTLLogicError, match="offers no active-learning strategy"):
        logic.next_case()
    with pytest.raises(CovidMTLLogicError, match="offers no training for the model covid_mtl"):
        logic.start_training(1)
