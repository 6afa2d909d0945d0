"""``--conf store_results true``: each infer on a PACS series stores its result under the study, as a DICOM SEG of
the AI's lesion mask (AUTOMATIC, with the model version) and a DICOM SR measurement report (TID 1500) that
references the CT series and the SEG. Checked on a real Orthanc through its REST API, read back with highdicom.
"""
from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests

from covid_mtl.io import read_image
from covid_mtl.measure.dicom_seg import read_dicom_seg
from tests.pacs_site import SAMPLE_SERIES, pacs_site, server_env
from tests.server import running_server

TIMEOUT = 300


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    work = tmp_path_factory.mktemp("pacs_results")
    with pacs_site(work, serve=False) as pacs:
        env = server_env(work, *pacs.orthanc.auth, pacs.cache)
        with running_server(pacs.orthanc.dicomweb, work, conf={"store_results": "true"}, env=env) as server:
            yield pacs, server


def instances(pacs, modality: str) -> list:
    found = []
    for series in pacs.orthanc.get("/series", params={"expand": ""}).json():
        if series["MainDicomTags"].get("Modality") == modality:
            for instance in series["Instances"]:
                data = pacs.orthanc.get(f"/instances/{instance}/file").content
                found.append(pydicom.dcmread(io.BytesIO(data)))
    return found


def infer(server, series: str) -> dict:
    reply = requests.post(f"{server.url}/infer/covid_mtl", params={"image": series, "output": "json"},
                          data={"params": "{}"}, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_each_infer_stores_a_seg_and_an_sr_that_reference_the_series(stored):
    pacs, server = stored
    assert instances(pacs, "SEG") == [] and instances(pacs, "SR") == []
    result = infer(server, pacs.ct_series)
    assert set(result["stored_in_pacs"]) == {"seg_series", "seg_instance", "sr_series", "sr_instance"}
    (seg,), (sr_ds,) = instances(pacs, "SEG"), instances(pacs, "SR")
    source = read_image(SAMPLE_SERIES)
    study = str(pydicom.dcmread(next(SAMPLE_SERIES.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    assert str(seg.StudyInstanceUID) == str(sr_ds.StudyInstanceUID) == study  # under the CT's study
    segment = seg.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    # what OHIF shows without opening the SR: the call in the series descriptions, the measures in the segment name
    call = "COVID-19" if result["label"] == "covid" else "non-COVID"
    p = f"P {result['probabilities']['covid']:.2f}"
    assert seg.SeriesDescription.startswith(f"covid-mtl AI: {call}, {p}")
    assert sr_ds.SeriesDescription.startswith(f"covid-mtl report: {call}, {p}")
    assert segment.SegmentLabel.startswith(f"COVID-19 lesion {result['quantification']['lesion_ml']:.1f} mL")
    assert max(map(len, (seg.SeriesDescription, sr_ds.SeriesDescription, segment.SegmentLabel))) <= 64
    assert result["model_version"] in seg.SoftwareVersions
    mask = read_dicom_seg(seg, source)  # lies on the series, voxel for voxel
    voxel_ml = float(np.prod(source.spacing)) / 1000.0
    assert mask.sum() * voxel_ml == pytest.approx(result["quantification"]["lesion_ml"], rel=0.01, abs=0.01)

    report = hd.sr.srread(io.BytesIO(_bytes(sr_ds)))
    group = report.content.get_volumetric_roi_measurement_groups()[0]
    assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    referenced_series = {item.SeriesInstanceUID
                         for name in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence")
                         for study in sr_ds.get(name, []) for item in study.ReferencedSeriesSequence}
    assert pacs.ct_series in referenced_series
    values = {(m.name.meaning, tuple(s.value.meaning for s in (m.finding_sites or []))): m.value
              for m in group.get_measurements()}
    q = result["quantification"]
    assert values[("Volume", ("Lung",))] == pytest.approx(q["lesion_ml"], abs=1e-3)
    assert values[("Lung volume", ("Lung",))] == pytest.approx(q["lung_ml"], abs=1e-3)
    assert values[("Percent of lung volume with lesion", ("Right lung",))] == pytest.approx(
        q["lungs"]["right"]["percent_involved"], abs=1e-3)
    assert values[("Probability of COVID-19", ())] == pytest.approx(result["probabilities"]["covid"], abs=1e-6)
    assert values[("Cut-off for probability of COVID-19", ())] == pytest.approx(result["decision"]["threshold"])
    called = group.get_qualitative_evaluations()[0].value.meaning
    assert (called == "COVID-19") == (result["label"] == "covid")


def test_a_second_infer_adds_a_pair_and_overwrites_nothing(stored):
    pacs, server = stored
    before = {ds.SOPInstanceUID for ds in instances(pacs, "SEG") + instances(pacs, "SR")}
    infer(server, pacs.ct_series)
    after = {ds.SOPInstanceUID for ds in instances(pacs, "SEG") + instances(pacs, "SR")}
    assert before < after and len(after) == len(before) + 2


def _bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()

