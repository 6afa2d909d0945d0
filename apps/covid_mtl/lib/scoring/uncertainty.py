"""Scoring method: record every unlabeled image's uncertainty in its image info (see activelearning)."""
from __future__ import annotations

from typing import Any, Dict

from lib.activelearning.uncertainty import score_image, unlabeled

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod


class UncertaintyScoring(ScoringMethod):
    def __init__(self, infer):
        super().__init__("Store covid_mtl uncertainty (class entropy + mean voxel entropy) in image info")
        self.infer = infer

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        refresh = bool(request.get("refresh", False))
        scores = {i: score_image(self.infer, datastore, i, refresh=refresh) for i in unlabeled(datastore)}
        return {"scored": {i: s for i, s in scores.items() if s is not None}}
