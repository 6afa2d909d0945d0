"""A correction drawn in OHIF comes back: the DICOM SEG OHIF's *Export DICOM SEG* stores with STOW-RS through the
server's DICOMweb proxy (``POST /proxy/dicom/wado/studies``) becomes the series' ``final`` label with a class, a new
correction SEG in the PACS, and the next training round's mask. Anything else sent that way is refused with a 4xx
and changes nothing.

A real Orthanc and a real covid-mtl server (``tests.pacs_site``); the request is built byte for byte as OHIF's
dicomweb-client builds it (``multipartEncode``: a leading CR LF, a quoted boundary, no CR LF after the closing
delimiter), the SEG with highdicom the way OHIF's dcmjs export fills it (one MANUAL segment "Segment 1", category and
type *Tissue*, the name typed in the *Create Report* dialog as Series Description, only painted frames). What Orthanc
holds is read through its own REST API; what training reads, with a fresh datastore on an empty cache.
"""
from __future__ import annotations

import io
import time
import uuid
from pathlib import Path
from typing import Optional

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from covid_mtl.io import read_image
from covid_mtl.measure.dicom_seg import read_dicom_seg, seg_classification, write_dicom_seg
from pacs.orthanc import dicom_files
from tests.app.test_pacs_proxy import raw_request
from tests.pacs_site import SAMPLE_SERIES
from tests.server import app_module

TIMEOUT = 300
STORE = "/proxy/dicom/wado/studies"  # OHIF: wadoRoot + "/studies"
OHIF_EXPORT = Path(__file__).parents[1] / "fixtures" / "ohif_export_seg.dcm"


def ohif_seg(files: list[Path], mask: np.ndarray, name: str = "Lesions", **changes) -> pydicom.Dataset:
    """A SEG as OHIF's export makes it, on the series in ``files`` (z in ``read_image`` order); ``changes`` are set
    on the dataset afterwards (to break it)."""
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    tissue = Code("85756007", "SCT", "Tissue")
    segment = hd.seg.SegmentDescription(segment_number=1, segment_label="Segment 1",
                                        segmented_property_category=tissue, segmented_property_type=tissue,
                                        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=mask.astype(np.uint8),
                              segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                              segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=1,
                              sop_instance_uid=hd.UID(), instance_number=1, manufacturer="OHIF",
                              manufacturer_model_name="dcmjs", software_versions="0", device_serial_number="1",
                              series_description=name, omit_empty_frames=True)
    for keyword, value in changes.items():
        setattr(seg, keyword, value)
    return seg


def part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()


def ohif_body(*payloads: bytes) -> tuple[bytes, dict]:
    """dicomweb-client's ``storeInstances`` body and header (``multipartEncode`` for one dataset)."""
    boundary = str(uuid.uuid4())
    head = f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = b"".join(head + p for p in payloads) + f"\r\n--{boundary}--".encode()
    return body, {"Content-Type": f'multipart/related; type="application/dicom"; boundary="{boundary}"'}


def store(url: str, *payloads: bytes, path: str = STORE, headers: Optional[dict] = None) -> requests.Response:
    body, content_type = ohif_body(*payloads)
    return requests.post(url + path, data=body, headers={**content_type, **(headers or {})}, timeout=TIMEOUT)


def sop_uids(pacs) -> list[str]:
    return sorted(pacs.orthanc.get("/instances").json())


def final_info(pacs) -> Optional[dict]:
    reply = requests.get(f"{pacs.server.url}/datastore/label/info", params={"label": pacs.ct_series, "tag": "final"},
                         timeout=TIMEOUT)
    return reply.json() if reply.status_code == 200 else None


def fresh_records(pacs, cache: Path) -> list[dict]:
    """The training records a train task's process reads, on an empty cache: only what the PACS holds."""
    client = app_module("lib.pacs_client").PacsClient(pacs.orthanc.dicomweb, *pacs.orthanc.auth)
    store_ = app_module("lib.datastore_pacs").PacsDatastore(client, str(cache))
    return app_module("lib.trainers.datalist").datastore_records(store_)


@pytest.fixture(scope="module")
def source():
    return read_image(SAMPLE_SERIES)


