"""Fixes to MONAI Label's bundled OHIF, applied to the files as they are served (MONAI Label's copy is never
changed).

The one fix: *Export DICOM SEG* in OHIF's segmentation panel fails with "Cannot read properties of undefined
(reading 'store')" in the OHIF build MONAI Label 0.8.5 ships (OHIF/Viewers#4584, OHIF 3.9). The panel runs the
command ``storeSegmentation`` with no context; two extensions register that name, and the one that wins (the SEG
extension's) needs a data source the panel never passes. Run in the ``CORNERSTONE`` context, as OHIF's later
releases do, the command finds the active data source itself, asks for the report name, stores the SEG with STOW-RS
(which the server takes as a correction: ``lib.viewer_seg``) and shows it. Without this fix no correction drawn in
OHIF can be sent.

Each fix names the file and the exact text it replaces. If MONAI Label ships another OHIF build (other file names,
or the text is not there exactly once), the file is served unchanged and the server log says which fix no longer
applies; ``tests/web/test_ohif_pacs.py`` then fails on the export.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import NamedTuple, Optional

from lib.monailabel_compat import ohif_folder

logger = logging.getLogger(__name__)


class Fix(NamedTuple):
    path: str  # relative to MONAI Label's static/ohif folder
    old: str
    new: str
    why: str


FIXES = (
    Fix(
        path="1185.bundle.63d4a7234e943a3bc2ab.js",
        old="""    storeSegmentation: async segmentationId => {
      commandsManager.run('storeSegmentation', {
        segmentationId
      });
    },""",
        new="""    storeSegmentation: async segmentationId => {
      commandsManager.runCommand('storeSegmentation', {
        segmentationId
      }, 'CORNERSTONE'); // covid-mtl: OHIF/Viewers#4584 (apps/covid_mtl/lib/ohif_fixes.py)
    },""",
        why="Export DICOM SEG from the segmentation panel (OHIF/Viewers#4584)",
    ),
)


@functools.lru_cache(maxsize=None)
def fixed(path: str) -> Optional[bytes]:
    """The served bytes of ``path`` (relative to ``/ohif/``) with its fixes applied; None when no fix concerns it
    or a fix no longer applies (serve MONAI Label's file as it is)."""
    fixes = [f for f in FIXES if f.path == path.strip("/")]
    if not fixes:
        return None
    try:
        with open(os.path.join(ohif_folder(), fixes[0].path), encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        logger.warning(f"OHIF fix no longer applies ({fixes[0].why}): {exc}")
        return None
    for fix in fixes:
        if text.count(fix.old) != 1:
            logger.warning(f"OHIF fix no longer applies ({fix.why}): {fix.path} is not the file it was written "
                           f"for; served unchanged")
            return None
        text = text.replace(fix.old, fix.new)
    return text.encode("utf-8")
