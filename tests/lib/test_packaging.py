"""A normal (non-editable) install must carry every room of the core: setuptools' find_packages only sees
folders with an ``__init__.py``, and an editable install or PYTHONPATH would hide a missing one."""
from __future__ import annotations

from pathlib import Path

from setuptools import find_packages

LIB = Path(__file__).resolve().parents[2] / "lib"


def test_every_folder_with_modules_is_an_installed_package():
    found = set(find_packages(str(LIB)))
    folders = {".".join(p.parent.relative_to(LIB).parts) for p in (LIB / "covid_mtl").rglob("*.py")}
    assert folders and folders <= found, sorted(folders - found)
