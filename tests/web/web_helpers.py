"""Helpers of the browser test: start the web app (in its own venv) and Debian's Chromium, read screenshots.

The web app runs from .venv-web (trame-slicer's slicer-layer-dm pins slicer-core 5.11, the test venv has 5.13); the
test itself runs in the project venv, where the covid-mtl server, Playwright and nibabel are.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import requests
from PIL import Image
from scipy import ndimage

from tests.server import free_port

ROOT = Path(__file__).resolve().parents[2]
WEB_PYTHON = Path(os.environ.get("COVID_MTL_WEB_PYTHON", ROOT / ".venv-web" / "bin" / "python"))
CHROMIUM = Path(os.environ.get("COVID_MTL_CHROMIUM", "/usr/bin/chromium"))
# Nothing may reach out: no component updates, sync, field trials or QUIC probes; GPU off (none here anyway).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 90
# The logic paints its "COVID lesion" segment (0.95, 0.35, 0.2); Slicer blends the fill over the grey CT, so a
# segment pixel is one whose red clearly exceeds both green and blue (measured: r - g >= 70 over lung and tissue).
# CT pixels in the lung window are grey (r == g == b); the paint brush's yellow outline has r == g.
SEGMENT_MIN_RED_EXCESS = 30


@dataclass
class WebApp:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_web_app(covid_mtl_url: str, work: Path) -> Iterator[WebApp]:
    port = free_port()
    log_path = work / "web.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "web")}
    env.pop("DISPLAY", None)  # offscreen EGL rendering, as on a server without a display
    cmd = [str(WEB_PYTHON), "-m", "covid_mtl_web", "--port", str(port), "--covid-mtl-server", covid_mtl_url]
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   start_new_session=True)
    app = WebApp(f"http://127.0.0.1:{port}/", process, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"web app exited with {process.returncode}:\n{app.log()[-4000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(app.url, timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"web app did not answer in {START_TIMEOUT_S} s:\n{app.log()[-4000:]}")
            time.sleep(0.5)
        yield app
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def ct_box(image: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of the CT in a slice view: the largest connected non-black region. Slicer draws black outside
    the volume and air inside the scan dark grey in the lung window; the view's own controls drawn over it (slice
    slider, buttons) are separate, smaller regions."""
    labels, n = ndimage.label(image.max(axis=2) > 12)
    if n == 0:
        raise AssertionError("the slice view shows no CT at all (all black)")
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones(labels.shape), labels, range(1, n + 1))))
    return ndimage.find_objects((labels == largest).astype(int))[0]


def segment_pixels(image: np.ndarray) -> np.ndarray:
    """Boolean map of segment-coloured (orange-red) pixels."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return (r - g >= SEGMENT_MIN_RED_EXCESS) & (r - b >= SEGMENT_MIN_RED_EXCESS) & (r >= 90)


def tissue_pixels(image: np.ndarray) -> np.ndarray:
    """Bright grey pixels (soft tissue / bone in the lung window) with no segment over them: where a paint stroke
    must add lesion voxels."""
    spread = image.max(axis=2) - image.min(axis=2)
    return (spread <= 12) & (image.min(axis=2) >= 150)


def longest_run(mask_row: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of True in a 1-D boolean array."""
    best, start = (0, 0), None
    for i, value in enumerate(np.append(mask_row, False)):
        if value and start is None:
            start = i
        elif not value and start is not None:
            if i - start > best[1]:
                best = (start, i - start)
            start = None
    return best


def stroke_target(image: np.ndarray, min_length: int = 30) -> tuple[int, int, int]:
    """(row, first column, last column) of a horizontal stroke over unsegmented tissue, away from the edges."""
    tissue = tissue_pixels(image)
    h = tissue.shape[0]
    best = (0, 0, 0)
    for row in range(h // 5, 4 * h // 5):
        start, length = longest_run(tissue[row])
        if length > best[2] - best[1]:
            best = (row, start, start + length - 1)
    if best[2] - best[1] < min_length:
        raise AssertionError(f"no stretch of unsegmented tissue {min_length} px long to paint on (best {best})")
    margin = (best[2] - best[1]) // 6
    return best[0], best[1] + margin, best[2] - margin
