"""What the served model may say: its trained classes and cut-off, turned into a label and a statement.

A checkpoint trained by ``covid-mtl train`` or the train task records ``decision`` (``covid_mtl.train.decision``):
the class outputs its data taught and the validated P(covid) cut-off. A model that learned COVID-19 vs
non-COVID says exactly that ("COVID-19 vs non-COVID: P(COVID-19) = 0.87") and reports only P(covid); its
normal / other outputs were never taught and are not shown. A model with all three outputs trained (e.g. after
corrections with class labels) names the most probable of the three. Checkpoints without the record (older
ones) are taken as three-class models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..image import CLASSES

NAMES = {"covid": "COVID-19", "normal": "normal", "other": "other infection", "non-covid": "non-COVID"}


@dataclass(frozen=True)
class Decision:
    classes: tuple[str, ...] = field(default=CLASSES)
    threshold: float = 0.5
    threshold_rule: str = "default 0.5"

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "Decision":
        record = meta.get("decision") or {}
        classes = tuple(c for c in record.get("classes", CLASSES) if c in CLASSES) or CLASSES
        return cls(classes, float(record.get("threshold", 0.5)), str(record.get("threshold_rule", "default 0.5")))

    @property
    def binary(self) -> bool:
        """True when only COVID-19 vs non-COVID was learned (not all three classes)."""
        return set(self.classes) != set(CLASSES)

    def decide(self, volume: Mapping[str, float]) -> tuple[dict[str, float], str]:
        """``(probabilities shown, label)`` from the aggregated three outputs."""
        if self.binary:
            p = float(volume["covid"])
            return {"covid": p}, "covid" if p >= self.threshold else "non-covid"
        return {c: float(volume[c]) for c in CLASSES}, max(CLASSES, key=lambda c: volume[c])

    def statement(self, probabilities: Mapping[str, float]) -> str:
        if self.binary:
            p = probabilities["covid"]
            call = NAMES["covid"] if p >= self.threshold else NAMES["non-covid"]
            return f"COVID-19 vs non-COVID: P(COVID-19) = {p:.2f} (cut-off {self.threshold:.2f}) -> {call}"
        best = max(CLASSES, key=lambda c: probabilities[c])
        shown = ", ".join(f"P({NAMES[c]}) = {probabilities[c]:.2f}" for c in CLASSES)
        return f"COVID-19 / normal / other infection: {shown} -> {NAMES[best]}"

    def as_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "threshold": self.threshold, "threshold_rule": self.threshold_rule,
                "binary": self.binary}
