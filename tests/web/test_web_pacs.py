"""The browser review page on a PACS: a real Orthanc on loopback, a real covid-mtl server serving it over DICOMweb,
the web app and a real headless Chromium. The PACS series is picked from the case list, loaded, classified, painted
and submitted; the correction is then read from Orthanc (its REST API) as a DICOM SEG on the series.

The page, the web app and the screenshot helpers are those of ``test_web_review``; only the server differs.
"""
from __future__ import annotations

import time

import pytest

from covid_mtl.io import read_image
from covid_mtl.measure.dicom_seg import read_dicom_seg, seg_classification
from tests.pacs_site import SAMPLE_SERIES
from tests.web.test_web_review import (  # noqa: F401  (fixtures: page, web_app)
    OUT, axial_view, expect_no_error, page, pytestmark, segment_inside_ct, settle, web_app,
)
from tests.web.web_helpers import stroke_target


@pytest.fixture(scope="module")
def server(pacs):
    return pacs.server


@pytest.fixture(scope="module")
def out_dir():
    folder = OUT.parent / (OUT.name + "-pacs")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_pacs_series_is_reviewed_and_its_correction_lands_in_the_pacs(page, pacs, out_dir):
    case = pacs.ct_series
    page.get_by_test_id("connect").click()
    page.get_by_text(f"Datastore from the PACS {pacs.orthanc.dicomweb}").wait_for()
    page.get_by_test_id("case-select").click()
    # listed by patient and series description, then the series UID
    page.get_by_role("option", name=f"PHANTOM-covid_dicom_001 · covid-mtl phantom covid_dicom_001 (covid) · {case}",
                     exact=True).click()
    page.get_by_test_id("load-case").click()
    page.get_by_text(f"Loaded: {case}").wait_for()
    expect_no_error(page)
    settle(page, out_dir, "1_loaded", lambda px: px.max() > 100)
    page.get_by_test_id("classify").click()
    page.get_by_test_id("prediction").wait_for()
    expect_no_error(page)
    assert "P(COVID-19)" in page.get_by_test_id("prediction").inner_text()
    after = settle(page, out_dir, "2_classified", lambda px: segment_inside_ct(px) > 200)

    page.get_by_test_id("tool-paint").click()
    row, first, last = stroke_target(after)
    box = axial_view(page).bounding_box()
    scale = box["width"] / after.shape[1]
    x0, x1, y = box["x"] + first * scale, box["x"] + last * scale, box["y"] + row * scale
    page.mouse.move(x0, y)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x0 + (x1 - x0) * step / 20, y)
        time.sleep(0.03)
    page.mouse.up()
    settle(page, out_dir, "3_painted", lambda px: segment_inside_ct(px) > segment_inside_ct(after) + 100)
    page.get_by_test_id("class-select").click()
    page.get_by_role("option", name="covid", exact=True).click()
    page.get_by_test_id("submit").click()
    page.get_by_test_id("submitted").wait_for()
    expect_no_error(page)

    segs = pacs.segs()
    assert len(segs) == 1, segs
    seg = pacs.seg_file(segs[0]["Instances"][0])
    assert seg_classification(seg) == "covid"
    mask = read_dicom_seg(seg, read_image(SAMPLE_SERIES))
    assert mask.sum() > 20  # the model's lesion and the stroke, on the series' own grid