@pytest.fixture(scope="module")
def files(source) -> list[Path]:
    return [Path(f) for f in source.meta["files"]]


def box(shape: tuple, z: slice, y: slice, x: slice) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[z, y, x] = 1
    return mask


def test_a_seg_exported_from_ohif_becomes_the_final_label_and_a_correction_seg_in_the_pacs(pacs, source, files,
                                                                                           tmp_path):
    mask = box(source.array.shape, slice(4, 11), slice(60, 110), slice(50, 120))
    seg = ohif_seg(files, mask, name="Lesions, right lower lobe")
    before = sop_uids(pacs)
    reply = store(pacs.server.url, part10(seg))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/dicom+json")
    assert reply.headers["x-covid-mtl-classification"] == "covid"  # OHIF sends no class: covid is assumed
    assert reply.headers["x-covid-mtl-class-assumed"] == "true"
    stored_uid = reply.json()["00081199"]["Value"][0]["00081155"]["Value"][0]

    after = sop_uids(pacs)
    assert set(before) < set(after) and len(after) == len(before) + 1  # one instance added, nothing else changed
    (new,) = set(after) - set(before)
    stored = pacs.seg_file(new)
    # the server's SEG under the viewer's UIDs: OHIF loads back, by those UIDs, the SEG it believes it stored
    assert stored.SOPInstanceUID == stored_uid == seg.SOPInstanceUID
    assert stored.SeriesInstanceUID == seg.SeriesInstanceUID and stored.Manufacturer != seg.Manufacturer
    assert stored.StudyInstanceUID == seg.StudyInstanceUID
    assert stored.ReferencedSeriesSequence[0].SeriesInstanceUID == pacs.ct_series
    assert stored.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert seg_classification(stored) == "covid"
    np.testing.assert_array_equal(read_dicom_seg(stored, source), mask)  # voxel for voxel

    info = final_info(pacs)
    assert info["classification"] == "covid" and info["class_assumed"] is True and info["source"] == "ohif"
    assert info["seg_instance"] == stored_uid and info["viewer_seg_instance"] == seg.SOPInstanceUID

    (record,) = fresh_records(pacs, tmp_path / "cache")  # the next training round
    assert record["id"] == pacs.ct_series and record["label"] == "covid"
    np.testing.assert_array_equal(read_image(record["mask"]).array, mask)


def test_the_name_typed_in_ohif_gives_the_class_and_a_second_export_supersedes_the_first(pacs, source, files,
                                                                                         tmp_path):
    first_final = final_info(pacs)
    before = sop_uids(pacs)
    mask = box(source.array.shape, slice(2, 6), slice(20, 40), slice(30, 90))
    seg = ohif_seg(files, mask, name=" Non-COVID ")
    time.sleep(0.01)  # ContentTime orders corrections
    reply = store(pacs.server.url, part10(seg))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-covid-mtl-classification"] == "non-covid"
    assert reply.headers["x-covid-mtl-class-assumed"] == "false"
    after = sop_uids(pacs)
    assert set(before) < set(after) and len(after) == len(before) + 1  # the first correction stays in the PACS
    info = final_info(pacs)
    assert info["classification"] == "non-covid" and info["seg_instance"] != first_final["seg_instance"]
    (record,) = fresh_records(pacs, tmp_path / "cache")
    assert record["label"] == "non-covid"
    np.testing.assert_array_equal(read_image(record["mask"]).array, mask)

    again = store(pacs.server.url, part10(seg))  # a retry or a double click: the same correction twice
    assert again.status_code == 409, again.text
    assert sop_uids(pacs) == after and final_info(pacs) == info


