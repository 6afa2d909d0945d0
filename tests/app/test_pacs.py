"""The PACS as the datastore: a real Orthanc on loopback (DICOMweb plugin) and a real covid-mtl MONAI Label server
started with ``--studies http://127.0.0.1:<port>/dicom-web``, as ``make pacs`` + ``make serve STUDIES=...`` run them.

What Orthanc holds afterwards is checked through Orthanc's own REST API (not DICOMweb, not the app's code); the
training-data read is checked with a fresh datastore on an empty cache, as the train task's process builds it, so it
can only know the corrections from the PACS.
"""
from __future__ import annotations

import gzip
import io
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests

from covid_mtl.io import read_image
from covid_mtl.measure.dicom_seg import read_dicom_seg, seg_classification, write_dicom_seg
from pacs.orthanc import dicom_files
from tests.pacs_site import SAMPLE_SERIES, server_env
from tests.server import app_module, running_server

TIMEOUT = 300


@pytest.fixture(scope="module")
def source():
    """The sample series read from its files: what the PACS path must reproduce."""
    return read_image(SAMPLE_SERIES)


def label_bytes(like_nifti: bytes, box: tuple[slice, slice, slice]) -> bytes:
    """A gzipped 0/1 NIfTI on the grid of ``like_nifti`` with ones in ``box`` (x, y, z index ranges)."""
    ref = nib.Nifti1Image.from_bytes(like_nifti)
    data = np.zeros(ref.shape, np.uint8)
    data[box] = 1
    return gzip.compress(nib.Nifti1Image(data, ref.affine).to_bytes(), mtime=0)


def zyx(label: bytes) -> np.ndarray:
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(label)).dataobj).transpose(2, 1, 0)


