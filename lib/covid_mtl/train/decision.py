"""Choosing a trained model's decision (``covid_mtl.nets.decision.Decision``) from what training saw.

A sigmoid output is trained only when the training slices held both positives and negatives for it: the public
COVID-19 collections teach "COVID-19 vs non-COVID" and nothing about "normal" or "other pneumonia" on their own,
so a model trained on them must not name those. The cut-off on P(covid) is Youden's (max TPR - FPR) on the
validation slices of the kept epoch, 0.5 when validation cannot choose one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..image import CLASSES
from ..nets.decision import Decision
from .step import EpochStats


def trained_classes(samples: Sequence[dict]) -> list[str]:
    """Classes with at least one supervised positive and one supervised negative slice among ``samples``."""
    positive = np.zeros(len(CLASSES), bool)
    negative = np.zeros(len(CLASSES), bool)
    for s in samples:
        weight, target = np.asarray(s["cls_weight"]) > 0, np.asarray(s["cls_target"]) > 0.5
        positive |= weight & target
        negative |= weight & ~target
    return [c for i, c in enumerate(CLASSES) if positive[i] and negative[i]]


def validated_decision(classes: Sequence[str], val_stats: EpochStats) -> Decision:
    """The decision of a model trained on ``classes``, its cut-off chosen on the validation slices seen."""
    scores, truth = val_stats.covid_scores_and_truth()
    return Decision.validated(tuple(classes), truth, scores)
