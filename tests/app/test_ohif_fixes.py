"""``lib.ohif_fixes``: the OHIF bundle MONAI Label ships is served with its Export DICOM SEG fixed, and nothing else
changes. (The fix at work, in real Chromium: ``tests/web/test_ohif_pacs.py``.)"""
from __future__ import annotations

import logging
import os

from tests.server import app_module

fixes = app_module("lib.ohif_fixes")


def test_each_fix_applies_to_the_shipped_bundle_and_changes_only_its_text():
    for fix in fixes.FIXES:
        with open(os.path.join(app_module("lib.monailabel_compat").ohif_folder(), fix.path), encoding="utf-8") as f:
            shipped = f.read()
        served = fixes.fixed(fix.path).decode("utf-8")
        assert shipped.count(fix.old) == 1 and fix.old not in served and served.count(fix.new) == 1
        assert served.replace(fix.new, fix.old) == shipped
    assert fixes.fixed("index.html") is None and fixes.fixed("app-config.js") is None


def test_a_bundle_it_was_not_written_for_is_served_as_shipped_and_said_so(monkeypatch, caplog):
    fix = fixes.FIXES[0]
    monkeypatch.setattr(fixes, "FIXES", (fix._replace(old=fix.old + "// not in this build"),))
    fixes.fixed.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            assert fixes.fixed(fix.path) is None
        assert "no longer applies" in caplog.text
    finally:
        fixes.fixed.cache_clear()
