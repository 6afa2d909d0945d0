"""CovidMTLLogic: everything the radiologist's buttons do, headless (no Qt), so pytest drives it with a real
MRML scene and a real server. The widget only forwards clicks here and shows what comes back.

What the server serves (model, classes, correction classes, strategy, window) is read from its ``/info/`` at
connect (``served.ServedModel``); an action that needs it before Connect was pressed connects first.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import parameters
from . import scene as mrml
from .client import DEFAULT_URL, CovidMTLClient, CovidMTLLogicError
from .served import LUNG_WINDOW, ServedModel

SEGMENT_NAME = "COVID lesion"
FINAL_TAG = "final"
# Node attributes that remember which server image a volume is and which segmentation shows its lesions.
IMAGE_ID_ATTRIBUTE = "CovidMTL.ImageId"
SEGMENTATION_ATTRIBUTE = "CovidMTL.SegmentationNodeID"
# The case's warnings (server's named self-checks) kept on the segmentation node, so they stay with the scene.
WARNINGS_ATTRIBUTE = "CovidMTL.Warnings"
# Panel lines and the quantification keys whose warnings are marked next to them.
NUMBER_KEYS = ("percent_involved", "zone_severity_score", "lobe_severity_score", "lung_ml")

Progress = Callable[[str, int], None]  # (message, percent 0..100)


def _no_progress(message: str, percent: int) -> None:
    pass


@dataclass
class InferenceResult:
    """What the panel shows after Classify & Segment (the server's JSON, plus the node it built)."""

    image_id: str
    label: str
    probabilities: dict[str, float]  # only the classes the served model was trained on
    lesion_volume_ml: Optional[float]
    quantification: dict[str, Any]
    model_version: Optional[str]
    segmentation_node: Any
    segment_id: str
    details: dict[str, Any] = field(default_factory=dict)
    mask_file: bytes = field(default=b"", repr=False)  # the mask exactly as the server sent it (for saving, checks)
    warnings: list[dict[str, Any]] = field(default_factory=list)  # named self-checks: {name, message, affects}
    statement: Optional[str] = None  # the model's claim in words, e.g. "COVID-19 vs non-COVID: P(COVID-19) = 0.87"

    def marks(self, key: str) -> str:
        """`` <! name, ...>``: the warnings that put the number under ``key`` in doubt."""
        names = [str(w.get("name")) for w in self.warnings if key in (w.get("affects") or [])]
        return f"  <! {', '.join(names)}>" if names else ""

    def summary(self) -> str:
        lines = [f"Prediction: {self.label}"]
        if self.statement:
            lines.append(f"  {self.statement}")
        lines += [f"  p({name}) = {p:.3f}" for name, p in self.probabilities.items()]  # in the server's order
        volume = "n/a (no voxel spacing)" if self.lesion_volume_ml is None else f"{self.lesion_volume_ml:.1f} ml"
        lines.append(f"Lesion volume: {volume}")
        for key in NUMBER_KEYS:
            if self.quantification.get(key) is not None:
                lines.append(f"{key.replace('_', ' ').capitalize()}: {self.quantification[key]}{self.marks(key)}")
        if self.model_version:
            lines.append(f"Model: {self.model_version}")
        return "\n".join(lines)

    def warnings_text(self) -> str:
        """What the panel's warning label shows: one line per warning (empty when the case has none)."""
        return "\n".join(f"! {w.get('name')}: {w.get('message')}" for w in self.warnings)


def case_warnings(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The server's named warnings of a case: the reply's ``warnings`` (reading + measures), else the
    quantification's own (servers before issue 14 send neither: no warnings)."""
    found = result.get("warnings")
    if found is None:
        found = (result.get("quantification") or {}).get("warnings")
    return [dict(w) for w in found or [] if isinstance(w, dict) and w.get("name")]


@dataclass
class TrainingStatus:
    state: str  # MONAI Label task status (SUBMITTED, RUNNING, DONE, STOPPED, ERROR) or "NONE"
    running: bool
    best_metric: Optional[float]
    epoch: Optional[int]
    total_epochs: Optional[int]
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"Training: {self.state.lower()}"]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}" + (f"/{self.total_epochs}" if self.total_epochs else ""))
        if self.best_metric is not None:
            parts.append(f"best metric {self.best_metric:.4f}")
        return ", ".join(parts)


