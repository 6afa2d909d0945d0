"""Crashes do not corrupt the datastore or the served model: kill -9 during label saves and during training,
restart on the same studies and app folders, and everything still reads; a training run that fails leaves the
served model alone and says why in GET /train/.

Three servers in sequence on one studies folder and one app folder (tests run in file order and share them).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from covid_mtl.nets.checkpoint import load_checkpoint
from covid_mtl.image import CLASSES, LABELS
from covid_mtl.io import read_image
from tests.server import Server, Site, box_label, stop

TIMEOUT = 120
TINY_TRAINING = {"max_epochs": 1, "steps_per_epoch": 2, "val_steps": 1, "train_batch_size": 2}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("durability"))
    yield site
    if site.server is not None:
        stop(site.server)


def label_upload(studies: Path, image: str, offset: int) -> bytes:
    return box_label(studies, image, (slice(30 + offset, 90 + offset), slice(40, 100), slice(4, 28)))


def save_label(server: Server, image: str, data, classification: str) -> requests.Response:
    return requests.put(f"{server.url}/datastore/label", params={"image": image, "tag": "final"},
                        files={"label": (f"{image}.nii.gz", data, "application/octet-stream")},
                        data={"params": json.dumps({"classification": classification})}, timeout=TIMEOUT)


def infer_json(server: Server, image: str) -> dict:
    r = requests.post(f"{server.url}/infer/covid_mtl", params={"image": image, "output": "json"},
                      data={"params": "{}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def check_datastore_intact(studies: Path) -> dict:
    """Every label file reads, no staging file is left, and datastore_v2.json parses and points at real files."""
    final = studies / "labels" / "final"
    for path in final.iterdir():
        assert not path.name.startswith("."), f"left-over temporary file {path.name}"
        read_image(path)  # raises CovidMTLError on a partial file
    datastore = json.loads((studies / "datastore_v2.json").read_text())
    for image_id, obj in datastore["objects"].items():
        for tag, label in obj["labels"].items():
            assert (studies / "labels" / tag / label["info"]["name"]).is_file(), (image_id, tag)
    return datastore


def model_state(app_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((app_dir / "model").glob("*.pt"))}


def wait_train(server: Server, until, timeout_s: float = 400) -> dict:
    deadline, status = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        r = requests.get(f"{server.url}/train/", timeout=30)
        status = r.json() if r.status_code == 200 else {}
        if until(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"training did not reach the expected state: {json.dumps(status)[-3000:]}")


def test_kill_during_label_saves_leaves_complete_files(site: Site) -> None:
    server = site.start()
    uploads = {image: [(label_upload(site.studies, image, k), CLASSES[k % 3]) for k in range(3)]
               for image in ("covid_002", "normal_002")}
    saved, stop_saving = [], threading.Event()

    def saver(image: str, k: int) -> None:
        while not stop_saving.is_set():
            data, label = uploads[image][k % 3]
            try:
                if save_label(server, image, data, label).status_code == 200:
                    saved.append(image)
            except requests.RequestException:
                return  # the server was killed
            k += 1

    threads = [threading.Thread(target=saver, args=(image, k)) for image in uploads for k in range(2)]
    threads.append(threading.Thread(target=slow_save, args=(server, "covid_002", uploads["covid_002"][0][0])))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(saved) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    site.kill()  # while the savers keep sending
    stop_saving.set()
    for t in threads:
        t.join(TIMEOUT)
    assert len(saved) >= 6, "the saves never got going"
    # what a kill in the middle of the copy leaves: a staging file next to the label (removed at start)
    final = site.studies / "labels" / "final"
    (final / ".covid-mtl-staging-killed.tmp").write_bytes(uploads["covid_002"][0][0][:5000])

    server = site.start()
    datastore = check_datastore_intact(site.studies)
    for image, versions in uploads.items():
        stored = (site.studies / "labels" / "final" / f"{image}.nii.gz").read_bytes()
        match = [label for data, label in versions if data == stored]
        assert match, f"{image}: the stored label is none of the uploads"
        assert datastore["objects"][image]["labels"]["final"]["info"]["classification"] == match[0]
    assert infer_json(server, "covid_002")["label"] in LABELS


def slow_save(server: Server, image: str, data: bytes) -> None:
    """A label upload still arriving (256 bytes per 100 ms, chunked) when the server dies."""
    boundary = "covid-mtl-slow-upload"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"label\"; filename=\"{image}.nii.gz\"\r\n"
               f"Content-Type: application/octet-stream\r\n\r\n").encode()
        for i in range(0, len(data), 256):
            yield data[i:i + 256]
            time.sleep(0.1)
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        requests.put(f"{server.url}/datastore/label", params={"image": image, "tag": "final"}, data=body(),
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=TIMEOUT)
    except requests.RequestException:
        pass  # the server was killed mid-upload, as intended


def test_kill_during_training_keeps_the_served_model(site: Site) -> None:
    server = site.server
    before = infer_json(server, "covid_001")["model_version"]
    r = requests.post(f"{server.url}/train/covid_mtl", json=TINY_TRAINING, timeout=30)
    assert r.status_code == 200, r.text
    status = wait_train(server, lambda s: s.get("status") in ("DONE", "ERROR", "STOPPED") or (
        s.get("status") == "RUNNING" and any("fine-tuning" in line or "Epoch" in line for line in s["details"])))
    assert status.get("status") == "RUNNING", f"training ended before it could be killed: {status}"
    site.kill()

    for name in model_state(site.app_dir):  # whatever training left must be a whole checkpoint
        load_checkpoint(site.app_dir / "model" / name) if name == "covid_mtl.pt" else None
    server = site.start()
    check_datastore_intact(site.studies)
    after = infer_json(server, "covid_001")["model_version"]
    published = site.app_dir / "model" / "covid_mtl.pt"
    assert after == before or published.is_file(), "the model changed without a published checkpoint"


def test_failing_training_leaves_model_untouched_and_reports_why(site: Site) -> None:
    server = site.server
    models_before = model_state(site.app_dir)
    version_before = infer_json(server, "covid_001")["model_version"]
    # a training image (the manifest's test-split images never reach training: covid_mtl.train.selection)
    (site.studies / "labels" / "final" / "normal_001.nii.gz").write_bytes(b"\x1f\x8b corrupted on disk")
    r = requests.post(f"{server.url}/train/covid_mtl", json=TINY_TRAINING, timeout=30)
    assert r.status_code == 200, r.text
    status = wait_train(server, lambda s: s.get("status") in ("DONE", "ERROR", "STOPPED"))
    assert status["status"] == "ERROR", json.dumps(status)[-3000:]
    assert any("normal_001" in line for line in status["details"]), status["details"]
    assert model_state(site.app_dir) == models_before
    assert infer_json(server, "covid_001")["model_version"] == version_before
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
