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


def youden_threshold(truth: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Youden-optimal cut-off (max TPR - FPR; positive if score >= it) and the ROC (fpr, tpr, thresholds); needs
    both classes present. Ties keep the highest cut-off (the fewest positive calls)."""
    fpr, tpr, thr = roc_curve(np.asarray(truth, dtype=int), np.asarray(scores, dtype=float),
                              drop_intermediate=False)
    # roc_curve's first threshold is +inf ("call nothing positive"): never the useful optimum, but kept in the
    # curve. argmax returns the first maximum, i.e. the highest threshold among ties.
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1 if len(j) > 1 else 0
    return float(thr[best]), fpr, tpr, thr


def decision_meta(classes: Sequence[str], val_stats: Any) -> dict[str, Any]:
    """The ``decision`` entry of a checkpoint: trained classes and the validated P(covid) cut-off."""
    threshold = None
    scores, truth = val_stats.covid_scores_and_truth()
    if "covid" in classes and 0 < int((truth > 0.5).sum()) < truth.size:
        threshold = min(1.0, youden_threshold(truth > 0.5, scores)[0])
    return {
        "classes": list(classes),
        "threshold": DEFAULT_THRESHOLD if threshold is None else round(threshold, 4),
        "threshold_rule": "default 0.5" if threshold is None else "Youden on validation slices",
    }
