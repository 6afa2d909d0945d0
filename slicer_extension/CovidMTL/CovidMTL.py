"""3D Slicer module CovidMTL: one click classifies a chest CT (COVID-19 / normal / other infection) and segments COVID
lesions with the covid-mtl MONAI Label server; the radiologist corrects the mask and sends it back for retraining.

The widget only wires Qt to CovidMTLLib.logic.CovidMTLLogic, which does all the work without Qt (and is tested with
pytest in slicer-core). Outside the Slicer application this file still imports, exposing the logic.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from CovidMTLLib.client import DEFAULT_URL, CovidMTLLogicError
from CovidMTLLib.logic import CORRECTION_CLASSES, CovidMTLLogic  # noqa: F401  (CovidMTLLogic: Slicer's module logic)
from CovidMTLLib.selftest import run_self_test

try:  # Slicer application only: Qt and the scripted-module base classes are not in slicer-core
    import qt
    import slicer
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:
    qt = None
    ScriptedLoadableModule = ScriptedLoadableModuleWidget = ScriptedLoadableModuleTest = object

SETTINGS_KEY = "CovidMTL/ServerURL"
TRAIN_POLL_MS = 5000


class CovidMTL(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "COVID-19 MTL"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["covid-mtl contributors"]
        self.parent.helpText = (
            "Classify a chest CT as COVID-19 / normal / other infection and segment COVID lesions with a covid-mtl "
            "MONAI Label server; correct the mask in Segment Editor and submit it to retrain the model."
        )
        self.parent.acknowledgementText = "Multi-task network after Amyar et al. 2020; served with MONAI Label."


class CovidMTLWidget(ScriptedLoadableModuleWidget):
    """Qt wiring only. Long calls keep the window alive: the logic runs each HTTP request in a worker thread and
    calls slicer.app.processEvents while it waits; action buttons are disabled meanwhile, so no call re-enters."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/CovidMTL.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = CovidMTLLogic(slicer.mrmlScene)
        self.logic.set_idle_callback(slicer.app.processEvents)
        self.busy = False
        self.polling = False

        self.ui.classComboBox.addItems(list(CORRECTION_CLASSES))
        self.ui.serverUrlLineEdit.text = qt.QSettings().value(SETTINGS_KEY, DEFAULT_URL)
        self.trainTimer = qt.QTimer()
        self.trainTimer.setInterval(TRAIN_POLL_MS)
        self.trainTimer.timeout.connect(self.onPollTraining)

        self.ui.connectButton.clicked.connect(self.onConnect)
        self.ui.classifyButton.clicked.connect(self.onClassify)
        self.ui.submitButton.clicked.connect(self.onSubmit)
        self.ui.nextCaseButton.clicked.connect(self.onNextCase)
        self.ui.trainButton.clicked.connect(self.onTrain)
        self.ui.stopTrainButton.clicked.connect(self.onStopTraining)
        self.ui.inputVolumeSelector.currentNodeChanged.connect(lambda _node: self.updateButtons())
        self.layout.addStretch(1)
        self.updateButtons()

    def cleanup(self) -> None:
        self.trainTimer.stop()

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
            self.updateButtons()
        return None

    def onProgress(self, message: str, percent: int) -> None:
        self.ui.statusLabel.text = message
        self.ui.progressBar.value = percent
        slicer.app.processEvents()

    def updateButtons(self) -> None:
        volume = self.ui.inputVolumeSelector.currentNode()
        idle = not self.busy
        for button in (self.ui.connectButton, self.ui.nextCaseButton, self.ui.trainButton, self.ui.stopTrainButton):
            button.enabled = idle
        self.ui.classifyButton.enabled = idle and volume is not None
        self.ui.submitButton.enabled = idle and self.logic.segmentation_for(volume) is not None

    def useServerUrl(self) -> None:
        self.logic.set_server_url(self.ui.serverUrlLineEdit.text)
        qt.QSettings().setValue(SETTINGS_KEY, self.logic.server_url)

    # -- slots --------------------------------------------------------------------------------------------------
    def onConnect(self) -> None:
        self.useServerUrl()
        info = self.run("Connecting", self.logic.connect)
        if info is not None:
            self.ui.serverInfoLabel.text = self.logic.describe_server(info)
            self.onProgress("Connected", 100)

    def onClassify(self) -> None:
        self.useServerUrl()
        volume = self.ui.inputVolumeSelector.currentNode()
        result = self.run("Classifying", lambda: self.logic.classify_and_segment(volume, self.onProgress))
        if result is not None:
            self.ui.resultLabel.text = result.summary()
            self.ui.warningsLabel.text = result.warnings_text()  # next to the numbers, marked <! name> there
            self.ui.classComboBox.setCurrentIndex(self.ui.classComboBox.findText(result.label))
            slicer.util.setSliceViewerLayers(background=volume)
            self.updateButtons()

    def onSubmit(self) -> None:
        self.useServerUrl()
        volume = self.ui.inputVolumeSelector.currentNode()
        chosen = self.ui.classComboBox.currentText
        submit = lambda: self.logic.submit_correction(volume, chosen, progress=self.onProgress)  # noqa: E731
        if self.run("Submitting", submit) is not None:
            self.onProgress(f"Correction saved as '{chosen}'", 100)

    def onNextCase(self) -> None:
        self.useServerUrl()
        node = self.run("Fetching the next case", lambda: self.logic.next_case(self.onProgress))
        if node is not None:
            self.ui.inputVolumeSelector.setCurrentNode(node)
            self.ui.resultLabel.text = "Not classified yet"
            self.ui.warningsLabel.text = ""
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    def onTrain(self) -> None:
        self.useServerUrl()
        if self.run("Starting training", lambda: self.logic.start_training(self.ui.maxEpochsSpinBox.value)) is not None:
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
