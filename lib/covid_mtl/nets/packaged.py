"""Where the packaged demo model lives (trained on the synthetic phantoms; see README "Packaged model")."""
from __future__ import annotations

from pathlib import Path

PACKAGED_MODEL = Path(__file__).resolve().parent / "models" / "covid_mtl_lite.pt"


def packaged_model_path() -> str | None:
    """Path of the packaged ``lite`` checkpoint, or None when this install has none."""
    return str(PACKAGED_MODEL) if PACKAGED_MODEL.is_file() else None
