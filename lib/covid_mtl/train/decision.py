"""What a trained model may say: which class outputs its data taught, and its P(covid) cut-off.

A sigmoid output is trained only when the training slices held both positives and negatives for it: the public
COVID-19 collections teach "COVID-19 vs non-COVID" and nothing about "normal" or "other pneumonia" on their own,
so a model trained on them must not name those. The cut-off on P(covid) is Youden's (max TPR - FPR) on the
validation slices of the kept epoch, 0.5 when validation cannot choose one. Stored in the checkpoint's meta as
``decision``; the predictor reads it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from ..image import CLASSES

DEFAULT_THRESHOLD = 0.5


def trained_classes(samples: Sequence[dict]) -> list[str]:
    """Classes with at least one supervised positive and one supervised negative slice among ``samples``."""
    positive = np.zeros(len(CLASSES), bool)
    negative = np.zeros(len(CLASSES), bool)
    for s in samples:
        weight, target = np.asarray(s["cls_weight"]) > 0, np.asarray(s["cls_target"]) > 0.5
        positive |= weight & target
        negative |= weight & ~target
    return [c for i, c in enumerate(CLASSES) if positive[i] and negative[i]]


def youden_threshold(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """The cut-off maximising sensitivity + specificity - 1 (positive if score >= it), None with one class."""
    truth = np.asarray(truth) > 0.5
    if truth.size == 0 or truth.all() or not truth.any():
        return None
    fpr, tpr, thresholds = roc_curve(truth, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(1.0, thresholds[best]))


def decision_meta(classes: Sequence[str], val_stats: Any) -> dict[str, Any]:
    """The ``decision`` entry of a checkpoint: trained classes and the validated P(covid) cut-off."""
    threshold = None
    if "covid" in classes:
        threshold = youden_threshold(*val_stats.covid_scores_and_truth())
    return {
        "classes": list(classes),
        "threshold": DEFAULT_THRESHOLD if threshold is None else round(threshold, 4),
        "threshold_rule": "default 0.5" if threshold is None else "Youden on validation slices",
    }
