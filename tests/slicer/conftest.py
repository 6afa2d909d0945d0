"""Fixtures for the Slicer module's tests: its Qt-free package on sys.path and a real MRML scene (slicer-core)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer_extension" / "CovidMTL"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))  # what Slicer's "Additional module paths" does

slicer = pytest.importorskip("slicer", reason="slicer-core (pip) provides MRML outside the Slicer application")


from tests.slicer.slicer_helpers import add_volume, application_scene, oblique_ijk_to_ras  # noqa: E402  (needs slicer importable)


@pytest.fixture
def scene():
    with application_scene() as mrml_scene:
        yield mrml_scene


@pytest.fixture
def oblique_ct(scene):
    """A synthetic int16 'CT' (z, y, x) = (12, 20, 24) on the oblique grid."""
    rng = np.random.default_rng(5)
    array = rng.integers(-1000, 400, size=(12, 20, 24)).astype(np.int16)
    return add_volume(scene, array, oblique_ijk_to_ras())