class CovidMTLLogic:
    """``scene`` defaults to slicer.mrmlScene (inside Slicer); tests pass their own vtkMRMLScene."""

    def __init__(self, scene=None, server_url: str = DEFAULT_URL, timeout: float = 600.0):
        if scene is None:
            import slicer

            scene = getattr(slicer, "mrmlScene", None)
            if scene is None:
                raise CovidMTLLogicError("No MRML scene: pass one outside the Slicer application")
        self.scene = scene
        self.timeout = timeout
        self.idle: Optional[Callable[[], None]] = None
        self.client = CovidMTLClient(server_url, timeout)
        self.server_info: dict[str, Any] = {}
        self.served: Optional[ServedModel] = None  # what the server serves; None until connected

    # -- server -------------------------------------------------------------------------------------------------
    @property
    def server_url(self) -> str:
        return self.client.url

    def set_server_url(self, url: str) -> None:
        client = CovidMTLClient(url, self.timeout, self.idle)
        if client.url != self.client.url:
            self.client, self.server_info, self.served = client, {}, None

    def set_idle_callback(self, idle: Optional[Callable[[], None]]) -> None:
        """Called repeatedly while waiting for the server (the widget passes slicer.app.processEvents)."""
        self.idle = idle
        self.client.idle = idle

    def login(self, username: str, password: str) -> None:
        """Log in to a server with authentication on; the token stays in the client (memory), never the scene."""
        self.client.login(username, password)

    def connect(self, credentials: Optional[Callable[[], Optional[tuple[str, str]]]] = None) -> dict[str, Any]:
        """/info/ of the server, and what it serves (``self.served``); refuses a server without a classification
        model. A server with authentication on needs a login first: ``credentials`` is asked for (user name,
        password) when not logged in yet (the panel's dialog, the web page's fields); None or no answer is a
        clear error."""
        if not self.client.logged_in and self.client.auth_required():
            given = credentials() if credentials is not None else None
            if not given or not all(given):
                raise CovidMTLLogicError(f"The covid-mtl server at {self.server_url} requires a login (MONAI Label "
                                         f"authentication is on): enter your user name and password and Connect")
            self.client.login(*given)
        info = self.client.info()
        self.served = ServedModel.from_info(info, self.server_url)
        self.server_info = info
        return info

    def require_served(self) -> ServedModel:
        """What the server serves, connecting first when nobody pressed Connect yet (Classify, Next case and Train
        work straight away, as they always did; a server that is down says so here)."""
        if self.served is None:
            self.connect()
        return self.served

    @property
    def correction_classes(self) -> tuple[str, ...]:
        """The classes a correction may carry, as the server listed them; empty before connecting."""
        return self.served.correction_classes if self.served is not None else ()

    @property
    def lung_window(self) -> tuple[float, float]:
        """(width, level) the served model sees the CT through; W 1500 / L -600 before connecting or when the
        server does not publish it."""
        return self.served.window if self.served is not None else LUNG_WINDOW

    def show_lung_window(self, volume_node) -> None:
        """Show the CT as the model sees it (Classify, Next case; the web page on every case it loads)."""
        mrml.show_window(volume_node, *self.lung_window)

    def parameter_node(self) -> parameters.PanelParameters:
        """The scene's parameter node of the panel; a new one gets this logic's server URL."""
        return parameters.parameter_node(self.scene, self.server_url)

    def describe_server(self, info: Optional[dict[str, Any]] = None) -> str:
        info = info if info is not None else self.server_info
        datastore = info.get("datastore") or {}
        lines = [f"{info.get('name', '?')} {info.get('version', '')} at {self.server_url}",
                 f"Models: {', '.join(info.get('models') or {}) or 'none'}",
                 f"Trainers: {', '.join(info.get('trainers') or {}) or 'none'}",
                 f"Strategies: {', '.join(info.get('strategies') or {}) or 'none'}"]
        if datastore:
            source = f" from the PACS {datastore['pacs']}" if datastore.get("pacs") else ""
            lines.append(f"Datastore{source}: {datastore.get('total', '?')} images, "
                         f"{datastore.get('completed', '?')} labelled")
            if datastore.get("error"):  # e.g. the PACS is down: the server answers, its images cannot be read
                lines.append(f"Datastore problem: {datastore['error']}")
        if self.served is not None:
            lines.append(self.served.describe())
        return "\n".join(lines)

    # -- classify & segment -------------------------------------------------------------------------------------
    @staticmethod
    def require_ct(volume_node) -> None:
        is_ct = volume_node is not None and volume_node.IsA("vtkMRMLScalarVolumeNode")
        if not is_ct or volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise CovidMTLLogicError("Select a CT volume (scalar volume node) first")

    def ensure_image_on_server(self, volume_node, progress: Progress = _no_progress) -> str:
        """Image id of the volume on the server, uploading it only when the server lacks it."""
        self.require_ct(volume_node)
        known = volume_node.GetAttribute(IMAGE_ID_ATTRIBUTE)  # set by Next case or an earlier upload
        image_id = known or mrml.content_id(volume_node)
        progress(f"Checking whether the server has {image_id}", 5)
        if self.client.has_image(image_id):
            volume_node.SetAttribute(IMAGE_ID_ATTRIBUTE, image_id)
            return image_id
        if known:  # the server lost it (new studies folder): fall back to a content id and upload
            image_id = mrml.content_id(volume_node)
        with tempfile.TemporaryDirectory(prefix="covid_mtl_") as tmp:
            progress("Exporting the volume to NIfTI", 10)
            path = mrml.write_volume(volume_node, Path(tmp) / f"{image_id}.nii.gz")
            progress(f"Uploading {image_id} ({path.stat().st_size / 2**20:.1f} MB)", 20)
            image_id = self.client.upload_image(image_id, path)
        volume_node.SetAttribute(IMAGE_ID_ATTRIBUTE, image_id)
        return image_id

    def classify_and_segment(self, volume_node, progress: Progress = _no_progress) -> InferenceResult:
        self.require_ct(volume_node)
        served = self.require_served()  # before uploading: a server without the model needs no copy of the CT
        image_id = self.ensure_image_on_server(volume_node, progress)
        progress("Classifying and segmenting on the server", 40)
        result, mask = self.client.infer(served.name, image_id)
        if mask is None:
            raise CovidMTLLogicError(f"The server returned no lesion mask for {image_id} (only: {sorted(result)})")
        progress("Building the lesion segmentation", 85)
        with tempfile.TemporaryDirectory(prefix="covid_mtl_") as tmp:
            suffix = ".nii.gz" if not mask.filename or mask.filename.endswith(".nii.gz") else Path(mask.filename).suffix
            path = Path(tmp) / f"mask{suffix}"
            path.write_bytes(mask.data)
            labelmap = mrml.read_volume(self.scene, path, "__covid_mtl_mask__", labelmap=True)
        try:
            existing = self.segmentation_for(volume_node)
            segmentation, segment_id = mrml.mask_to_segmentation(labelmap, volume_node, SEGMENT_NAME, existing)
        finally:
            mrml.remove_node(self.scene, labelmap)
        volume_node.SetAttribute(SEGMENTATION_ATTRIBUTE, segmentation.GetID())
        warnings = case_warnings(result)
        segmentation.SetAttribute(WARNINGS_ATTRIBUTE, ";".join(str(w["name"]) for w in warnings))
        self.show_lung_window(volume_node)
        progress("Done, with warnings: check the marked numbers" if warnings else "Done", 100)
        return InferenceResult(
            image_id=image_id,
            label=str(result.get("label")),
            probabilities={k: float(v) for k, v in (result.get("probabilities") or {}).items()},
            lesion_volume_ml=result.get("lesion_volume_ml"),
            quantification=result.get("quantification") or {},
            model_version=result.get("model_version"),
            segmentation_node=segmentation,
            segment_id=segment_id,
            details=result,
            mask_file=mask.data,
            warnings=warnings,
            statement=result.get("statement"),
        )

    def warnings_for(self, volume_node) -> list[str]:
        """Names of the warnings of this volume's last Classify & Segment (kept on its segmentation node)."""
        segmentation = self.segmentation_for(volume_node)
        names = segmentation.GetAttribute(WARNINGS_ATTRIBUTE) if segmentation is not None else None
        return [name for name in (names or "").split(";") if name]

    def segmentation_for(self, volume_node):
        """The "COVID lesion" segmentation made earlier for this volume, if it is still in the scene."""
        node_id = volume_node.GetAttribute(SEGMENTATION_ATTRIBUTE) if volume_node is not None else None
        node = self.scene.GetNodeByID(node_id) if node_id else None
        return node if node is not None and node.IsA("vtkMRMLSegmentationNode") else None

    # -- correction ---------------------------------------------------------------------------------------------
    def submit_correction(self, volume_node, classification: str, segmentation_node=None,
                          progress: Progress = _no_progress) -> dict[str, Any]:
        """Send the (edited) lesion segment as a 0/1 labelmap on the CT grid + the chosen class (tag "final")."""
        if not classification:
            raise CovidMTLLogicError("Choose the class of this case before submitting the correction")
        segmentation_node = segmentation_node or self.segmentation_for(volume_node)
        if segmentation_node is None:
            raise CovidMTLLogicError(f'No "{SEGMENT_NAME}" segmentation for this volume: run Classify & Segment first')
        image_id = self.ensure_image_on_server(volume_node, progress)
        progress("Exporting the corrected mask on the CT grid", 40)
        array = mrml.segment_array(segmentation_node, SEGMENT_NAME, volume_node)
        with tempfile.TemporaryDirectory(prefix="covid_mtl_") as tmp:
            path = mrml.write_labelmap(array, volume_node, Path(tmp) / f"{image_id}.nii.gz")
            progress(f"Sending the correction ({classification})", 60)
            reply = self.client.save_label(image_id, path, FINAL_TAG, {"classification": classification})
        progress("Correction saved", 100)
        return reply

    # -- active learning ----------------------------------------------------------------------------------------
    def next_case(self, progress: Progress = _no_progress):
        """Ask the server for the most uncertain unlabelled image and load it as a new volume node."""
        served = self.require_served()
        if served.strategy is None:
            raise CovidMTLLogicError(f"The server at {self.server_url} offers no active-learning strategy")
        progress("Asking the server for the next case", 10)
        sample = self.client.next_sample(served.strategy)
        image_id = sample.get("id")
        if not image_id:
            raise CovidMTLLogicError("The server has no unlabelled image left to propose")
        progress(f"Downloading {image_id}", 40)
        node = self.load_server_image(image_id)
        self.show_lung_window(node)
        progress(f"Loaded {image_id}", 100)
        return node

    def load_server_image(self, image_id: str):
        """Download one datastore image into the scene, remembering its id so Classify reuses it without
        uploading."""
        with tempfile.TemporaryDirectory(prefix="covid_mtl_") as tmp:
            path = self.client.download_image(image_id, Path(tmp))
            node = mrml.read_volume(self.scene, path, image_id)
        node.CreateDefaultDisplayNodes()
        node.SetAttribute(IMAGE_ID_ATTRIBUTE, image_id)
        return node

    # -- training -----------------------------------------------------------------------------------------------
    def start_training(self, max_epochs: Optional[int] = None, **params: Any) -> dict[str, Any]:
        served = self.require_served()
        if served.trainer is None:
            raise CovidMTLLogicError(f"The server at {self.server_url} offers no training for the model {served.name}")
        if max_epochs is not None:
            params["max_epochs"] = int(max_epochs)
        return self.client.start_training(served.trainer, params)

    def training_status(self) -> TrainingStatus:
        served = self.require_served()
        task = self.client.training_status() or {}
        stats = ((self.client.info().get("train_stats") or {}).get(served.trainer)) or {}
        state = str(task.get("status") or "NONE")
        return TrainingStatus(
            state=state,
            running=state in ("SUBMITTED", "RUNNING"),
            best_metric=stats.get("best_metric"),
            epoch=stats.get("epoch"),
            total_epochs=stats.get("total_epochs"),
            details={"task": task, "stats": stats},
        )

    def stop_training(self) -> dict[str, Any]:
        return self.client.stop_training()
