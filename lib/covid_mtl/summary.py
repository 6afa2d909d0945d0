"""The result of one classify + segment: prediction, lung mask and measures, as one JSON-safe dict.

The MONAI Label infer task returns it as its result JSON and ``covid-mtl analyze`` writes it as the case
report, so the Slicer panel and the CLI show the same numbers.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from .image import Image
from .lungmask import lung_mask
from .predictor import Prediction, Predictor
from .quantify import quantify


def model_version(predictor: Predictor) -> str:
    """A short id of the served model: the checkpoint's saved_at time plus a hash of its file (cached)."""
    if predictor.info.get("version"):
        return predictor.info["version"]
    path = predictor.info.get("checkpoint")
    digest = ""
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
    saved = predictor.info.get("saved_at") or "unknown"
    predictor.info["version"] = f"{predictor.config.name}-{saved}-{digest}"
    return predictor.info["version"]


def summarize(prediction: Prediction, image: Image, predictor: Predictor, quantification: bool = True) -> dict[str, Any]:
    """JSON-safe summary of ``prediction`` on ``image``: class, probabilities, lesion volume, measures, model."""
    start = time.perf_counter()
    measures: dict[str, Any] | None = None
    lesion_ml = None
    if prediction.mask is not None:
        if image.spacing is not None:
            voxel_ml = image.spacing[0] * image.spacing[1] * image.spacing[2] / 1000.0
            lesion_ml = round(float(prediction.mask.sum()) * voxel_ml, 3)
        if quantification:
            lungs = lung_mask(image, lesion=prediction.mask)
            measures = quantify(prediction.mask, lungs, image.spacing)
            measures["lung_mask"] = lungs.summary()
    timings = {k: round(float(v), 4) for k, v in prediction.timings.items()}
    timings["quantify_s"] = round(time.perf_counter() - start, 4)
    return {
        "label": prediction.label,
        "probabilities": prediction.probabilities,
        "aggregation": prediction.aggregation,
        "lesion_voxels": int(prediction.lesion_voxels),
        "lesion_volume_ml": lesion_ml,
        "uncertainty": prediction.uncertainty(),
        "quantification": measures,
        "model_version": model_version(predictor),
        "model_config": predictor.config.name,
        "shape": list(image.shape),
        "spacing": list(image.spacing) if image.spacing else None,
        "timings": timings,
    }
