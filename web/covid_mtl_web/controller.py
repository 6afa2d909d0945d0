"""What the page's buttons do: each one calls CovidMTLLogic (the Slicer module's logic, unchanged) and puts what
comes back into the trame state the page shows.

Threading: the logic mixes HTTP with MRML scene changes, and VTK/MRML must stay on the thread that renders the
views (trame's event loop). So each action runs on the loop: the "busy" state is pushed to the browser first, then
the call blocks the loop for its duration (under a second for the sample cases, ~11 s for a 300-slice CT) and the
views catch up afterwards. Training status polls are plain HTTP on loopback and run on the loop too.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional

from CovidMTLLib.client import CovidMTLLogicError
from CovidMTLLib.logic import IMAGE_ID_ATTRIBUTE, CovidMTLLogic, InferenceResult
from trame_server import Server

from . import cases
from .viewer import Tool, Viewer

log = logging.getLogger("covid_mtl_web")
TRAIN_POLL_S = 3.0


def initial_state(server_url: str) -> dict[str, Any]:
    return {
        "server_url": server_url, "connected": False, "server_text": "Not connected",
        "username": "", "password": "",  # only for a server with authentication on; the password is cleared at once
        "cases": [], "case_id": None, "local_path": "", "volume_name": "",
        "busy": False, "status": "Connect to a covid-mtl server", "error": "",
        "prediction": "", "probabilities": [], "result_text": "", "has_result": False,
        "classes": [], "classification": None,  # the classes the server accepts, once connected
        "tool": Tool.NAVIGATE.value, "brush_percent": 5.0,
        "train_epochs": 1, "train_text": "", "train_running": False, "train_percent": 0,
        "submitted": "",
    }


class ReviewController:
    def __init__(self, server: Server, viewer: Viewer, server_url: str):
        self.server, self.state, self.viewer = server, server.state, viewer
        self.logic = CovidMTLLogic(viewer.scene, server_url, timeout=600)
        self.result: Optional[InferenceResult] = None
        self.state.update(initial_state(self.logic.server_url))
        self.state.change("tool", "brush_percent")(self._on_tool)
        self._poller: Optional[asyncio.Task] = None

    # -- plumbing -----------------------------------------------------------------------------------------------
    async def run(self, message: str, call: Callable[[], Any]) -> Any:
        """Run one logic call with the page marked busy; errors become the page's error line, never a traceback."""
        if self.state.busy:
            return None
        with self.state:
            self.state.busy, self.state.status, self.state.error = True, f"{message}…", ""
        await asyncio.sleep(0.05)  # let the busy state reach the browser before the loop blocks
        try:
            value = call()
            with self.state:
                self.state.status = f"{message}: done"
            return value
        except CovidMTLLogicError as exc:
            with self.state:
                self.state.error, self.state.status = str(exc), f"{message}: failed"
        except Exception as exc:  # keep the page alive; the log has the traceback
            log.exception("%s failed", message)
            with self.state:
                self.state.error = f"Unexpected error ({type(exc).__name__}): {exc}"
                self.state.status = f"{message}: failed"
        finally:
            with self.state:
                self.state.busy = False
        return None

    def progress(self, message: str, percent: int) -> None:
        self.state.status = f"{message} ({percent} %)"

    # -- server -------------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        username, password = self.state.username, self.state.password
        with self.state:
            self.state.password = ""  # the login happens once; the token stays in the logic's client, in memory

        def call():
            self.logic.set_server_url(self.state.server_url)
            info = self.logic.connect(lambda: (username, password) if username and password else None)
            return info, cases.datastore_images(self.logic)

        reply = await self.run("Connecting", call)
        with self.state:
            self.state.connected = reply is not None
            if reply is None:
                self.state.server_text = "Not connected"
                return
            self.state.server_url = self.logic.server_url
            self.state.server_text = self.logic.describe_server(reply[0])
            self.state.classes = list(self.logic.correction_classes)
            self.state.cases = [{"title": f"{c['title']}{'  (labelled)' if c['labelled'] else ''}", "value": c["id"]}
                                for c in reply[1]]
        await self.poll_training_once()

    # -- cases --------------------------------------------------------------------------------------------------
    async def load_case(self) -> None:
        image_id = self.state.case_id
        if not image_id:
            self.state.error = "Pick an image of the server's datastore first"
            return
        node = await self.run(f"Loading {image_id}", lambda: self.logic.load_server_image(image_id))
        self._show(node)

    async def load_local(self) -> None:
        path = self.state.local_path
        node = await self.run(f"Loading {path}", lambda: cases.load_local(self.viewer.app.io_manager, path))
        self._show(node)

    async def next_case(self) -> None:
        node = await self.run("Fetching the next case", lambda: self.logic.next_case(self.progress))
        self._show(node)

    def _show(self, node) -> None:
        if node is None:
            return
        self.logic.show_lung_window(node)  # the window the served model sees the CT through, as on the desktop
        self.viewer.show_volume(node)
        self.result = None
        with self.state:
            self.state.volume_name = node.GetName()
            self.state.case_id = node.GetAttribute(IMAGE_ID_ATTRIBUTE)  # None for a local file until uploaded
            self.state.update({"prediction": "", "probabilities": [], "result_text": "", "has_result": False,
                               "classification": None, "tool": Tool.NAVIGATE.value, "submitted": ""})

    # -- classify, correct ----------------------------------------------------------------------------------------
    async def classify(self) -> None:
        volume = self.viewer.volume
        if volume is None:
            self.state.error = "Load a case first"
            return
        result = await self.run("Classify & Segment", lambda: self.logic.classify_and_segment(volume, self.progress))
        if result is None:
            return
        self.result = result
        self.viewer.show_segmentation(result.segmentation_node, result.segment_id)
        with self.state:
            self.state.prediction = result.statement or result.label  # the server's words: the classes trained
            # only the classes the served model was trained on (a COVID-vs-rest model reports P(covid) alone)
            self.state.probabilities = [{"name": name, "p": round(100 * p, 1)}
                                        for name, p in result.probabilities.items()]
            self.state.result_text = result.summary()
            self.state.has_result = True
            self.state.classification = result.label if result.label in self.logic.correction_classes else None
            self.state.submitted = ""

    def _on_tool(self, tool: str, brush_percent: float, **_: Any) -> None:
        chosen = self.viewer.set_tool(tool, float(brush_percent or 5.0))
        if chosen.value != tool:
            self.state.tool = chosen.value  # painting needs a segmentation: back to navigate

    async def submit(self) -> None:
        volume, chosen = self.viewer.volume, self.state.classification
        if volume is None or self.result is None:
            self.state.error = "Classify & Segment the case before submitting a correction"
            return
        if chosen not in self.logic.correction_classes:
            self.state.error = "Choose the class of this case before submitting"
            return
        reply = await self.run(f"Submitting the correction ({chosen})",
                               lambda: self.logic.submit_correction(volume, chosen, progress=self.progress))
        if reply is not None:
            self.state.submitted = f"Saved as the final label of {volume.GetAttribute(IMAGE_ID_ATTRIBUTE)} ({chosen})"

    # -- training -----------------------------------------------------------------------------------------------
    async def train(self) -> None:
        try:
            epochs = max(1, int(self.state.train_epochs))
        except (TypeError, ValueError):
            self.state.error = "Epochs must be a whole number"
            return
        if await self.run("Starting training", lambda: self.logic.start_training(epochs)) is None:
            return
        await self.poll_training_once()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_training())

    async def stop_training(self) -> None:
        await self.run("Stopping training", self.logic.stop_training)
        await self.poll_training_once()

    async def poll_training_once(self) -> None:
        try:
            status = self.logic.training_status()
        except CovidMTLLogicError as exc:
            self.state.train_text = f"Training status unavailable: {exc}"
            return
        with self.state:
            self.state.train_text = status.summary()
            self.state.train_running = status.running
            total = status.total_epochs or 0
            self.state.train_percent = round(100 * (status.epoch or 0) / total) if total else 0

    async def _poll_training(self) -> None:
        while True:
            await asyncio.sleep(TRAIN_POLL_S)
            if not self.state.busy:
                await self.poll_training_once()
                if not self.state.train_running:
                    return
