"""The panel's state in the module's parameter node, with a real MRML scene (slicer-core): defaults on a new scene, one
node per scene, values that survive getting the node again and a save / reload of the scene file."""
from __future__ import annotations

import numpy as np
import slicer

from CovidMTLLib.logic import CovidMTLLogic
from CovidMTLLib.parameters import DEFAULT_MAX_EPOCHS, MODULE_NAME, parameter_node
from tests.slicer.slicer_helpers import add_volume, oblique_ijk_to_ras

URL = "http://127.0.0.1:8123"


def test_a_new_scene_gets_one_node_with_defaults(scene):
    params = CovidMTLLogic(scene, URL).parameter_node()
    assert params.node.IsA("vtkMRMLScriptedModuleNode")
    assert params.node.GetSingletonTag() == MODULE_NAME and params.node.GetModuleName() == MODULE_NAME
    assert params.node.GetHideFromEditors()
    assert params.server_url == URL and params.max_epochs == DEFAULT_MAX_EPOCHS
    assert params.input_volume is None and params.correction_class is None and params.image_id is None
    again = CovidMTLLogic(scene, "http://elsewhere:9").parameter_node()  # a second widget / logic on the scene
    assert again.node is params.node and again.server_url == URL  # set values are kept, not reset to defaults
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1


def test_values_survive_and_the_volume_is_a_node_reference(scene, oblique_ct):
    params = parameter_node(scene, URL)
    params.server_url = "http://10.0.0.2:8000"
    params.input_volume = oblique_ct
    params.correction_class = "non-covid"
    params.image_id = "covid_002-0123456789ab"
    params.max_epochs = 3
    back = parameter_node(scene, URL)
    assert back.server_url == "http://10.0.0.2:8000" and back.input_volume is oblique_ct
    assert (back.correction_class, back.image_id, back.max_epochs) == ("non-covid", "covid_002-0123456789ab", 3)

    back.correction_class = None
    assert parameter_node(scene, URL).correction_class is None
    scene.RemoveNode(oblique_ct)  # the reference empties with the node: no dangling id
    assert parameter_node(scene, URL).input_volume is None


def test_state_is_saved_with_the_scene_and_comes_back(scene, tmp_path):
    volume = add_volume(scene, np.zeros((4, 5, 6), np.int16), oblique_ijk_to_ras(), "chest ct")
    params = parameter_node(scene, URL)
    params.input_volume, params.correction_class, params.max_epochs = volume, "other", 7
    path = tmp_path / "review.mrml"
    scene.SetURL(str(path))
    assert scene.Commit()

    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(path))
    try:
        assert reloaded.Connect()
        back = parameter_node(reloaded, "http://not-used:1")
        assert back.server_url == URL and back.correction_class == "other" and back.max_epochs == 7
        assert back.input_volume is not None and back.input_volume.GetName() == "chest ct"
        assert reloaded.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
    finally:
        reloaded.Clear(True)


def test_a_closed_scene_starts_again_from_defaults(scene):
    params = parameter_node(scene, URL)
    params.max_epochs, params.image_id = 42, "old-case"
    scene.Clear(False)  # File > Close scene: singleton nodes stay, emptied (the widget then asks again)
    fresh = parameter_node(scene, URL)
    assert fresh.max_epochs == DEFAULT_MAX_EPOCHS and fresh.image_id is None and fresh.server_url == URL
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1


def test_unreadable_epochs_fall_back_to_the_default(scene):
    params = parameter_node(scene, URL)
    params.node.SetParameter(params.MAX_EPOCHS, "ten")  # a hand-edited scene file
    assert params.max_epochs == DEFAULT_MAX_EPOCHS