def put_label(pacs, series: str, label: bytes, classification: str = "covid", tag: str = "final"):
    return requests.put(f"{pacs.server.url}/datastore/label", params={"image": series, "tag": tag},
                        data={"params": f'{{"classification": "{classification}"}}'},
                        files={"label": ("correction.nii.gz", label)}, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def served_image(pacs) -> bytes:
    reply = requests.get(f"{pacs.server.url}/datastore/image", params={"image": pacs.ct_series}, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.content


def fresh_datastore(pacs, cache: Path):
    """The datastore a train task process builds, on an empty cache: it knows only what the PACS holds."""
    client = app_module("lib.pacs_client").PacsClient(pacs.orthanc.dicomweb, *pacs.orthanc.auth)
    return app_module("lib.datastore_pacs").PacsDatastore(client, str(cache))


def test_lists_the_pacs_ct_series_only(pacs):
    listing = requests.get(f"{pacs.server.url}/datastore/", params={"output": "all"}, timeout=TIMEOUT).json()
    assert set(listing["objects"]) == {pacs.ct_series}  # the MR series is not offered
    info = listing["objects"][pacs.ct_series]["image"]["info"]
    assert info["Modality"] == "CT" and info["PatientID"].startswith("PHANTOM")
    stats = requests.get(f"{pacs.server.url}/datastore/", timeout=TIMEOUT).json()
    assert stats["total"] == 1 and stats["completed"] == 0
    assert "dcmqi" not in pacs.server.log()  # MONAI Label's DICOMweb datastore would have tried to download it


def test_served_image_is_the_series_on_its_grid(pacs, source, served_image, tmp_path):
    path = tmp_path / "served.nii"
    path.write_bytes(served_image)
    served = read_image(path)
    assert served.is_hu
    np.testing.assert_array_equal(served.array, source.array)
    np.testing.assert_allclose(served.affine, source.affine, atol=1e-4)


def test_infer_on_a_pacs_series_by_id(pacs, source):
    reply = requests.post(f"{pacs.server.url}/infer/covid_mtl", params={"image": pacs.ct_series, "output": "all"},
                          timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    assert "multipart" in reply.headers["content-type"]
    body = reply.content
    assert b"statement" in body and b"P(COVID-19)" in body
    # the same series from its files, uploaded with the request: the same class statement
    local = requests.post(f"{pacs.server.url}/infer/covid_mtl", params={"output": "json"},
                          files={"file": ("series.nii.gz", _nifti_of(source))}, timeout=TIMEOUT)
    assert local.status_code == 200, local.text
    assert local.json()["statement"].encode() in body
    # results go into the PACS only with --conf store_results (tests/app/test_pacs_results.py)
    assert b"stored_in_pacs" not in body and not pacs.segs()


def _nifti_of(image) -> bytes:
    return gzip.compress(nib.Nifti1Image(image.array.astype(np.int16).transpose(2, 1, 0), image.affine).to_bytes(),
                         mtime=0)


def test_non_ct_unknown_and_path_ids_are_refused(pacs):
    for params in ({"image": pacs.other_series}, {"image": pacs.other_series, "output": "json"}):
        reply = requests.post(f"{pacs.server.url}/infer/covid_mtl", params=params, timeout=TIMEOUT)
        assert reply.status_code == 422, reply.text
        assert "MR" in reply.json()["detail"] and "CT" in reply.json()["detail"]
    reply = requests.get(f"{pacs.server.url}/datastore/image", params={"image": pacs.other_series}, timeout=TIMEOUT)
    assert reply.status_code == 422, reply.text
    reply = requests.post(f"{pacs.server.url}/infer/covid_mtl", params={"image": "1.2.3.4.5"}, timeout=TIMEOUT)
    assert reply.status_code == 404, reply.text
    reply = requests.get(f"{pacs.server.url}/datastore/image", params={"image": "../../etc/passwd"}, timeout=TIMEOUT)
    assert reply.status_code == 400, reply.text


def test_correction_is_stored_in_the_pacs_as_a_seg_under_the_study(pacs, source, served_image):
    label = label_bytes(served_image, (slice(40, 90), slice(50, 100), slice(5, 12)))
    reply = put_label(pacs, pacs.ct_series, label, "covid")
    assert reply.status_code == 200, reply.text
    segs = pacs.segs()
    assert len(segs) == 1 and len(segs[0]["Instances"]) == 1
    ct = [s for s in pacs.orthanc.get("/series", params={"expand": ""}).json()
          if s["MainDicomTags"].get("SeriesInstanceUID") == pacs.ct_series][0]
    assert segs[0]["ParentStudy"] == ct["ParentStudy"]  # Orthanc lists it under the CT's study
    seg = pacs.seg_file(segs[0]["Instances"][0])
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pacs.ct_series
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert seg_classification(seg) == "covid"
    mask = read_dicom_seg(seg, source)
    np.testing.assert_array_equal(mask, zyx(label))  # voxel for voxel
    assert zyx(label).sum() > 0


def test_infer_cannot_write_final_and_nothing_reaches_the_pacs(pacs):
    before = pacs.seg_instances()
    reply = requests.post(f"{pacs.server.url}/infer/covid_mtl",
                          params={"image": pacs.ct_series, "output": "json"},
                          data={"params": '{"label_tag": "final", "save_label": true}'}, timeout=TIMEOUT)
    assert reply.status_code == 403, reply.text
    assert pacs.seg_instances() == before


def test_label_off_the_grid_or_not_binary_is_refused_and_nothing_reaches_the_pacs(pacs, served_image):
    before = pacs.seg_instances()
    ref = nib.Nifti1Image.from_bytes(served_image)
    smaller = np.zeros(tuple(s - 1 for s in ref.shape), np.uint8)
    off_grid = gzip.compress(nib.Nifti1Image(smaller, ref.affine).to_bytes(), mtime=0)
    reply = put_label(pacs, pacs.ct_series, off_grid)
    assert reply.status_code == 422, reply.text
    values = np.full(ref.shape, 2, np.uint8)
    reply = put_label(pacs, pacs.ct_series, gzip.compress(nib.Nifti1Image(values, ref.affine).to_bytes(), mtime=0))
    assert reply.status_code == 422, reply.text
    reply = put_label(pacs, pacs.ct_series, label_bytes(served_image, (slice(0, 5),) * 3), "flu")
    assert reply.status_code == 422, reply.text
    assert pacs.seg_instances() == before


def test_second_correction_is_a_new_seg_and_training_reads_the_newest(pacs, served_image, tmp_path):
    first = pacs.seg_instances()
    time.sleep(0.01)  # ContentTime orders corrections
    second = label_bytes(served_image, (slice(10, 30), slice(20, 40), slice(2, 20)))
    reply = put_label(pacs, pacs.ct_series, second, "non-covid")
    assert reply.status_code == 200, reply.text
    now = pacs.seg_instances()
    assert len(now) == len(first) + 1 and set(first) < set(now)  # the first correction is still in the PACS
    records = app_module("lib.trainers.datalist").datastore_records(fresh_datastore(pacs, tmp_path / "cache"))
    assert [r["id"] for r in records] == [pacs.ct_series]
    record = records[0]
    assert record["label"] == "non-covid"
    mask = read_image(record["mask"]).array
    np.testing.assert_array_equal(mask, zyx(second))
    assert read_image(record["image"]).array.shape == mask.shape


def test_a_seg_that_does_not_lie_on_its_series_is_refused_for_training(pacs, source, served_image, tmp_path):
    """A SEG another tool stored for this series, but painted on a shifted copy of it: newer, yet not used."""
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for n, path in enumerate(dicom_files(SAMPLE_SERIES)):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [float(v) + 15.0 for v in ds.ImagePositionPatient]
        ds.save_as(shifted / f"{n:03d}.dcm")
    moved = read_image(shifted)
    assert moved.meta["sop_instance_uids"] == source.meta["sop_instance_uids"]
    mask = np.zeros(moved.array.shape, np.uint8)
    mask[:, :20, :20] = 1
    time.sleep(0.01)
    path = write_dicom_seg(mask, moved, tmp_path / "foreign.dcm", classification="covid", corrected=True)
    assert pacs.orthanc.upload([path]) == 1
    store = fresh_datastore(pacs, tmp_path / "cache")
    records = app_module("lib.trainers.datalist").datastore_records(store)
    assert records[0]["label"] == "non-covid"  # still the newest correction that lies on the series
    assert not np.array_equal(read_image(records[0]["mask"]).array, mask)
    assert pydicom.dcmread(path).SOPInstanceUID in store._refused


def test_the_train_task_learns_from_the_pacs_corrections(pacs, tmp_path):
    """A second CT series reaches the PACS, is corrected through the server, and a real training run (MONAI Label's
    task process, which builds its own datastore) reads both corrections from the PACS."""
    from covid_mtl.demo.phantom import make_phantom
    from covid_mtl.demo.sample_data import write_ct_series

    files = write_ct_series(tmp_path / "second", make_phantom("covid", 11, shape=(8, 96, 96), spacing=(4.0, 1.5, 1.5)),
                            "pacs_second")
    assert pacs.orthanc.upload(files) == len(files)
    second = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    listing = requests.get(f"{pacs.server.url}/datastore/", params={"output": "all"}, timeout=TIMEOUT).json()
    assert set(listing["objects"]) == {pacs.ct_series, second}
    image = requests.get(f"{pacs.server.url}/datastore/image", params={"image": second}, timeout=TIMEOUT).content
    reply = put_label(pacs, second, label_bytes(image, (slice(30, 60), slice(30, 60), slice(2, 6))), "covid")
    assert reply.status_code == 200, reply.text
    reply = requests.post(f"{pacs.server.url}/train/covid_mtl", json={"max_epochs": 1, "steps_per_epoch": 2,
                          "val_steps": 1, "train_batch_size": 2}, timeout=30)
    assert reply.status_code == 200, reply.text
    deadline, status = time.monotonic() + 400, {}
    while time.monotonic() < deadline:
        status = requests.get(f"{pacs.server.url}/train/", timeout=30).json()
        if status.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(2)
    assert status.get("status") == "DONE", str(status)[-3000:]
    # the task process's own count of what it read (its log goes to the server log)
    assert "covid_mtl: 2 images, 2 with masks, 2 with a class" in pacs.server.log()


def test_an_interrupted_fetch_is_removed_but_not_one_in_progress(pacs, tmp_path):
    """A datastore starting (a training task's) removes what a crashed fetch left, never another process's fetch
    that holds its series lock."""
    import subprocess
    import sys

    dicom = tmp_path / "cache" / "dicom"
    (dicom / ".1.2.3~crashed").mkdir(parents=True)
    (dicom / ".1.2.3~crashed" / "00000.dcm").write_bytes(b"half a series")
    (dicom / ".4.5.6~fetching").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); "
                               "lock.acquire(); print('held', flush=True); time.sleep(120)", str(dicom / "4.5.6.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        fresh_datastore(pacs, tmp_path / "cache")
    finally:
        holder.kill()
        holder.wait()
    assert not (dicom / ".1.2.3~crashed").exists()
    assert (dicom / ".4.5.6~fetching").is_dir()


def test_uploads_and_deletions_are_refused_on_a_pacs(pacs, served_image):
    reply = requests.put(f"{pacs.server.url}/datastore/image", params={"image": "new_scan"},
                         files={"file": ("new_scan.nii", served_image)}, timeout=TIMEOUT)
    assert reply.status_code == 403 and "PACS" in reply.json()["detail"], reply.text
    reply = requests.delete(f"{pacs.server.url}/datastore/label", params={"id": pacs.ct_series, "tag": "final"},
                            timeout=TIMEOUT)
    assert reply.status_code == 403, reply.text
    assert pacs.seg_instances()  # nothing deleted


def test_wrong_credentials_give_502_and_the_server_stays_up(pacs, tmp_path):
    env = server_env(tmp_path, pacs.orthanc.auth[0], "not-the-password", tmp_path / "cache")
    with running_server(pacs.orthanc.dicomweb, tmp_path, env=env) as server:
        for reply in (requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=TIMEOUT),
                      requests.post(f"{server.url}/infer/covid_mtl", params={"image": pacs.ct_series}, timeout=TIMEOUT)):
            assert reply.status_code == 502, reply.text
            assert "credentials" in reply.json()["detail"] and "not-the-password" not in reply.text
        info = requests.get(f"{server.url}/info/", timeout=TIMEOUT)  # Slicer connects through it: it answers
        assert info.status_code == 200 and "credentials" in info.json()["datastore"]["error"]
        assert server.alive()


def test_pacs_down_gives_503_and_the_server_stays_up(pacs, served_image):
    """Last in the module: it stops Orthanc."""
    pacs.orthanc.stop()
    for reply in (requests.get(f"{pacs.server.url}/datastore/", params={"output": "all"}, timeout=TIMEOUT),
                  requests.post(f"{pacs.server.url}/infer/covid_mtl", params={"image": pacs.ct_series}, timeout=TIMEOUT),
                  put_label(pacs, pacs.ct_series, label_bytes(served_image, (slice(0, 9),) * 3))):
        assert reply.status_code == 503, reply.text
        assert "cannot be reached" in reply.json()["detail"] and pacs.orthanc.dicomweb in reply.json()["detail"]
    info = requests.get(f"{pacs.server.url}/info/", timeout=TIMEOUT)
    assert info.status_code == 200 and "cannot be reached" in info.json()["datastore"]["error"]
    assert pacs.server.alive()
