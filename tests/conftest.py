"""Shared fixtures: where the project, its sample data and the shared real CT scans are."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see covid_mtl/__init__.py; before torch loads
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT.parent / "shared" / "data" / "real_ct"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return ROOT / "sample_data"


@pytest.fixture(scope="session")
def real_ct() -> Path:
    if not REAL_CT.is_dir():
        pytest.skip(f"real CT folder {REAL_CT} absent (it ships beside the project in shared/, not with it)")
    return REAL_CT


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """A real Orthanc holding the sample CT series and an MR copy, and a covid-mtl server serving it (one per test
    module; tests/pacs_site.py). Skips where Orthanc is not installed."""
    from tests.pacs_site import pacs_site

    with pacs_site(tmp_path_factory.mktemp("pacs")) as site:
        yield site
