"""Bad input over real HTTP: every case gets a 4xx naming the problem, the server keeps serving, and the
datastore (files and datastore_v2.json) is byte-identical afterwards. The same files go through `covid-mtl analyze`.

One server for the module, started with a 2 MB upload limit (the sample CTs are ~0.5 MB, the DICOM series
1.3 MB) so oversized uploads are cheap to send.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import nibabel as nib
import numpy as np
import pytest
import requests

from covid_mtl.image import CLASSES, LABELS
from tests.app.bad_corpus import FILES, SERIES_EDITS, write_corpus
from tests.server import Server, copy_studies, quiet_env, running_server

TIMEOUT = 120
LIMIT_MB = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("bad_inputs")
    studies = copy_studies(work / "studies")
    env = quiet_env(work, COVID_MTL_MAX_UPLOAD_MB=str(LIMIT_MB))
    with running_server(studies, work, conf={"preload": "true"}, env=env) as srv:
        yield srv


def snapshot(studies: Path) -> dict[str, str]:
    """SHA-256 of every file in the studies folder (the lock file is MONAI Label's, not data)."""
    return {str(p.relative_to(studies)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(studies.rglob("*")) if p.is_file() and p.name != ".lock"}


# ----- requests ------------------------------------------------------------------------------------------------------
def infer(s: Server, params: dict | str | None = None, files=None, **query) -> requests.Response:
    data = {"params": params if isinstance(params, str) else json.dumps(params or {})}
    return requests.post(f"{s.url}/infer/{query.pop('model', 'covid_mtl')}", params={"output": "json", **query},
                         data=data, files=files, timeout=TIMEOUT)


def infer_file(name: str) -> Callable:
    return lambda s, c: infer(s, files={"file": (name, (c / name).read_bytes(), "application/octet-stream")})


def infer_session(folder: str) -> Callable:
    def send(s: Server, c: Path) -> requests.Response:
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted((c / folder).iterdir())]
        r = requests.put(f"{s.url}/session/", files=files, timeout=TIMEOUT)
        if r.status_code != 200:  # a series that cannot be read is refused when the session is created (422)
            assert "no readable CT series" in r.json()["detail"], r.text
            return r
        return infer(s, session_id=r.json()["session_id"])
    return send


def put_image(image: str | None, name: str, data: bytes | None = None) -> Callable:
    def send(s: Server, c: Path) -> requests.Response:
        payload = data if data is not None else (c / name).read_bytes()
        return requests.put(f"{s.url}/datastore/image", params={"image": image} if image else {},
                            files={"file": (name, payload, "application/octet-stream")},
                            data={"params": "{}"}, timeout=TIMEOUT)
    return send


def label_bytes(s: Server, image: str = "covid_002", value: int = 1, shape=None, region=(10, 20)) -> bytes:
    ref = nib.load(s.studies / f"{image}.nii.gz")
    data = np.zeros(shape or ref.shape, np.uint8)
    data[region[0]:region[1], region[0]:region[1], 2:4] = value
    return gzip.compress(nib.Nifti1Image(data, ref.affine).to_bytes(), mtime=0)


def put_label(image: str, make: Callable[[Server], bytes], params: dict | None = None, tag: str = "final",
              name: str = "label.nii.gz") -> Callable:
    return lambda s, c: requests.put(
        f"{s.url}/datastore/label", params={"image": image, "tag": tag},
        files={"label": (name, make(s), "application/octet-stream")},
        data={"params": json.dumps(params or {})}, timeout=TIMEOUT)


def chunked_upload(s: Server, c: Path) -> requests.Response:
    """A multipart body streamed without Content-Length: only counting bytes as they arrive can stop it."""
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.nii.gz\"\r\n"
               f"Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(3 * LIMIT_MB * 16):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    return requests.post(f"{s.url}/infer/covid_mtl", data=body(), timeout=TIMEOUT,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def big(n_mb: float = 3 * LIMIT_MB) -> bytes:
    return b"\0" * int(n_mb * 2**20)


# ----- the corpus ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    send: Callable[[Server, Path], requests.Response]
    status: int
    detail: str  # must appear in the JSON detail (case-insensitive); for 200, unused


FILE_DETAILS = {
    "dicom_corrupt.dcm": "no DICOM image", "dicom_truncated.dcm": "cannot decode pixel data",
    "dicom_no_pixels.dcm": "no pixel data", "dicom_mr.dcm": "MR series", "dicom_sr.dcm": "SR, no image",
    "nifti_truncated.nii.gz": "not a readable NIfTI", "nifti_zero_bytes.nii.gz": "empty",
    "nifti_header_only.nii": "not a readable NIfTI", "nifti_nan.nii.gz": "NaN or infinite",
    "nifti_inf.nii.gz": "NaN or infinite", "nifti_4d.nii.gz": "4D image", "png_1x1.png": "too small",
    "png_bomb.png": "too large", "png_truncated.png": "not a readable image",
    "text_named.nii.gz": "not a readable NIfTI", "scan_archive.zip": "unsupported file type .zip",
    "garbage.nrrd": "not a readable NRRD", "png_rgba.png": "", "png_16bit.png": "",
    "session_mixed_series": "holds 2 series", "session_missing_slice": "inconsistent slice spacing",
    "session_duplicate_slice": "share the same position",
}
assert set(FILE_DETAILS) == set(FILES) | set(SERIES_EDITS)

CASES = [
    *(Case(f"infer_{n}", infer_session(n) if n in SERIES_EDITS else infer_file(n), 200 if not d else 422, d)
      for n, d in FILE_DETAILS.items()),
    Case("datastore_put_bomb_png", put_image("bomb", "png_bomb.png"), 422, "too large"),
    Case("datastore_put_text_as_nifti", put_image("notes", "text_named.nii.gz"), 422, "not a readable NIfTI"),
    Case("datastore_put_id_traversal", put_image("../x", "png_rgba.png"), 400, "invalid image id"),
    Case("datastore_put_id_absolute", put_image("/srv/x", "png_rgba.png"), 400, "invalid image id"),
    Case("datastore_put_filename_traversal", put_image(None, "../../etc/.hidden.png", b"x"), 400, "invalid image id"),
    Case("datastore_get_traversal", lambda s, c: requests.get(
        f"{s.url}/datastore/image", params={"image": "../../etc/passwd"}, timeout=30), 400, "invalid image id"),
    Case("datastore_get_absolute", lambda s, c: requests.get(
        f"{s.url}/datastore/image", params={"image": "/etc/passwd"}, timeout=30), 400, "invalid image id"),
    Case("datastore_get_label_traversal", lambda s, c: requests.get(
        f"{s.url}/datastore/label", params={"label": "../covid_001", "tag": "final"}, timeout=30),
        400, "invalid label id"),
    Case("datastore_get_label_tag_traversal", lambda s, c: requests.get(
        f"{s.url}/datastore/label", params={"label": "covid_001", "tag": "../../.."}, timeout=30),
        400, "invalid label tag"),
    Case("label_id_traversal", put_label("../x", label_bytes), 400, "invalid image id"),
    Case("label_id_absolute", put_label("/etc/passwd", label_bytes), 400, "invalid image id"),
    Case("label_tag_traversal", put_label("covid_002", label_bytes, tag="../../x"), 400, "invalid label tag"),
    Case("label_unknown_image", put_label("no_such_image", label_bytes), 404, "not found"),
    Case("label_shape_differs", put_label("covid_002", lambda s: label_bytes(s, shape=(40, 30, 6))), 422, "shape"),
    Case("label_values_not_binary", put_label("covid_002", lambda s: label_bytes(s, value=3)), 422, "0 or 1"),
    Case("label_unknown_class", put_label("covid_002", label_bytes, {"classification": "flu"}), 422,
         "unknown classification"),
    Case("label_not_an_image", put_label("covid_002", lambda s: b"not a mask"), 422, "not a readable NIfTI"),
    Case("label_info_unknown_class", lambda s, c: requests.put(
        f"{s.url}/datastore/label/info", params={"label": "covid_001", "tag": "final"},
        data={"info": json.dumps({"classification": "flu"})}, timeout=30), 422, "unknown classification"),
    Case("image_info_unknown_image", lambda s, c: requests.put(
        f"{s.url}/datastore/image/info", params={"image": "no_such_image"}, data={"info": "{}"}, timeout=30),
        404, "not found"),
    Case("infer_image_absolute_path", lambda s, c: infer(s, image="/etc/passwd"), 400, "not a server path"),
    Case("infer_image_traversal", lambda s, c: infer(s, image="../sample_data/covid_001"), 400, "not a server path"),
    Case("infer_params_path", lambda s, c: infer(s, {"image": "/etc/passwd"}, image="covid_001"), 400,
         "not a server path"),
    Case("infer_params_fake_session",
         lambda s, c: infer(s, {"image": "/etc/passwd", "session": {}}, image="covid_001"), 400, "session store"),
    Case("infer_params_not_json", lambda s, c: infer(s, "{not json", image="covid_001"), 400, "not valid JSON"),
    Case("infer_unknown_image", lambda s, c: infer(s, image="no_such_image"), 404, "not found"),
    Case("infer_unknown_session", lambda s, c: infer(s, session_id=str(uuid.uuid4())), 400, "session_id"),
    Case("infer_no_input", lambda s, c: infer(s), 400, "no image"),
    Case("infer_unknown_model", lambda s, c: infer(s, model="covid_mtl_v9", image="covid_001"), 404,
         "unknown model"),
    Case("activelearning_unknown_strategy", lambda s, c: requests.post(
        f"{s.url}/activelearning/most_interesting", json={}, timeout=30), 404, "unknown strategy"),
    Case("train_unknown_model", lambda s, c: requests.post(f"{s.url}/train/resnet", json={}, timeout=30), 404,
         "unknown model"),
    Case("session_delete_traversal", lambda s, c: requests.delete(f"{s.url}/session/%2E%2E", timeout=30), 400,
         "invalid session id"),
    Case("oversized_infer_upload", lambda s, c: infer(s, files={"file": ("big.nii.gz", big())}), 413, "upload limit"),
    Case("oversized_datastore_image", put_image("big", "big.nii.gz", big()), 413, "upload limit"),
    Case("oversized_image_just_over", put_image("big", "big.nii.gz", big(1.1 * LIMIT_MB)), 413, "uploaded image"),
    Case("oversized_label", put_label("covid_002", lambda s: big()), 413, "upload limit"),
    Case("oversized_session", lambda s, c: requests.put(
        f"{s.url}/session/", files=[("files", (f"IM{i}.dcm", big(0.6 * LIMIT_MB))) for i in range(3)],
        timeout=TIMEOUT), 413, "upload limit"),
    Case("oversized_chunked_stream", chunked_upload, 413, "upload limit"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_server_answers_bad_input_with_4xx(server: Server, corpus: Path, case: Case) -> None:
    before = snapshot(server.studies)
    r = case.send(server, corpus)
    assert r.status_code == case.status, r.text[:2000]
    if case.status == 200:  # the two valid PNG flavours
        result = r.json()
        assert result["label"] in LABELS and result["shape"] == [1, 160, 160]
    else:
        detail = r.json()["detail"]
        assert case.detail.lower() in detail.lower(), detail
        assert str(server.studies) not in detail and "/tmp/" not in detail  # no server folders in replies
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
    assert snapshot(server.studies) == before
    assert server.alive()


def test_concurrent_saves_of_one_label_leave_one_complete_upload(server: Server) -> None:
    uploads = [(label_bytes(server, region=(10 + 3 * i, 20 + 3 * i)), CLASSES[i % 3]) for i in range(6)]
    barrier, results = threading.Barrier(len(uploads)), [None] * len(uploads)

    def save(i: int) -> None:
        data, label = uploads[i]
        barrier.wait()
        results[i] = put_label("covid_002", lambda s: data, {"classification": label}, name="covid_002.nii.gz")(
            server, Path())

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(uploads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert [r.status_code for r in results] == [200] * len(uploads), [r.text for r in results]
    stored = (server.studies / "labels" / "final" / "covid_002.nii.gz").read_bytes()
    winner = [i for i, (data, _) in enumerate(uploads) if data == stored]
    assert len(winner) == 1, "the stored label is not one of the complete uploads"
    datastore = json.loads((server.studies / "datastore_v2.json").read_text())
    info = datastore["objects"]["covid_002"]["labels"]["final"]["info"]
    assert info["classification"] == uploads[winner[0]][1]  # the file and its info come from the same save
    assert not [p for p in (server.studies / "labels" / "final").iterdir() if p.name.startswith(".")]


# ----- the same files through the command line -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(corpus: Path, tmp_path_factory) -> tuple[int, dict[str, dict]]:
    out = tmp_path_factory.mktemp("cli")
    cli = Path(sys.executable).parent / "covid-mtl"
    proc = subprocess.run([str(cli), "analyze", *[str(corpus / n) for n in FILE_DETAILS], "--out", str(out),
                           "--no-progress", "--no-dicom-seg"], capture_output=True, text=True, timeout=900)
    assert (out / "summary.csv").exists(), proc.stderr[-3000:]
    with open(out / "summary.csv", newline="") as f:
        rows = {Path(row["input"]).name: row for row in csv.DictReader(f)}
    return proc.returncode, rows


@pytest.mark.parametrize("name", list(FILE_DETAILS), ids=list(FILE_DETAILS))
def test_cli_reports_bad_file(cli_run, name: str) -> None:
    returncode, rows = cli_run
    assert returncode == 1  # some cases failed, the batch still finished
    row = rows[name]
    if not FILE_DETAILS[name]:
        assert row["status"] == "ok" and row["label"] in LABELS, row
    else:
        assert row["status"] == "error" and FILE_DETAILS[name].lower() in row["error"].lower(), row
