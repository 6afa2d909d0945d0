"""3D Slicer module CovidMTL: one click classifies a chest CT (with the classes the served model was trained on:
COVID-19 vs non-COVID for the packaged one) and segments COVID lesions with the covid-mtl MONAI Label server; the
radiologist corrects the mask and sends it back for retraining.

The widget only wires Qt to CovidMTLLib.logic.CovidMTLLogic, which does all the work without Qt (and is tested with
pytest in slicer-core). The panel's state lives in the module's parameter node (CovidMTLLib.parameters): the widget
writes each change there and redraws from it. Outside the Slicer application this file still imports, exposing the
logic.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from CovidMTLLib.client import DEFAULT_URL, CovidMTLLogicError
from CovidMTLLib.logic import IMAGE_ID_ATTRIBUTE, CovidMTLLogic
from CovidMTLLib.selftest import run_self_test
from slicer.util import VTKObservationMixin

try:  # Slicer application only: Qt and the scripted-module base classes are not in slicer-core
    import qt
    import slicer
    import vtk
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:
    qt = None

    class _NoApplication:
        """Base of the module's classes outside the application (a class of its own: the widget's bases list
        VTKObservationMixin too, and ``object`` before it would make no consistent MRO)."""

    ScriptedLoadableModule = ScriptedLoadableModuleWidget = ScriptedLoadableModuleTest = _NoApplication

SETTINGS_KEY = "CovidMTL/ServerURL"  # the last URL used: the server URL of a new scene's parameter node
USER_KEY = "CovidMTL/UserName"  # the last user name that logged in (never the password or the token)
TRAIN_POLL_MS = 5000


class CovidMTL(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "COVID-19 MTL"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["covid-mtl contributors"]
        self.parent.helpText = (
            "Classify a chest CT (COVID-19 vs non-COVID, or COVID-19 / normal / other infection once the served model "
            "has learned all three) and segment COVID lesions with a covid-mtl MONAI Label server; correct the mask in "
            "Segment Editor and submit it to retrain the model."
        )
        self.parent.acknowledgementText = "Multi-task network after Amyar et al. 2020; served with MONAI Label."


class CovidMTLWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Qt wiring only. Long calls keep the window alive: the logic runs each HTTP request in a worker thread and
    calls slicer.app.processEvents while it waits; action buttons are disabled meanwhile, so no call re-enters.

    State: ``self.params`` (the scene's parameter node). Edits in the panel go there
    (``updateParameterNodeFromGUI``) and the panel is redrawn from it (``updateGUIFromParameterNode``, also on any
    change made elsewhere); the slots read what they need from it, never from the widgets."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.params = None
        self.updatingGUI = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/CovidMTL.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = CovidMTLLogic(slicer.mrmlScene, qt.QSettings().value(SETTINGS_KEY, DEFAULT_URL))
        self.logic.set_idle_callback(slicer.app.processEvents)
        self.busy = False
        self.polling = False
        self.trainTimer = qt.QTimer()
        self.trainTimer.setInterval(TRAIN_POLL_MS)
        self.trainTimer.timeout.connect(self.onPollTraining)

        self.ui.serverUrlLineEdit.editingFinished.connect(self.updateParameterNodeFromGUI)
        self.ui.inputVolumeSelector.currentNodeChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.classComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.maxEpochsSpinBox.valueChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.connectButton.clicked.connect(self.onConnect)
        self.ui.classifyButton.clicked.connect(self.onClassify)
        self.ui.submitButton.clicked.connect(self.onSubmit)
        self.ui.nextCaseButton.clicked.connect(self.onNextCase)
        self.ui.trainButton.clicked.connect(self.onTrain)
        self.ui.stopTrainButton.clicked.connect(self.onStopTraining)
        # Closing the scene empties the parameter node: let go of it, and take it again, with defaults, afterwards.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.layout.addStretch(1)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.trainTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()  # the scene may have been replaced (loaded) while the module was hidden

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ------------------------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.parameter_node())

    def setParameterNode(self, params) -> None:
        if self.params is not None:
            self.removeObserver(self.params.node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.params = params
        if params is not None:
            self.addObserver(params.node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        if self.updatingGUI:
            return
        if self.params is not None:
            self.updatingGUI = True  # the widgets' change signals below must not write back half-drawn state
            try:
                self.ui.serverUrlLineEdit.text = self.params.server_url
                self.ui.inputVolumeSelector.setCurrentNode(self.params.input_volume)
                classes = list(self.logic.correction_classes)  # what the server accepts; none before connecting
                if [self.ui.classComboBox.itemText(i) for i in range(self.ui.classComboBox.count)] != classes:
                    self.ui.classComboBox.clear()
                    self.ui.classComboBox.addItems(classes)
                chosen = self.params.correction_class or ""
                self.ui.classComboBox.setCurrentIndex(self.ui.classComboBox.findText(chosen))
                self.ui.maxEpochsSpinBox.value = self.params.max_epochs
            finally:
                self.updatingGUI = False
        self.updateButtons()

    def updateParameterNodeFromGUI(self, *_args) -> None:
        if self.params is None or self.updatingGUI:
            return
        modified = self.params.node.StartModify()  # one redraw for the whole change
        self.params.server_url = self.ui.serverUrlLineEdit.text
        self.params.input_volume = self.ui.inputVolumeSelector.currentNode()
        self.params.correction_class = self.ui.classComboBox.currentText or None
        self.params.max_epochs = self.ui.maxEpochsSpinBox.value
        self.params.node.EndModify(modified)

    # -- helpers ------------------------------------------------------------------------------------------------
    def run(self, message: str, call: Callable[[], Any]) -> Optional[Any]:
        """Run one logic call with the panel locked; errors become a message box (details of unexpected ones go to
        the log, not to the radiologist). Returns the call's result, or None when it failed."""
        self.busy = True
        self.updateButtons()
        self.onProgress(message, 0)
        try:
            with slicer.util.WaitCursor():
                return call()
        except CovidMTLLogicError as exc:
            self.onProgress(f"Failed: {exc}", 0)
            slicer.util.errorDisplay(str(exc))
        except Exception as exc:  # noqa: BLE001  (a bug must not leave the panel locked)
            logging.exception("CovidMTL: %s failed", message)
            self.onProgress(f"Failed: {exc}", 0)
            slicer.util.errorDisplay(f"{message} failed unexpectedly: {exc}\nDetails are in the application log.")
        finally:
            self.busy = False
            self.updateGUIFromParameterNode()  # the call may have connected: the class list is the server's now
        return None

    def onProgress(self, message: str, percent: int) -> None:
        self.ui.statusLabel.text = message
        self.ui.progressBar.value = percent
        slicer.app.processEvents()

    def updateButtons(self) -> None:
        volume = self.params.input_volume if self.params is not None else None
        idle = not self.busy and self.params is not None
        for button in (self.ui.connectButton, self.ui.nextCaseButton, self.ui.trainButton, self.ui.stopTrainButton):
            button.enabled = idle
        self.ui.classifyButton.enabled = idle and volume is not None
        self.ui.submitButton.enabled = idle and self.logic.segmentation_for(volume) is not None

    def useServerUrl(self) -> None:
        self.logic.set_server_url(self.params.server_url)
        self.params.server_url = self.logic.server_url  # normalised ("host:port" -> "http://host:port")
        qt.QSettings().setValue(SETTINGS_KEY, self.logic.server_url)

    # -- slots --------------------------------------------------------------------------------------------------
    def onConnect(self) -> None:
        self.useServerUrl()
        info = self.run("Connecting", lambda: self.logic.connect(self.askCredentials))
        if info is not None:
            self.ui.serverInfoLabel.text = self.logic.describe_server(info)
            self.onProgress("Connected", 100)

    def askCredentials(self) -> Optional[tuple[str, str]]:
        """User name and password for a server with authentication on, asked in dialogs: they go to the logic's
        client (memory) and nowhere else; only the user name is remembered in Slicer's settings."""
        user, ok = qt.QInputDialog.getText(slicer.util.mainWindow(), "covid-mtl login", "User name:",
                                           qt.QLineEdit.Normal, qt.QSettings().value(USER_KEY, ""))
        if not ok or not user:
            return None
        password, ok = qt.QInputDialog.getText(slicer.util.mainWindow(), "covid-mtl login",
                                               f"Password of {user}:", qt.QLineEdit.Password, "")
        if not ok or not password:
            return None
        qt.QSettings().setValue(USER_KEY, user)
        return user, password

    def onClassify(self) -> None:
        self.useServerUrl()
        volume = self.params.input_volume
        result = self.run("Classifying", lambda: self.logic.classify_and_segment(volume, self.onProgress))
        if result is not None:
            self.ui.resultLabel.text = result.summary()
            self.ui.warningsLabel.text = result.warnings_text()  # next to the numbers, marked <! name> there
            modified = self.params.node.StartModify()
            self.params.image_id = result.image_id
            self.params.correction_class = result.label if result.label in self.logic.correction_classes else None
            self.params.node.EndModify(modified)
            slicer.util.setSliceViewerLayers(background=volume)

    def onSubmit(self) -> None:
        self.useServerUrl()
        volume, chosen = self.params.input_volume, self.params.correction_class
        submit = lambda: self.logic.submit_correction(volume, chosen, progress=self.onProgress)  # noqa: E731
        if self.run("Submitting", submit) is not None:
            self.onProgress(f"Correction saved as '{chosen}'", 100)

    def onNextCase(self) -> None:
        self.useServerUrl()
        node = self.run("Fetching the next case", lambda: self.logic.next_case(self.onProgress))
        if node is not None:
            modified = self.params.node.StartModify()
            self.params.input_volume = node
            self.params.image_id = node.GetAttribute(IMAGE_ID_ATTRIBUTE)
            self.params.correction_class = None
            self.params.node.EndModify(modified)
            self.ui.resultLabel.text = "Not classified yet"
            self.ui.warningsLabel.text = ""
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    def onTrain(self) -> None:
        self.useServerUrl()
        if self.run("Starting training", lambda: self.logic.start_training(self.params.max_epochs)) is not None:
            self.trainTimer.start()
            self.onPollTraining()

    def onStopTraining(self) -> None:
        self.useServerUrl()
        self.run("Stopping training", self.logic.stop_training)
        self.onPollTraining()

    def onPollTraining(self) -> None:
        if self.polling or self.busy:  # processEvents inside a request may deliver a tick: skip it, poll later
            return
        self.polling = True
        try:
            status = self.logic.training_status()
            self.ui.trainStatusLabel.text = status.summary()
            if not status.running:
                self.trainTimer.stop()
        except CovidMTLLogicError as exc:  # shown in the label: a popup every 5 s would be unbearable
            self.ui.trainStatusLabel.text = str(exc)
            self.trainTimer.stop()
        finally:
            self.polling = False


class CovidMTLTest(ScriptedLoadableModuleTest):
    """Reload & Test: the offline checks of CovidMTLLib.selftest (pytest runs the same function)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        for check in run_self_test(slicer.mrmlScene):
            self.delayDisplay(f"passed: {check}", 200)
        self.delayDisplay("CovidMTL self-test passed")
