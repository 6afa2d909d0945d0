"""Active learning: which unlabeled image should the radiologist correct next.

Score = entropy of the three class probabilities + mean binary entropy of the lesion probability map, as
computed by ``covid_mtl.predict.predictor.Predictor.uncertainty`` (higher = less certain). Scores are cached in
the image info under ``covid_mtl_uncertainty`` with the version of the model they came from (``<config>-<sha256
prefix>``, not its path: training publishes every new model under the same path), so a new model re-scores.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)

INFO_KEY = "covid_mtl_uncertainty"


def score_image(infer, datastore: Datastore, image_id: str, refresh: bool = False) -> Optional[float]:
    """Uncertainty of ``image_id`` under the served model, cached in its image info; None if unreadable."""
    try:
        model_key = infer.model_version()
    except Exception as exc:  # no loadable model: nothing can be scored
        logger.warning(f"covid_mtl: cannot score {image_id}: {exc}")
        return None
    cached = (datastore.get_image_info(image_id) or {}).get(INFO_KEY)
    if not refresh and isinstance(cached, dict) and cached.get("model") == model_key:
        return float(cached["score"])
    try:
        image = infer.read({"image": datastore.get_image_uri(image_id)})
        predictor = infer.predictor()
        score = float(predictor.predict(image).uncertainty())
    except Exception as exc:  # one unreadable image must not stop the ranking of the others
        logger.warning(f"covid_mtl: cannot score {image_id}: {exc}")
        return None
    datastore.update_image_info(image_id, {INFO_KEY: {"score": score, "model": model_key}})
    return score


def unlabeled(datastore: Datastore) -> list:
    return sorted(datastore.get_unlabeled_images(label_tag=DefaultLabelTag.FINAL))


class UncertaintyStrategy(Strategy):
    def __init__(self, infer=None):
        super().__init__("Unlabeled image the model is least certain about (class entropy + mean voxel entropy)")
        self.infer = infer

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        candidates = unlabeled(datastore)
        if not candidates:
            return {}
        scores = {i: score_image(self.infer, datastore, i) for i in candidates}
        scored = {i: s for i, s in scores.items() if s is not None}
        if not scored:
            return {}
        best = max(sorted(scored), key=lambda i: scored[i])
        logger.info(f"covid_mtl: next sample {best} (uncertainty {scored[best]:.4f} of {len(scored)} scored)")
        return {"id": best, "uncertainty": scored[best], "candidates": len(scored)}