def test_a_seg_as_ohif_itself_wrote_it_is_taken_and_ohif_can_load_it_back(pacs, source):
    """``tests/fixtures/ohif_export_seg.dcm``: what OHIF 3 (MONAI Label 0.8.5's build) sent for one brush stroke on
    the sample series, captured in Chromium. dcmjs writes no Spatial Locations Preserved, only the painted frame,
    and a MANUAL segment; OHIF then retrieves the instance by its UIDs through the proxy to show it."""
    seg = pydicom.dcmread(OHIF_EXPORT)
    assert int(seg.NumberOfFrames) == 1 and "SpatialLocationsPreserved" not in str(seg.PerFrameFunctionalGroupsSequence)
    expected = read_dicom_seg(seg, source)
    assert expected.sum() > 100 and np.count_nonzero(expected.any(axis=(1, 2))) == 1
    time.sleep(0.01)
    reply = store(pacs.server.url, OHIF_EXPORT.read_bytes())
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-covid-mtl-class-assumed"] == "true"  # named "Segmentation 1": no class in the name
    study, series, instance = seg.StudyInstanceUID, seg.SeriesInstanceUID, seg.SOPInstanceUID
    back = requests.get(f"{pacs.server.url}/proxy/dicom/wado/studies/{study}/series/{series}/instances/{instance}",
                        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                        timeout=TIMEOUT)
    assert back.status_code == 200, back.text[:300]
    (payload,) = app_module("lib.pacs_client").split_multipart(back.content, back.headers["content-type"])
    stored = pydicom.dcmread(io.BytesIO(payload))
    assert stored.SOPInstanceUID == instance and stored.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    np.testing.assert_array_equal(read_dicom_seg(stored, source), expected)
    assert final_info(pacs)["viewer_seg_instance"] == instance


def test_viewer_uids_the_pacs_already_holds_are_never_reused(pacs, source, files):
    """A SEG claiming a CT slice's SOP Instance UID: the correction is stored under new UIDs; the slice is kept."""
    ct = pydicom.dcmread(files[0], stop_before_pixels=True)
    seg = ohif_seg(files, box(source.array.shape, slice(5, 7), slice(40, 60), slice(40, 60)),
                   SOPInstanceUID=ct.SOPInstanceUID)
    before = sop_uids(pacs)
    time.sleep(0.01)
    reply = store(pacs.server.url, part10(seg))
    assert reply.status_code == 200, reply.text
    (new,) = set(sop_uids(pacs)) - set(before)
    stored = pacs.seg_file(new)
    assert stored.SOPInstanceUID != ct.SOPInstanceUID and stored.SeriesInstanceUID != seg.SeriesInstanceUID
    assert set(before) < set(sop_uids(pacs))
    kept = [i for i in pacs.orthanc.get("/instances", params={"expand": ""}).json()
            if i["MainDicomTags"].get("SOPInstanceUID") == ct.SOPInstanceUID]
    assert len(kept) == 1
    assert pydicom.dcmread(io.BytesIO(pacs.orthanc.get(f"/instances/{kept[0]['ID']}/file").content)).Modality == "CT"


def shifted_copy(files: list[Path], dest: Path) -> list[Path]:
    """The series with the same UIDs, every slice moved 15 mm: a SEG drawn on it does not lie on the PACS's."""
    dest.mkdir()
    out = []
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [float(v) + 15.0 for v in ds.ImagePositionPatient]
        ds.save_as(dest / f"{n:03d}.dcm")
        out.append(dest / f"{n:03d}.dcm")
    return out


