"""Process set-up that must happen before VTK or CovidMTLLib are imported."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "slicer_extension" / "CovidMTL"  # holds CovidMTLLib, as Slicer's "Additional module paths"


def prepare() -> None:
    """Put CovidMTLLib on sys.path and choose an offscreen OpenGL window when there is no display.

    VTK's Linux wheels try X first; without DISPLAY they fall back on their own, but naming EGL (Mesa's
    surfaceless llvmpipe on a machine without a GPU) skips the failed X attempt and its warning. OSMesa is not
    installed on these machines, and Xvfb is not needed once EGL works.
    """
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
