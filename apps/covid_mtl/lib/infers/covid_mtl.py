"""Infer task ``covid_mtl``: one call returns the lesion mask on the input grid and the classification JSON.

A thin adapter over :func:`covid_mtl.measure.analysis.analyze` (the one analysis path, which ``covid-mtl analyze``
calls too): read the image with ``covid_mtl.io.read_image``, analyse, write the mask. The model file is re-checked on every call so a
model published by training is served from the next request on, without a restart.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from lib.datastore import read_checked
from lib.errors import ModelUnavailable, UnknownImage

from covid_mtl.image import CLASSES, LABELS, Image
from covid_mtl.io import write_mask
from covid_mtl.predict.predictor import Predictor
from covid_mtl.measure.analysis import analyze
from covid_mtl.measure.summary import model_version
from covid_mtl.nets.preprocessing import DEFAULTS
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

LESION_LABEL = "COVID-19 lesion"
"""The mask's one label, as viewers name its segment (OHIF's panel takes the name from ``/info/``)."""

logger = logging.getLogger(__name__)


def warm_up(predictor: Predictor) -> None:
    """One tiny prediction so the first radiologist's click does not pay for lazy initialisation."""
    size = predictor.config.image_size
    lung_like = np.full((1, size, size), -850.0, dtype=np.float32)
    predictor.predict(Image(lung_like, (1.0, 1.0, 1.0), None, True, "warm-up"))


class CovidMTLInfer(InferTask):
    def __init__(self, model_paths: Sequence[str], device: str = "auto", preload: bool = True):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels={LESION_LABEL: 1},
            dimension=3,
            description="COVID-19 classification (the classes its model was trained on) and COVID lesion mask in "
                        "one call",
            config={"device": device},
        )
        self.model_paths = list(model_paths)
        self.device = device
        self._lock = threading.Lock()
        self._predictor: Optional[Predictor] = None
        self._loaded: Optional[Tuple[str, float]] = None  # (path, mtime) of the model in memory
        # (image id, mask, result, model version) -> what was stored; set by the app with --conf store_results
        self.store_results: Optional[Callable[[str, np.ndarray, Dict[str, Any], str], Dict[str, str]]] = None
        if preload and self.current_model_path():
            try:
                self.predictor()
            except Exception:  # a broken model file must not stop the server from starting
                logger.exception("covid_mtl: preloading the model failed")

    def info(self) -> Dict[str, Any]:
        info = super().info()
        info["classes"] = list(CLASSES)
        info["correction_classes"] = list(LABELS)  # what a correction may carry (PUT /datastore/label info)
        # A version, never a server path (/info/ is open to every user).
        info["model"] = model_version(self._predictor) if self._predictor is not None else None
        # The HU window the model sees, for viewers to show the CT as the model saw it (Slicer module, web page).
        info["window"] = (self._predictor.preprocessing if self._predictor is not None else DEFAULTS).display_window()
        return info

    def is_valid(self) -> bool:
        return self.current_model_path() is not None

    def get_path(self, validate: bool = True) -> Optional[str]:
        # MONAI Label's /model endpoints write and delete what this returns: only ever the published model,
        # never the packaged one inside the installed package.
        return self.model_paths[0] if self.model_paths else None

    def current_model_path(self) -> Optional[str]:
        return next((p for p in self.model_paths if p and os.path.isfile(p)), None)

    def predictor(self) -> Predictor:
        """The model in memory, reloaded when a newer file has been published (atomic rename => new mtime)."""
        path = self.current_model_path()
        if path is None:
            raise ModelUnavailable("no covid_mtl model is available on this server yet")
        key = (path, os.stat(path).st_mtime_ns)
        with self._lock:
            if self._predictor is None or self._loaded != key:
                logger.info(f"covid_mtl: loading model {path}")
                predictor = Predictor.from_checkpoint(path, device=self.device)  # ModelFileError: 503
                model_version(predictor)
                warm_up(predictor)
                self._predictor, self._loaded = predictor, key
            return self._predictor

    def model_version(self) -> str:
        """``<config>-<sha256[:12]>`` of the model that answers the next request (loads it if needed)."""
        return model_version(self.predictor())

    def read(self, request: Dict[str, Any]) -> Image:
        path = request.get("image")
        if not isinstance(path, str) or not path or not os.path.exists(path):
            raise UnknownImage(request.get("image"))
        return read_checked(path)

    def _store(self, image_id: str, mask: np.ndarray, result: Dict[str, Any]) -> None:
        """The result into the PACS; a PACS that refuses it costs the radiologist nothing of the answer, which
        says what happened."""
        try:
            result["stored_in_pacs"] = self.store_results(image_id, mask, result, result.get("model_version", ""))
        except Exception as exc:  # PacsError, an unreadable series: reported, logged, the infer still answers
            logger.error(f"covid_mtl: storing the result of {image_id} in the PACS failed: {exc}")
            result.setdefault("warnings", []).append(
                {"name": "result_not_stored", "message": f"the result was not stored in the PACS: {exc}",
                 "value": None, "limit": None, "affects": []})

    def __call__(self, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        start = time.perf_counter()
        image = self.read(request)
        read_s = time.perf_counter() - start
        analysis = analyze(image, self.predictor())
        result = analysis.result
        suffix = ".png" if image.meta.get("format") == "raster" else ".nii.gz"
        if suffix != ".png" and str(request.get("result_extension", "")).lower() == ".nrrd":
            suffix = ".nrrd"  # OHIF's MONAI Label panel asks for raw NRRD and copies its bytes into its labelmap
        fd, mask_path = tempfile.mkstemp(suffix=suffix, prefix="covid_mtl_")
        os.close(fd)
        mask = analysis.mask()
        write_mask(mask, image, mask_path)
        if self.store_results is not None and request.get("image_id"):
            self._store(str(request["image_id"]), mask, result)
        result.setdefault("timings", {}).update({"read_s": round(read_s, 3), "total_s": round(time.perf_counter() - start, 3)})
        return mask_path, result
