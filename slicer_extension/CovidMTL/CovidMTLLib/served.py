"""What the connected server serves, read from its ``GET /info/``: the classification model, its classes, the classes
a correction may carry, the active-learning strategy, the trainer and the window the model sees the CT through.

Nothing about the model is hard-coded in the module: a server that names its model otherwise, or serves a model
trained on other classes, works unchanged, and the panel offers what that server accepts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .client import CovidMTLLogicError

PREFERRED_STRATEGY = "uncertainty"  # Next case: the image the model is least sure about; else the first listed
NON_COVID = "non-covid"  # the correction label beyond the model's outputs, for a server that lists no
# ``correction_classes`` (covid_mtl.image.LABELS = CLASSES + ("non-covid",))
LUNG_WINDOW = (1500.0, -600.0)
"""(width, level) of the lung window the packaged model was trained with (covid_mtl.io.normalize.LUNG_WINDOW =
(-1350, 150) HU), for a server whose model entry carries no ``window``: the CT is shown as the model saw it."""


@dataclass(frozen=True)
class ServedModel:
    """The server's classification model and what goes with it (one ``/info/`` read at connect)."""

    name: str
    classes: tuple[str, ...]  # the model's outputs, in its order
    correction_classes: tuple[str, ...]  # what a radiologist may assign in a correction
    strategy: Optional[str]  # None: the server offers no active learning
    trainer: Optional[str]  # None: the server cannot train this model
    window: tuple[float, float]  # (width, level) in HU

    @classmethod
    def from_info(cls, info: dict[str, Any], url: str) -> "ServedModel":
        """Read ``info``; the model is the infer model that publishes ``classes`` (the covid-mtl app serves one)."""
        models = info.get("models") or {}
        name = next((n for n, entry in models.items() if isinstance(entry, dict) and entry.get("classes")), None)
        if name is None:
            raise CovidMTLLogicError(
                f"The server at {url} offers no classification model: none of its models "
                f"({', '.join(models) or 'none'}) lists classes. Is it a covid-mtl server?"
            )
        entry = models[name]
        classes = tuple(str(c) for c in entry["classes"])
        corrections = entry.get("correction_classes") or [*classes, NON_COVID]
        strategies = list(info.get("strategies") or {})
        strategy = PREFERRED_STRATEGY if PREFERRED_STRATEGY in strategies else next(iter(strategies), None)
        trainer = name if name in (info.get("trainers") or {}) else None
        return cls(name, classes, tuple(str(c) for c in corrections), strategy, trainer, _window(entry.get("window")))

    def describe(self) -> str:
        """One panel line: which model, next case by which strategy, which window."""
        width, level = self.window
        return (f"Using: {self.name} ({', '.join(self.classes)}); next case: {self.strategy or 'none offered'}; "
                f"lung window W {width:g} / L {level:g}")


def _window(published: Any) -> tuple[float, float]:
    """The model entry's ``{"width", "level"}``, or :data:`LUNG_WINDOW` when absent or unusable."""
    try:
        width, level = float(published["width"]), float(published["level"])
    except (TypeError, KeyError, ValueError):
        return LUNG_WINDOW
    return (width, level) if width > 0 else LUNG_WINDOW
