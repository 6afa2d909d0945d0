"""The MONAI Label app over real HTTP: a real `monailabel start_server` on a loopback port.

One server for the module (starting one costs ~15 s); tests run in file order and the later ones build on
the datastore changes of the earlier ones (a saved label, then training on it).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from requests_toolbelt.multipart.decoder import MultipartDecoder

from covid_mtl.image import CLASSES
from covid_mtl.io import read_image
from tests.server import copy_studies, running_server

TIMEOUT = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("app_server")
    studies = copy_studies(work / "studies")
    with running_server(studies, work, conf={"preload": "true"}) as srv:
        yield srv


def infer(server, params: dict | None = None, files=None, **query) -> tuple[dict, bytes, str]:
    r = requests.post(f"{server.url}/infer/covid_mtl", params=query, data={"params": json.dumps(params or {})},
                      files=files, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    parts = {}
    for part in MultipartDecoder.from_response(r).parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        name = disposition.split('name="')[1].split('"')[0]
        filename = disposition.split('filename="')[1].split('"')[0] if 'filename="' in disposition else ""
        parts[name] = (part.content, filename)
    result = json.loads(parts["params"][0])
    mask_bytes, mask_name = parts["image"]
    return result, mask_bytes, mask_name


def check_result(result: dict) -> None:
    """The reply says only what the served model was trained to say (issue 12): P(covid) and covid/non-covid
    at its validated cut-off for a COVID-vs-rest model, the three classes for a three-class one."""
    decision = result["decision"]
    assert all(0.0 <= p <= 1.0 for p in result["probabilities"].values())
    if decision["binary"]:
        assert set(result["probabilities"]) == {"covid"}
        p = result["probabilities"]["covid"]
        assert result["label"] == ("covid" if p >= decision["threshold"] else "non-covid")
        assert result["statement"].startswith("COVID-19 vs non-COVID") and f"{p:.2f}" in result["statement"]
    else:
        assert result["label"] in CLASSES and set(result["probabilities"]) == set(CLASSES)
        assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
        assert result["statement"].startswith("COVID-19 / normal / other infection")
    assert result["model_version"] and result["aggregation"]["rule"]


def saved(tmp_path: Path, data: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_info_lists_tasks(server) -> None:
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    assert "covid_mtl" in info["models"] and "covid_mtl" in info["trainers"]
    assert {"uncertainty", "random"} <= set(info["strategies"])
    assert "covid_mtl_uncertainty" in info["scoring"]
    # what the Slicer module and the web page read instead of hard-coding (issue 22)
    model = info["models"]["covid_mtl"]
    assert model["classes"] == ["covid", "normal", "other"]
    assert model["correction_classes"] == ["covid", "normal", "other", "non-covid"]
    assert model["window"] == {"width": 1500.0, "level": -600.0}


def test_infer_nifti_volume(server, tmp_path) -> None:
    result, mask_bytes, name = infer(server, image="covid_001")
    check_result(result)
    mask = nib.load(saved(tmp_path, mask_bytes, name))
    image = nib.load(server.studies / "covid_001.nii.gz")
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(mask.dataobj)).tolist()) <= {0, 1}
    assert result["lesion_volume_ml"] is not None and result["lesion_volume_ml"] >= 0
    assert result["shape"] == list(reversed(image.shape))


def test_same_scan_stored_three_ways_gets_the_same_answer_over_http(server, tmp_path) -> None:
    """Issue 13, item 6, through the server: the sample scan as stored (RAS), flipped to LPS and stored
    sagittally (x and z swapped), each uploaded as a file with a true affine."""
    ref = nib.load(server.studies / "covid_001.nii.gz")
    data, affine = np.asarray(ref.dataobj), ref.affine
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    variants = {"ras": (data, affine), "lps": (data[::-1, ::-1], affine @ flip),
                "sagittal": (data.transpose(2, 1, 0), affine[:, [2, 1, 0, 3]])}
    replies = {}
    for name, (array, aff) in variants.items():
        path = tmp_path / f"covid_001_{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array), aff), path)
        result, mask_bytes, mask_name = infer(server, files={"file": (path.name, path.read_bytes(), "application/gzip")})
        mask = nib.load(saved(tmp_path, mask_bytes, f"{name}_{mask_name}"))
        assert mask.shape == array.shape  # the mask comes back on the file's own grid
        replies[name] = result
        assert result["geometry"]["orientation"] == "LPS"
        assert ("warning" in result["geometry"]) == (name == "sagittal")
        assert any(w["name"] == "resliced" for w in result["warnings"]) == (name == "sagittal")
    base = replies["ras"]
    for name, result in replies.items():
        assert result["label"] == base["label"], name
        assert result["probabilities"]["covid"] == pytest.approx(base["probabilities"]["covid"], abs=0.02), name
        assert result["lesion_volume_ml"] == pytest.approx(base["lesion_volume_ml"], rel=0.05, abs=0.05), name


def test_infer_png_slice(server, tmp_path) -> None:
    png = sorted(p.name for p in server.studies.glob("*.png"))[0]
    result, mask_bytes, name = infer(server, image=png[: -len(".png")])
    check_result(result)
    mask = read_image(saved(tmp_path, mask_bytes, name))
    assert mask.shape == read_image(server.studies / png).shape
    assert result["lesion_volume_ml"] is None  # a PNG has no spacing


def test_infer_uploaded_dicom_series(server, tmp_path) -> None:
    series = next((server.studies / "dicom").iterdir())
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(series.glob("*.dcm"))]
    r = requests.put(f"{server.url}/session/", files=files, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    result, mask_bytes, name = infer(server, session_id=r.json()["session_id"])
    check_result(result)
    mask = read_image(saved(tmp_path, mask_bytes, name))
    assert mask.shape == read_image(series).shape


def test_bad_requests_get_4xx_and_server_keeps_serving(server, tmp_path) -> None:
    r = requests.post(f"{server.url}/infer/covid_mtl", params={"image": "no_such_image"}, timeout=TIMEOUT)
    assert 400 <= r.status_code < 500 and "no_such_image" in r.text
    r = requests.post(f"{server.url}/infer/covid_mtl", files={"file": ("scan.nii.gz", b"not a nifti", "application/gzip")},
                      timeout=TIMEOUT)
    assert 400 <= r.status_code < 500 and "NIfTI" in r.json()["detail"]
    before = sorted(p.name for p in server.studies.iterdir())
    r = requests.put(f"{server.url}/datastore/image", params={"image": "broken"},
                     files={"file": ("broken.nii.gz", b"\x1f\x8b garbage", "application/gzip")}, timeout=TIMEOUT)
    assert 400 <= r.status_code < 500, r.text
    assert sorted(p.name for p in server.studies.iterdir()) == before
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200


def _label_bytes(shape_xyz, affine, value: int = 1) -> bytes:
    data = np.zeros(shape_xyz, np.uint8)
    data[10:20, 10:20, 2:4] = value
    return nib.Nifti1Image(data, affine).to_bytes()


def test_save_label_with_class_and_refuse_bad_ones(server) -> None:
    image = nib.load(server.studies / "normal_002.nii.gz")
    url = f"{server.url}/datastore/label"
    good = _label_bytes(image.shape, image.affine)
    r = requests.put(url, params={"image": "normal_002", "tag": "final"},
                     files={"label": ("normal_002.nii", good, "application/octet-stream")},
                     data={"params": json.dumps({"classification": "other"})}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    info = requests.get(f"{server.url}/datastore/label/info", params={"label": "normal_002", "tag": "final"},
                        timeout=30).json()
    assert info["classification"] == "other"
    assert (server.studies / "labels" / "final" / "normal_002.nii").exists()
    cases = {
        "shape": (_label_bytes((40, 30, 6), np.eye(4)), {"classification": "covid"}, "shape"),
        "class": (good, {"classification": "flu"}, "classification"),
        "values": (_label_bytes(image.shape, image.affine, value=3), {}, "0 or 1"),
    }
    for name, (data, params, message) in cases.items():
        r = requests.put(url, params={"image": "covid_002", "tag": "final"},
                         files={"label": ("covid_002.nii", data, "application/octet-stream")},
                         data={"params": json.dumps(params)}, timeout=TIMEOUT)
        assert 400 <= r.status_code < 500 and message in r.json()["detail"], (name, r.text)
    assert not list((server.studies / "labels" / "final").glob("covid_002*"))


def test_uncertainty_strategy_returns_unlabeled_image(server) -> None:
    r = requests.post(f"{server.url}/activelearning/uncertainty", json={}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    chosen = r.json()["id"]
    labeled = {p.name.split(".")[0] for p in (server.studies / "labels" / "final").iterdir()}
    assert chosen not in labeled
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": chosen}, timeout=30).json()
    assert info["covid_mtl_uncertainty"]["score"] == pytest.approx(r.json()["uncertainty"])


def test_short_training_publishes_a_new_model(server) -> None:
    before = requests.post(f"{server.url}/infer/covid_mtl", params={"image": "covid_001", "output": "json"},
                           timeout=TIMEOUT).json()["model_version"]
    r = requests.post(f"{server.url}/train/covid_mtl", json={"max_epochs": 2, "steps_per_epoch": 3,
                                                             "val_steps": 2, "train_batch_size": 2}, timeout=30)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 400
    status = {}
    while time.monotonic() < deadline:
        status = requests.get(f"{server.url}/train/", timeout=30).json()
        if status.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(2)
    assert status.get("status") == "DONE", json.dumps(status)[-3000:]
    stats = requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["covid_mtl"]
    assert stats["epoch"] == 2 and "best_metric" in stats
    after = requests.post(f"{server.url}/infer/covid_mtl", params={"image": "covid_001", "output": "json"},
                          timeout=TIMEOUT).json()
    assert after["model_version"] != before
    # the sample studies carry covid, normal and other classes: the retrained model names all three (issue 12)
    assert after["decision"]["classes"] == list(CLASSES) and not after["decision"]["binary"]
    assert set(after["probabilities"]) == set(CLASSES)
    check_result(after)