def bad_requests(pacs, source, files, tmp_path) -> list[tuple]:
    """(name, expected status, payloads, path, extra headers, raw body or None)."""
    mask = box(source.array.shape, slice(3, 5), slice(30, 50), slice(30, 50))
    good = part10(ohif_seg(files, mask))
    ct = Path(files[0]).read_bytes()
    mr_files = dicom_files(pacs.cache.parent / "mr_series")  # refused before its geometry is looked at
    other_study = part10(ohif_seg(files, mask, StudyInstanceUID=generate_uid()))
    unknown = ohif_seg(files, mask)
    unknown.ReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()
    two_series = ohif_seg(files, mask)
    two_series.ReferencedSeriesSequence.append(pydicom.Dataset())
    two_series.ReferencedSeriesSequence[1].SeriesInstanceUID = pacs.other_series
    tilted = ohif_seg(files, mask)
    tilted.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    s = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    return [
        ("a CT image, not a SEG", 403, [ct], STORE, {}, None),
        ("a SEG on a series the PACS does not hold", 404, [part10(unknown)], STORE, {}, None),
        ("a SEG on the MR series", 422, [part10(ohif_seg(mr_files, mask))], STORE, {}, None),
        ("a SEG drawn on a shifted copy of the series", 422,
         [part10(ohif_seg(shifted_copy(files, tmp_path / "shifted"), mask))], STORE, {}, None),
        ("a SEG under another study", 422, [other_study], STORE, {}, None),
        ("a SEG whose frames are tilted", 422, [part10(tilted)], STORE, {}, None),
        ("a SEG referencing two series", 422, [part10(two_series)], STORE, {}, None),
        ("two instances in one request", 400, [good, good], STORE, {}, None),
        ("not DICOM", 400, [b"not a dicom file" * 20], STORE, {}, None),
        ("JSON instead of multipart", 400, [], STORE, {"Content-Type": "application/json"}, b"{}"),
        ("multipart without a closing delimiter", 400, [], STORE, {}, None),
        ("a query string", 400, [good], STORE + "?foo=1", {}, None),
        ("STOW-RS under a study", 403, [good], f"{STORE}/{s}", {}, None),
        ("STOW-RS on the stow root", 403, [good], "/proxy/dicom/stow/studies", {}, None),
        ("an encoded path", 403, [good], "/proxy/dicom/wado/%73tudies", {}, None),
    ]


def test_everything_else_sent_that_way_is_refused_with_a_4xx_and_changes_nothing(pacs, source, files, tmp_path):
    before, final = sop_uids(pacs), final_info(pacs)
    changes = pacs.orthanc.get("/changes", params={"limit": 0}).json()["Last"]
    for name, status, payloads, path, extra, raw in bad_requests(pacs, source, files, tmp_path):
        if name == "multipart without a closing delimiter":
            body, headers = ohif_body(part10(ohif_seg(files, box(source.array.shape, slice(1, 2), slice(0, 9),
                                                                 slice(0, 9)))))
            body = body[:body.rindex(b"\r\n--")]
            reply = requests.post(pacs.server.url + path, data=body, headers=headers, timeout=TIMEOUT)
        elif "%" in path:  # sent as written (requests would decode %73 to "s")
            body, headers = ohif_body(*payloads)
            sent = raw_request(pacs.server.url, "POST", path, headers, body)
            assert sent.status == status, f"{name}: {sent.status} {sent.body[:300]!r}"
            continue
        elif raw is not None:
            reply = requests.post(pacs.server.url + path, data=raw, headers=extra, timeout=TIMEOUT)
        else:
            reply = store(pacs.server.url, *payloads, path=path, headers=extra)
        assert reply.status_code == status, f"{name}: {reply.status_code} {reply.text[:300]}"
        assert "detail" in reply.json(), name
    body, headers = ohif_body(b"")
    oversized = raw_request(pacs.server.url, "POST", STORE, headers, b"", declared_length=50 * 2**30)
    assert oversized.status == 413, oversized.body[:300]
    assert sop_uids(pacs) == before and final_info(pacs) == final
    assert pacs.orthanc.get("/changes", params={"limit": 0}).json()["Last"] == changes
    assert pacs.server.alive()


def test_the_ais_own_seg_in_the_pacs_is_never_taken_for_a_correction(pacs, source, tmp_path):
    """With ``store_results`` every Run stores the AI's mask as a SEG (all segments AUTOMATIC) under the study.
    It is newer than the radiologist's correction, yet training keeps the correction."""
    corrected = fresh_records(pacs, tmp_path / "before")[0]
    mask = np.zeros(source.array.shape, np.uint8)
    mask[:, :5, :5] = 1
    time.sleep(0.01)
    path = write_dicom_seg(mask, source, tmp_path / "ai.dcm", model_version="test")  # as store_results writes it
    assert pacs.orthanc.upload([path]) == 1
    (record,) = fresh_records(pacs, tmp_path / "after")
    assert record["label"] == corrected["label"]
    np.testing.assert_array_equal(read_image(record["mask"]).array, read_image(corrected["mask"]).array)
    assert final_info(pacs)["source"] == "ohif"  # the server's own sync agrees
