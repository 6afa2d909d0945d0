"""The panel's state as the module's parameter node (Slicer's scripted-module pattern: widget, logic, parameter node).

One ``vtkMRMLScriptedModuleNode`` per scene, tagged for the module, holds what the panel shows and the radiologist
chose: server URL, CT volume, class of the correction, the server's id of the last case, epochs. The widget writes
every change there and redraws from it, so the state lives in the scene (saved with it, back when it is reloaded,
gone when it is closed) and not in Qt widgets; pytest reads and writes it with slicer-core, without Qt.
"""
from __future__ import annotations

from typing import Any, Optional

import slicer

MODULE_NAME = "CovidMTL"
NODE_CLASS = "vtkMRMLScriptedModuleNode"
DEFAULT_MAX_EPOCHS = 1  # one round of the annotation loop (the train task's own default)


class PanelParameters:
    """Typed access to the parameter node; text parameters read "" as unset."""

    SERVER_URL = "ServerURL"
    CORRECTION_CLASS = "CorrectionClass"
    IMAGE_ID = "ImageId"
    MAX_EPOCHS = "MaxEpochs"
    INPUT_VOLUME = "InputVolume"  # a node reference: it follows the node's id and empties when the node goes

    def __init__(self, node: Any):
        self.node = node

    def _text(self, name: str) -> Optional[str]:
        return self.node.GetParameter(name) or None

    def _set_text(self, name: str, value: Optional[str]) -> None:
        self.node.SetParameter(name, value or "")

    @property
    def server_url(self) -> str:
        return self.node.GetParameter(self.SERVER_URL)

    @server_url.setter
    def server_url(self, url: str) -> None:
        self._set_text(self.SERVER_URL, url)

    @property
    def input_volume(self) -> Any:
        return self.node.GetNodeReference(self.INPUT_VOLUME)

    @input_volume.setter
    def input_volume(self, volume_node: Any) -> None:
        self.node.SetNodeReferenceID(self.INPUT_VOLUME, volume_node.GetID() if volume_node is not None else None)

    @property
    def correction_class(self) -> Optional[str]:
        return self._text(self.CORRECTION_CLASS)

    @correction_class.setter
    def correction_class(self, name: Optional[str]) -> None:
        self._set_text(self.CORRECTION_CLASS, name)

    @property
    def image_id(self) -> Optional[str]:
        """The server's id of the last case classified or fetched (Next case)."""
        return self._text(self.IMAGE_ID)

    @image_id.setter
    def image_id(self, image_id: Optional[str]) -> None:
        self._set_text(self.IMAGE_ID, image_id)

    @property
    def max_epochs(self) -> int:
        try:
            return max(1, int(self.node.GetParameter(self.MAX_EPOCHS)))
        except ValueError:  # hand-edited scene file: fall back rather than break the panel
            return DEFAULT_MAX_EPOCHS

    @max_epochs.setter
    def max_epochs(self, epochs: int) -> None:
        self.node.SetParameter(self.MAX_EPOCHS, str(int(epochs)))

    def set_defaults(self, server_url: str) -> None:
        """Fill the parameters a new scene (or one saved by an older module) lacks; set ones are kept."""
        if not self.server_url:
            self.server_url = server_url
        if not self.node.GetParameter(self.MAX_EPOCHS):
            self.max_epochs = DEFAULT_MAX_EPOCHS


def parameter_node(scene: Any, server_url: str) -> PanelParameters:
    """The scene's parameter node of the module, made (with defaults) when the scene has none yet."""
    node = scene.GetSingletonNode(MODULE_NAME, NODE_CLASS)
    if node is None:
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(MODULE_NAME)  # the scene keeps one: a second AddNode returns the first
        node.SetModuleName(MODULE_NAME)
        node.SetName(scene.GenerateUniqueName(MODULE_NAME))
        node.HideFromEditorsOn()  # panel state, not data: stays out of the Data module's tree
        node = scene.AddNode(node)
    parameters = PanelParameters(node)
    parameters.set_defaults(server_url)
    return parameters
