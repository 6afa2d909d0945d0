"""MONAI Label's bundled OHIF (``/ohif/``) on a PACS, through the server's DICOMweb proxy, in real Chromium.

A real Orthanc (no GDCM plugin: it cannot transcode JPEG 2000) holds the uncompressed sample series and, when
``../shared`` is there, lidc0003 (JPEG 2000) and ricord0082 (JPEG lossless); a real covid-mtl server serves it.
OHIF opens each study: every frame request must answer 200 (before, each JPEG 2000 frame answered 500: MONAI Label's
proxy let the PACS transcode), the viewport must show the CT, and Orthanc must still be up, never restarted. Then:
Run in the MONAI Label mode shows the overlay; the stored SEG and SR show the call and the measures; a brush stroke
exported from the segmentation mode reaches the PACS and OHIF shows it back. Screenshots go to ``out/ohif-test/``
(copies in ``docs/``).
"""
from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from covid_mtl.io import read_image
from covid_mtl.measure.dicom_seg import read_dicom_seg

from pacs.orthanc import dicom_files, running
from tests.pacs_site import SAMPLE_SERIES, require_orthanc, server_env
from tests.server import ROOT, app_module, free_port, running_server
from tests.web.test_web_review import pytestmark  # noqa: F401 (skips without Chromium or Playwright)
from tests.web.web_helpers import CHROMIUM, CHROMIUM_ARGS, rgb

split_multipart = app_module("lib.pacs_client").split_multipart

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


def to_middle_slice(page) -> None:
    """Scroll the viewport from slice 1 to slice 12 of the sample's 24, through the lungs and the lesions."""
    page.mouse.move(700, 450)
    for _ in range(11):
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(150)


def open_offered_seg(page, seconds: int) -> None:
    """Answer *Yes* to OHIF's "Do you want to open this Segmentation?" once it asks (within ``seconds``)."""
    for _ in range(seconds):
        page.wait_for_timeout(1000)
        if page.get_by_role("button", name="Yes").count():
            page.get_by_role("button", name="Yes").first.click()
            return


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


def test_the_stored_seg_and_sr_show_the_call_and_the_measures(site, browser):
    """After Run (``store_results`` on), the study holds the AI's SEG and SR. OHIF shows no report text for a
    volumetric SR, so the call is in both series' descriptions (the study browser) and the measures in the segment's
    name (the segmentation panel, once the SEG is opened)."""
    orthanc, server, series = site
    study = str(pydicom.dcmread(series["sample (uncompressed)"][0], stop_before_pixels=True).StudyInstanceUID)
    modalities = {s["MainDicomTags"].get("Modality") for s in orthanc.get("/series", params={"expand": ""}).json()}
    assert {"SEG", "SR"} <= modalities  # stored by the Run of the test before
    page = browser.new_page()
    page.goto(f"{server.url}/ohif/viewer?StudyInstanceUIDs={study}")
    page.get_by_text("Confirm and Hide").click()
    page.get_by_text("covid-mtl report: COVID-19, P").first.wait_for()  # the SR's series description
    page.get_by_text("covid-mtl AI: COVID-19, P").first.dblclick()  # the SEG's: open it over the CT
    open_offered_seg(page, 30)
    page.locator('[data-cy="panelSegmentation-btn"]').click()
    page.get_by_text(re.compile(r"COVID-19 lesion \d+\.\d mL")).first.wait_for()  # the segment, with its volume
    to_middle_slice(page)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(OUT / "stored_results.png"))
    page.close()


def test_a_correction_drawn_in_ohif_reaches_the_pacs_and_ohif_shows_it_back(site, browser):
    """OHIF's segmentation mode: a brush stroke on one slice, *Export DICOM SEG* named "covid". The server takes it
    (``lib.viewer_seg``) as the series' final label with that class and stores its own correction SEG under the
    viewer SEG's UIDs, which OHIF then loads back from the PACS (before ``lib.ohif_fixes`` the export failed in
    OHIF itself; before the UIDs were kept OHIF waited forever for its SEG)."""
    orthanc, server, series = site
    files = series["sample (uncompressed)"]
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    page = browser.new_page()
    sent, failed = [], []
    page.on("request", lambda r: sent.append((r.post_data_buffer, r.headers["content-type"]))
            if r.method == "POST" and "/proxy/" in r.url else None)
    page.on("response", lambda r: failed.append((r.status, r.url)) if "/proxy/" in r.url and r.status >= 400
            else None)
    page.goto(f"{server.url}/ohif/segmentation?StudyInstanceUIDs={first.StudyInstanceUID}")
    page.get_by_text("Confirm and Hide").click()
    page.get_by_text("Add Segmentation").click()
    page.locator('[data-cy="Brush"]').click()
    to_middle_slice(page)
    page.mouse.move(520, 400)
    page.mouse.down()
    for k in range(30):
        page.mouse.move(520 + 4 * k, 400 + 3 * k)
        page.wait_for_timeout(20)
    page.mouse.up()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(OUT / "correction_drawn.png"))
    name = page.get_by_text("Segmentation 1").first.bounding_box()
    page.mouse.click(name["x"] - 25, name["y"] + name["height"] / 2)  # the menu button left of the segmentation
    page.get_by_text("Export & Download").click()
    page.get_by_text("Export DICOM SEG").click()
    page.get_by_text("Enter the report name").locator("xpath=following::input[1]").fill("covid")
    page.get_by_role("button", name="Save").click()
    open_offered_seg(page, 60)  # OHIF offers the SEG it stored: it came back from the PACS
    page.wait_for_timeout(3000)
    to_middle_slice(page)  # OHIF shows the loaded SEG from slice 1: back to the slice drawn on
    page.wait_for_timeout(1500)
    shown = rgb(page.screenshot(path=str(OUT / "correction_exported.png"))).astype(int)
    page.close()
    red = (shown[..., 0] - shown[..., 2] > 60)[60:880, 290:1110]  # the stored SEG's lesion red over the CT
    assert red.sum() > 2000, red.sum()
    assert len(sent) == 1 and not failed, failed[:5]
    (payload,) = split_multipart(*sent[0])
    viewer_seg = pydicom.dcmread(io.BytesIO(payload))
    info = requests.get(f"{server.url}/datastore/label/info", timeout=60,
                        params={"label": str(first.SeriesInstanceUID), "tag": "final"}).json()
    assert info["source"] == "ohif" and info["classification"] == "covid" and info["class_assumed"] is False
    assert info["seg_instance"] == viewer_seg.SOPInstanceUID
    stored = [pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{i['ID']}/file").content))
              for i in orthanc.get("/instances", params={"expand": ""}).json()
              if i["MainDicomTags"].get("SOPInstanceUID") == viewer_seg.SOPInstanceUID]
    assert len(stored) == 1 and stored[0].SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    mask = read_dicom_seg(stored[0], read_image(SAMPLE_SERIES))
    painted = np.flatnonzero(mask.any(axis=(1, 2)))
    assert len(painted) == 1 and mask.sum() > 200, (painted, mask.sum())  # one slice, a stroke's worth of voxels
