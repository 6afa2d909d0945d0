"""The result of one classify + segment: prediction, lung mask and measures, as one JSON-safe dict.

The MONAI Label infer task returns it as its result JSON and ``covid-mtl analyze`` writes it as the case
report, so the Slicer panel and the CLI show the same numbers.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from ..image import Image
from ..nets.checkpoint import checkpoint_digest
from .checks import warning
from ..predict.predictor import Prediction, Predictor
from .quantify import lesion_ml as lesion_volume_ml


def model_version(predictor: Predictor) -> str:
    """Human-readable and exact: config name + first 12 hex of the checkpoint's SHA-256 (cached)."""
    if predictor.info.get("version"):
        return predictor.info["version"]
    path = predictor.info.get("checkpoint")
    digest = checkpoint_digest(path) if path and os.path.isfile(path) else hashlib.sha256().hexdigest()
    predictor.info["version"] = f"{predictor.config.name}-{digest[:12]}"
    return predictor.info["version"]


def summarize(prediction: Prediction, image: Image, predictor: Predictor,
              measures: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one summary of an analysis (JSON-safe; ``covid_mtl.measure.analysis`` builds it): class and the model's
    statement (only the classes it was trained on, ``decision``), probabilities, geometry, lesion volume, measures,
    uncertainty, model, warnings.

    ``measures``: quantify's dict of the kept lesion; ``lesion_volume_ml`` is its ``lesion_ml`` (quantify owns every
    measure; without measures, the volume of the prediction's mask). ``warnings``: every named warning of the case,
    those of reading the image (``image.meta["warnings"]``) then the measures' self-checks.
    """
    start = time.perf_counter()
    lesion_ml = None
    if measures is not None:
        lesion_ml = measures["lesion_ml"]
    elif prediction.mask is not None:
        lesion_ml = lesion_volume_ml(prediction.mask, image.spacing)
    warnings = [dict(w) for w in image.meta.get("warnings", [])] + list((measures or {}).get("warnings", []))
    if prediction.geometry.get("warning"):
        warnings.append(warning("resliced", prediction.geometry["warning"],
                                affects=["label", "probabilities", "lesion_volume_ml"]))
    timings = {k: round(float(v), 4) for k, v in prediction.timings.items()}
    timings["quantify_s"] = round(time.perf_counter() - start, 4)
    return {
        "label": prediction.label,
        "statement": prediction.statement,
        "probabilities": prediction.probabilities,
        "decision": prediction.decision.as_dict(),
        "aggregation": prediction.aggregation,
        "geometry": prediction.geometry,
        "lesion_voxels": int(prediction.lesion_voxels),
        "lesion_volume_ml": lesion_ml,
        "uncertainty": prediction.uncertainty(),
        "quantification": measures,
        "model_version": model_version(predictor),
        "model_config": predictor.config.name,
        "cls_entropy": prediction.cls_entropy,
        "seg_entropy": prediction.seg_entropy,
        "shape": list(image.shape),
        "spacing": list(image.spacing) if image.spacing else None,
        "timings": timings,
        "warnings": warnings,
    }
