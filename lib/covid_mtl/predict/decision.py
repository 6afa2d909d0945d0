"""What the served model may say: its trained classes and cut-off, turned into a label and a statement.

A checkpoint trained by ``covid-mtl train`` or the train task records ``decision`` (``covid_mtl.train.decision``):
the class outputs its data taught and the validated P(covid) cut-off. A model that learned COVID-19 vs
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

from ..image import CLASSES

MIN_INVOLVED_PERCENT = 1.0
"""Lesion in the lungs (percent of lung volume) below which a volume is not called COVID-19 (see above)."""

NAMES = {"covid": "COVID-19", "normal": "normal", "other": "other infection", "non-covid": "non-COVID"}


@dataclass(frozen=True)
class Decision:
    classes: tuple[str, ...] = field(default=CLASSES)
    threshold: float = 0.5
    threshold_rule: str = "default 0.5"
    min_involved_percent: float = MIN_INVOLVED_PERCENT

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "Decision":
        record = meta.get("decision") or {}
        classes = tuple(c for c in record.get("classes", CLASSES) if c in CLASSES) or CLASSES
        return cls(classes, float(record.get("threshold", 0.5)), str(record.get("threshold_rule", "default 0.5")),
                   float(record.get("min_involved_percent", MIN_INVOLVED_PERCENT)))

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
        return max(CLASSES, key=lambda c: probabilities[c]) == "covid"

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
            return shown, max(("normal", "other"), key=lambda c: volume[c])
        return shown, max(CLASSES, key=lambda c: volume[c])

    def statement(self, probabilities: Mapping[str, float], involved_percent: float | None = None) -> str:
        held = self.held_back(probabilities, involved_percent)
        reason = (f", but only {involved_percent:.2f} % of the lungs holds lesion (COVID-19 needs >= "
                  f"{self.min_involved_percent:g} %)" if held else "")
        if self.binary:
            p = probabilities["covid"]
            call = NAMES["covid"] if p >= self.threshold and not held else NAMES["non-covid"]
            return f"COVID-19 vs non-COVID: P(COVID-19) = {p:.2f} (cut-off {self.threshold:.2f}){reason} -> {call}"
        best = (max(("normal", "other"), key=lambda c: probabilities[c]) if held
                else max(CLASSES, key=lambda c: probabilities[c]))
        shown = ", ".join(f"P({NAMES[c]}) = {probabilities[c]:.2f}" for c in CLASSES)
        return f"COVID-19 / normal / other infection: {shown}{reason} -> {NAMES[best]}"

    def as_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "threshold": self.threshold, "threshold_rule": self.threshold_rule,
                "min_involved_percent": self.min_involved_percent, "binary": self.binary}
