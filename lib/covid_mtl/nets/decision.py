"""The one decision type: what a model may say (its trained classes and cut-off), turned into a label and a statement.

:class:`Decision` is written into a checkpoint's meta as ``decision`` (:meth:`Decision.as_meta`) by ``covid-mtl
train`` and the train task (``covid_mtl.train.decision.validated_decision`` chooses it on the validation slices) and
read back with :meth:`Decision.from_meta` by the predictor; evaluation names a class with the same
:func:`most_probable`. It records the class outputs the data taught and the validated P(covid) cut-off. A model that learned COVID-19 vs
non-COVID says exactly that ("COVID-19 vs non-COVID: P(COVID-19) = 0.87") and reports only P(covid); its
normal / other outputs were never taught and are not shown. A model with all three outputs trained (e.g. after
corrections with class labels) names the most probable of the three. Checkpoints without the record (older
ones) are taken as three-class models.

The volume rule (``min_involved_percent``): a CT volume whose lung mask is known is called COVID-19 only when the
lesion kept inside its lungs (``covid_mtl.lungs.confine``) is at least ``MIN_INVOLVED_PERCENT`` of the lung volume.
The slice classifier alone answers P(covid) 0.47-0.50 on whole chest scans of patients without pneumonia
(above the packaged model's cut-off of 0.37), while their lungs hold 0.1-0.6 % of painted lesion (nodules,
partial volume at the diaphragm); COVID-19 pneumonia visible on CT involves more than that in nearly every
patient (the model card's full-chest section gives the measurement and the cost: a scan with less involvement is
called non-COVID, with the reason in the statement). 2D images and images without a lung mask are called on
P(covid) alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from sklearn.metrics import roc_curve

from ..image import CLASSES

MIN_INVOLVED_PERCENT = 1.0
"""Lesion in the lungs (percent of lung volume) below which a volume is not called COVID-19 (see above)."""

DEFAULT_THRESHOLD = 0.5
"""P(covid) cut-off when validation cannot choose one (and for checkpoints without a decision record)."""

NAMES = {"covid": "COVID-19", "normal": "normal", "other": "other infection", "non-covid": "non-COVID"}


def most_probable(probabilities: Mapping[str, float], among: tuple[str, ...] = CLASSES) -> str:
    """The class of ``among`` with the highest probability (ties: the first in ``among``): the one argmax rule."""
    return max(among, key=lambda c: probabilities[c])


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


@dataclass(frozen=True)
class Decision:
    classes: tuple[str, ...] = field(default=CLASSES)
    threshold: float = DEFAULT_THRESHOLD
    threshold_rule: str = "default 0.5"
    min_involved_percent: float = MIN_INVOLVED_PERCENT

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "Decision":
        """The record in a checkpoint's meta; missing fields (older checkpoints) take this class's defaults."""
        record = meta.get("decision") or {}
        classes = tuple(c for c in record.get("classes", CLASSES) if c in CLASSES) or CLASSES
        return cls(classes, float(record.get("threshold", cls.threshold)),
                   str(record.get("threshold_rule", cls.threshold_rule)),
                   float(record.get("min_involved_percent", cls.min_involved_percent)))

    @classmethod
    def validated(cls, classes: tuple[str, ...] | list[str], truth: np.ndarray, scores: np.ndarray) -> "Decision":
        """``classes`` as trained, with Youden's cut-off on validation P(covid) ``scores`` against 0/1 ``truth``
        (the default cut-off when covid was not trained or validation holds one class only)."""
        truth = np.asarray(truth) > 0.5
        if "covid" in classes and 0 < int(truth.sum()) < truth.size:
            threshold = round(min(1.0, youden_threshold(truth, scores)[0]), 4)
            return cls(tuple(classes), threshold, "Youden on validation slices")
        return cls(tuple(classes))

    def as_meta(self) -> dict[str, Any]:
        """The ``decision`` entry of a checkpoint's meta (plain types; :meth:`from_meta` reads it back)."""
        return {"classes": list(self.classes), "threshold": self.threshold, "threshold_rule": self.threshold_rule,
                "min_involved_percent": self.min_involved_percent}

    @property
    def binary(self) -> bool:
        """True when only COVID-19 vs non-COVID was learned (not all three classes)."""
        return set(self.classes) != set(CLASSES)

    def held_back(self, probabilities: Mapping[str, float], involved_percent: float | None) -> bool:
        """True when the classifier alone would say COVID-19 but the lungs hold too little lesion for it."""
        if involved_percent is None or involved_percent >= self.min_involved_percent:
            return False
        if self.binary:
            return float(probabilities["covid"]) >= self.threshold
        return most_probable(probabilities) == "covid"

    def decide(self, volume: Mapping[str, float], involved_percent: float | None = None) -> tuple[dict[str, float], str]:
        """``(probabilities shown, label)`` from the aggregated three outputs and, for a volume with a lung mask,
        the percent of lung holding lesion (the volume rule above; None: not applied)."""
        if self.binary:
            p = float(volume["covid"])
            shown = {"covid": p}
            label = "covid" if p >= self.threshold else "non-covid"
            return shown, "non-covid" if self.held_back(shown, involved_percent) else label
        shown = {c: float(volume[c]) for c in CLASSES}
        if self.held_back(shown, involved_percent):
            return shown, most_probable(volume, ("normal", "other"))
        return shown, most_probable(volume)

    def statement(self, probabilities: Mapping[str, float], involved_percent: float | None = None) -> str:
        held = self.held_back(probabilities, involved_percent)
        reason = (f", but only {involved_percent:.2f} % of the lungs holds lesion (COVID-19 needs >= "
                  f"{self.min_involved_percent:g} %)" if held else "")
        if self.binary:
            p = probabilities["covid"]
            call = NAMES["covid"] if p >= self.threshold and not held else NAMES["non-covid"]
            return f"COVID-19 vs non-COVID: P(COVID-19) = {p:.2f} (cut-off {self.threshold:.2f}){reason} -> {call}"
        best = most_probable(probabilities, ("normal", "other") if held else CLASSES)
        shown = ", ".join(f"P({NAMES[c]}) = {probabilities[c]:.2f}" for c in CLASSES)
        return f"COVID-19 / normal / other infection: {shown}{reason} -> {NAMES[best]}"

    def as_dict(self) -> dict[str, Any]:
        """What results and reports show: the meta record plus whether the model is COVID-vs-rest only."""
        return {**self.as_meta(), "binary": self.binary}
