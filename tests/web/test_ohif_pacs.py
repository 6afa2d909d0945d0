"""MONAI Label's bundled OHIF (``/ohif/``) on a PACS, through the server's DICOMweb proxy, in real Chromium.

A real Orthanc (no GDCM plugin: it cannot transcode JPEG 2000) holds the uncompressed sample series and, when
``../shared`` is there, lidc0003 (JPEG 2000) and ricord0082 (JPEG lossless); a real covid-mtl server serves it.
OHIF opens each study: every frame request must answer 200 (before, each JPEG 2000 frame answered 500: MONAI Label's
proxy let the PACS transcode), the viewport must show the CT, and Orthanc must still be up, never restarted.
Screenshots go to ``out/ohif-test/``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pacs.orthanc import dicom_files, running
from tests.pacs_site import SAMPLE_SERIES, require_orthanc, server_env
from tests.server import ROOT, free_port, running_server
from tests.web.test_web_review import pytestmark  # noqa: F401 (skips without Chromium or Playwright)
from tests.web.web_helpers import CHROMIUM, CHROMIUM_ARGS, rgb

OUT = Path(os.environ.get("COVID_MTL_OHIF_TEST_OUT", ROOT / "out" / "ohif-test"))
REAL = ROOT.parent / "shared" / "data" / "real_ct" / "full_chest"
LOAD_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_orthanc()
    work = tmp_path_factory.mktemp("ohif")
    series = {"sample (uncompressed)": dicom_files(SAMPLE_SERIES)}
    for name in ("lidc0003", "ricord0082"):
        if (REAL / name).is_dir():  # 48 slices of each: every frame of a compressed series, in less time
            series[f"{name} ({'JPEG 2000' if name.startswith('lidc') else 'JPEG lossless'})"] = \
                dicom_files(REAL / name)[40:88]
    with running(work / "orthanc", free_port()) as orthanc:
        for files in series.values():
            assert orthanc.upload(files) == len(files)
        with running_server(orthanc.dicomweb, work, conf={"store_results": "true"},
                            env=server_env(work, *orthanc.auth, work / "cache")) as server:
            yield orthanc, server, series


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="covid_mtl_ohif_") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            context.close()


def test_every_series_displays_with_no_failed_frame_and_the_pacs_stays_up(site, browser):
    orthanc, server, series = site
    starts = orthanc.log().count("Orthanc has started")
    for name, files in series.items():
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        page = browser.new_page()
        replies = []
        page.on("response", lambda r: replies.append((r.status, r.url)))
        page.goto(f"{server.url}/ohif/viewer?StudyInstanceUIDs={study}")
        frames = []
        for _ in range(LOAD_TIMEOUT_S):
            page.wait_for_timeout(1000)  # page events arrive only while Playwright waits
            frames = [(status, url) for status, url in replies if "/frames/" in url]
            if len(frames) >= len(files):
                break
        failed = [(status, url) for status, url in replies if "/proxy/" in url and status >= 400]
        assert not failed, (name, failed[:5])
        assert len(frames) >= len(files) and all(status == 200 for status, _ in frames), (name, len(frames))
        shot = OUT / f"{name.split()[0]}.png"
        page.screenshot(path=str(shot))
        pixels = rgb(shot.read_bytes())
        viewport = pixels[100:800, 400:1300]
        assert (viewport.max(axis=2) > 120).mean() > 0.05, name  # the CT is drawn, not an empty viewport
        page.close()
    assert orthanc.process.poll() is None and orthanc.log().count("Orthanc has started") == starts


def coloured(pixels: np.ndarray) -> np.ndarray:
    """Pixels of a segment overlay, warmer than grey (the CT is grey, OHIF's chrome blue; the lesion segment is
    blended over the CT as about (200, 188, 163))."""
    p = pixels.astype(int)
    return p[..., 0] - p[..., 2] > 20


def test_run_in_the_monai_label_panel_shows_the_lesion_overlay(site, browser):
    """OHIF's MONAI Label mode: connect the panel to this server, Run covid_mtl on the sample series (a COVID-19
    phantom). Its panel asks for raw NRRD (``result_extension=.nrrd``) and copies the bytes into its labelmap: the
    "COVID-19 lesion" overlay appears over the CT, in the lungs."""
    orthanc, server, series = site
    study = str(pydicom.dcmread(series["sample (uncompressed)"][0], stop_before_pixels=True).StudyInstanceUID)
    page = browser.new_page()
    infers = []
    polls = []
    page.on("response", lambda r: infers.append(r.status) if "/infer/covid_mtl" in r.url else None)
    page.on("response", lambda r: polls.append(r.status) if "check_if_running" in r.url else None)
    page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study}")
    page.get_by_text("Confirm and Hide").click()
    address = page.locator("#monailabelServerURL")  # the panel defaults to port 8000 on this host
    address.fill(server.url + "/")
    address.locator("xpath=ancestor::tr[1]//button").first.click()
    page.get_by_role("button", name="Run").first.wait_for()
    assert page.get_by_text("COVID-19 lesion").count() >= 1  # the segment as /info/ names it
    page.wait_for_timeout(2000)
    before = rgb(page.screenshot())
    page.get_by_role("button", name="Run").first.click()
    for _ in range(60):
        page.wait_for_timeout(1000)
        if infers:
            break
    page.wait_for_timeout(3000)
    after_png = page.screenshot(path=str(OUT / "monai_label_run.png"))
    after = rgb(after_png)
    assert infers == [200]
    assert polls and set(polls) == {200}  # the panel's "is training running?" gets an answer it reads
    views = np.zeros(after.shape[:2], bool)
    views[60:880, 290:1110] = True  # the three viewports, left of the panel
    new = coloured(after) & ~coloured(before) & views
    assert new.sum() > 30, new.sum()
    grey = after.max(axis=2) - after.min(axis=2) < 4
    lung = grey & (after[..., 0] > 50) & (after[..., 0] < 110) & views  # lung in W1500/L-600; the background is black
    for left, right in ((290, 560), (565, 835), (840, 1110)):  # each viewport: overlay within its lungs' box
        ys, xs = np.nonzero(lung[:, left:right])
        box = np.zeros_like(new)
        box[ys.min() - 8:ys.max() + 9, left + xs.min() - 8:left + xs.max() + 9] = True
        assert (new[:, left:right] & ~box[:, left:right]).sum() <= 0.05 * max(new[:, left:right].sum(), 1)
    page.close()


def test_the_stored_seg_and_sr_are_listed_with_the_study(site, browser):
    """After Run (``store_results`` on), the study holds the AI's SEG and SR: OHIF lists them beside the CT."""
    orthanc, server, series = site
    study = str(pydicom.dcmread(series["sample (uncompressed)"][0], stop_before_pixels=True).StudyInstanceUID)
    modalities = {s["MainDicomTags"].get("Modality") for s in orthanc.get("/series", params={"expand": ""}).json()}
    assert {"SEG", "SR"} <= modalities  # stored by the Run of the test before
    page = browser.new_page()
    page.goto(f"{server.url}/ohif/viewer?StudyInstanceUIDs={study}")
    page.get_by_text("COVID-19 analysis (covid-mtl)").first.wait_for()  # the SR's series description
    page.get_by_text("COVID-19 lesion (covid-mtl)").first.wait_for()  # the SEG's
    page.screenshot(path=str(OUT / "stored_results.png"))
    page.close()
