"""A radiologist's label is never lost or silently bent (issue 13), over real HTTP: infer cannot write the
``final`` tag, re-uploads do not drop labels by accident, ids keep the whole file stem, labels must lie on the
image's grid, headers that lie are refused at once, bad params are 400, errors name the user's file, masks keep
the input's shape, and ``/info/`` shows no server path.

One server for the module; tests run in file order on its private copy of sample_data/.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest
import requests
from requests_toolbelt.multipart.decoder import MultipartDecoder

from tests.server import Server, module_server

TIMEOUT = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "label_safety")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def label_info(s: Server, image: str, tag: str = "final") -> requests.Response:
    return requests.get(f"{s.url}/datastore/label/info", params={"label": image, "tag": tag}, timeout=30)


def infer(s: Server, params, files=None, **query) -> requests.Response:
    data = {"params": params if isinstance(params, str) else json.dumps(params)}
    return requests.post(f"{s.url}/infer/covid_mtl", params={"output": "json", **query}, data=data, files=files,
                         timeout=TIMEOUT)


def nifti_gz(data: np.ndarray, affine: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(data, affine).to_bytes(), mtime=0)


def put_image(s: Server, name: str, data: bytes, image: str | None = None, params: dict | None = None):
    return requests.put(f"{s.url}/datastore/image", params={"image": image} if image else {},
                        files={"file": (name, data, "application/octet-stream")},
                        data={"params": json.dumps(params or {})}, timeout=TIMEOUT)


def put_label(s: Server, image: str, data: bytes, params: dict | None = None, name: str = "label.nii.gz"):
    return requests.put(f"{s.url}/datastore/label", params={"image": image, "tag": "final"},
                        files={"label": (name, data, "application/octet-stream")},
                        data={"params": json.dumps(params or {})}, timeout=TIMEOUT)


# ----- 1. infer and batch infer never write the final tag -----------------------------------------------------------
def test_infer_never_writes_the_final_label(server: Server) -> None:
    final = server.studies / "labels" / "final" / "covid_001.nii.gz"
    before, info_before = sha(final), label_info(server, "covid_001").json()
    for tag in ("final", "Final", " final"):
        r = infer(server, {"save_label": True, "label_tag": tag}, image="covid_001")
        assert r.status_code == 403, r.text
        assert "PUT /datastore/label" in r.json()["detail"]
    r = requests.post(f"{server.url}/batch/infer/covid_mtl", params={"images": "all", "run_sync": "true"},
                      json={"save_label": True, "label_tag": "final", "max_workers": 1}, timeout=TIMEOUT)
    assert r.status_code == 403, r.text
    assert sha(final) == before and label_info(server, "covid_001").json() == info_before
    # Other tags stay open to predictions (what MONAI Label's "original" is for).
    r = infer(server, {"save_label": True, "label_tag": "original"}, image="covid_001")
    assert r.status_code == 200, r.text
    assert (server.studies / "labels" / "original" / "covid_001.nii.gz").is_file()
    assert sha(final) == before


# ----- 3. re-uploads and ids ----------------------------------------------------------------------------------------
def test_reupload_of_an_existing_id_is_refused_unless_replace_is_asked(server: Server) -> None:
    data = (server.studies / "covid_001.nii.gz").read_bytes()
    final = server.studies / "labels" / "final" / "covid_001.nii.gz"
    r = put_image(server, "covid_001.nii.gz", data, image="covid_001")
    assert r.status_code == 409, r.text
    assert "already exists" in r.json()["detail"] and '"replace": true' in r.json()["detail"]
    assert final.is_file() and label_info(server, "covid_001").status_code == 200
    assert requests.get(f"{server.url}/datastore/label", params={"label": "covid_001", "tag": "final"},
                        timeout=30).status_code == 200
    r = put_image(server, "covid_001.nii.gz", data, image="covid_001", params={"replace": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"image": "covid_001", "replaced": True, "labels_deleted": ["final", "original"]}
    assert not final.exists()  # drawn on the old image: deleted, as the reply says
    datastore = json.loads((server.studies / "datastore_v2.json").read_text())
    assert datastore["objects"]["covid_001"]["labels"] == {}
    assert "replace" not in datastore["objects"]["covid_001"]["image"]["info"]


def test_ids_keep_the_whole_file_stem(server: Server) -> None:
    data = (server.studies / "normal_002.nii.gz").read_bytes()
    ids = []
    for name in ("1.2.840.113619.2.55.3.nii.gz", "1.2.840.113619.2.55.4.nii.gz", "scan.v2.nii"):
        payload = gzip.decompress(data) if name.endswith(".nii") else data
        r = put_image(server, name, payload)
        assert r.status_code == 200, r.text
        ids.append(r.json()["image"])
    assert ids == ["1.2.840.113619.2.55.3", "1.2.840.113619.2.55.4", "scan.v2"]
    listed = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()
    assert set(ids) <= set(listed["objects"])
    assert (server.studies / "1.2.840.113619.2.55.3.nii.gz").is_file() and (server.studies / "scan.v2.nii").is_file()


# ----- 4. labels lie on the image's grid ----------------------------------------------------------------------------
def test_label_with_another_geometry_is_refused_naming_the_difference(server: Server) -> None:
    ref = nib.load(server.studies / "covid_002.nii.gz")
    affine = ref.affine.copy()
    data = np.zeros(ref.shape, np.uint8)
    data[40:80, 30:70, 10:20] = 1
    flip = affine @ np.array([[-1, 0, 0, ref.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    swap = affine @ np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    shifted, scaled = affine.copy(), affine.copy()
    shifted[:3, 3] += [5.0, 0.0, 0.0]
    scaled[:3, :3] *= 1.5
    cases = {"flipped": (flip, "flipped left-right"), "swapped": (swap, "axes swapped"),
             "shifted": (shifted, "origin shifted by (5"), "rescaled": (scaled, "voxel size")}
    final = server.studies / "labels" / "final" / "covid_002.nii.gz"
    for name, (bad_affine, words) in cases.items():
        r = put_label(server, "covid_002", nifti_gz(data, bad_affine), {"classification": "covid"})
        assert r.status_code == 422, (name, r.text)
        assert words in r.json()["detail"], (name, r.json()["detail"])
        assert not final.exists(), name
    tiny = affine.copy()
    tiny[:3, 3] += 1e-4  # float32 rounding of a label exported on the image's grid
    r = put_label(server, "covid_002", nifti_gz(data, tiny), {"classification": "covid"})
    assert r.status_code == 200, r.text
    assert final.is_file()


# ----- 5. memory budget from the header ---------------------------------------------------------------------------
def header_only(shape, dtype=np.int16) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    return gzip.compress(header.binaryblock + b"\0" * 4, mtime=0)


def test_headers_claiming_more_than_budget_or_data_are_refused_at_once(server: Server) -> None:
    cases = [((2048, 2048, 1024), "too large"), ((512, 512, 1000), "header claims")]
    for shape, words in cases:
        bomb = header_only(shape)
        assert len(bomb) < 200
        for send in (lambda: put_image(server, "bomb.nii.gz", bomb, image="bomb"),
                     lambda: infer(server, {}, files={"file": ("bomb.nii.gz", bomb, "application/gzip")})):
            start = time.perf_counter()
            r = send()
            elapsed = time.perf_counter() - start
            assert r.status_code == 422, r.text
            assert words in r.json()["detail"], r.json()["detail"]
            assert elapsed < 1.0, f"{shape}: refused after {elapsed:.2f} s"
    assert not (server.studies / "bomb.nii.gz").exists()


# ----- 7. params, user file names, sessions, mask shapes, /info/ ---------------------------------------------------
def test_params_that_are_not_a_json_object_get_400(server: Server) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for params in ("[1, 2]", "null", "3", '"text"', deep, '{"a": ' * 50 + "1" + "}" * 50):
        r = infer(server, params, image="covid_002")
        assert r.status_code == 400, (params[:20], r.text[:300])
        assert "JSON object" in r.json()["detail"] or "nested" in r.json()["detail"], r.json()
    r = requests.put(f"{server.url}/datastore/label", params={"image": "covid_002", "tag": "final"},
                     files={"label": ("l.nii.gz", b"x")}, data={"params": "[1]"}, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    r = requests.put(f"{server.url}/datastore/image/info", params={"image": "covid_002"}, data={"info": "null"},
                     timeout=30)
    assert r.status_code == 400, r.text
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200


def test_upload_errors_name_the_users_file(server: Server) -> None:
    r = infer(server, {}, files={"file": ("patient_scan.nii.gz", b"\x1f\x8b not a nifti", "application/gzip")})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "patient_scan.nii.gz" in detail and "tmp" not in detail, detail
    r = put_image(server, "my.study.nii.gz", b"\x1f\x8b not a nifti", image="study")
    assert r.status_code == 422 and "my.study.nii.gz" in r.json()["detail"] and "tmp" not in r.json()["detail"]
    r = put_label(server, "covid_002", b"garbage", name="my_mask.nii.gz")
    assert r.status_code == 422 and "my_mask.nii.gz" in r.json()["detail"], r.text


def test_session_without_a_readable_series_is_refused(server: Server) -> None:
    corrupt = b"\0" * 128 + b"DICM" + os.urandom(2000)
    r = requests.put(f"{server.url}/session/", files=[("files", ("IM0001.dcm", corrupt, "application/dicom"))],
                     timeout=TIMEOUT)
    assert r.status_code == 422, r.text
    assert "no readable CT series" in r.json()["detail"] and "IM0001.dcm" in r.json()["detail"]
    series = next((server.studies / "dicom").iterdir())
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(series.glob("*.dcm"))]
    r = requests.put(f"{server.url}/session/", files=files, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert infer(server, {}, session_id=r.json()["session_id"]).status_code == 200


@pytest.mark.parametrize("shape", [(160, 160), (160, 160, 8, 1)], ids=["2d", "4d-singleton"])
def test_nifti_mask_keeps_the_input_shape(server: Server, tmp_path: Path, shape) -> None:
    ref = np.asarray(nib.load(server.studies / "covid_002.nii.gz").dataobj)
    data = ref[:, :, 10] if len(shape) == 2 else ref[:, :, 10:18, None]
    affine = np.diag([2.2, 2.2, 5.0, 1.0])
    r = requests.post(f"{server.url}/infer/covid_mtl", data={"params": "{}"},
                      files={"file": ("scan.nii.gz", nifti_gz(data.astype(np.int16), affine), "application/gzip")},
                      timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    parts = {p.headers[b"Content-Disposition"].decode().split('name="')[1].split('"')[0]: p
             for p in MultipartDecoder.from_response(r).parts}
    mask_path = tmp_path / f"mask-{uuid.uuid4().hex}.nii.gz"
    mask_path.write_bytes(parts["image"].content)
    mask = nib.load(mask_path)
    assert mask.shape == tuple(shape)
    np.testing.assert_allclose(mask.affine, affine, atol=1e-4)


def test_info_shows_no_server_path(server: Server) -> None:
    text = requests.get(f"{server.url}/info/", timeout=30).text
    info = json.loads(text)
    assert info["models"]["covid_mtl"]["model"].startswith("lite-")  # a version, not a file
    for folder in (str(server.app_dir), str(server.studies), "site-packages", os.path.expanduser("~")):
        assert folder not in text, folder
