"""HTTP client pieces that need no covid-mtl server: multipart parsing of a hand-built body, URL handling, and the
message a radiologist sees when nothing listens at the server address (a real closed loopback port)."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import slicer

from CovidMTLLib.client import CovidMTLClient, CovidMTLLogicError, parse_multipart
from CovidMTLLib.logic import CovidMTLLogic


def closed_port_url() -> str:
    with socket.socket() as s:  # bound then released: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_multipart_parts_come_back_byte_for_byte():
    boundary = "b0a4f1c9e2d3"
    # Binary payload with every byte value, CR/LF pairs and a fake boundary-like line: nothing may be altered.
    payload = bytes(range(256)) + b"\r\n--b0a4f1c9e2d\r\n\n\r" + b"\x1f\x8b\x08\x00" * 50 + b"\r\n"
    params = {"label": "covid", "probabilities": {"covid": 0.9, "normal": 0.05, "other": 0.05}}
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="params"\r\n'
        "Content-Type: application/json\r\n\r\n"
        f"{json.dumps(params)}\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="image"; filename="covid_mtl_x1.nii.gz"\r\n'
        "Content-Type: application/gzip\r\n\r\n"
    ).encode() + payload + f"\r\n--{boundary}--\r\n".encode()

    parts = parse_multipart(body, f"multipart/form-data; boundary={boundary}")

    assert set(parts) == {"params", "image"}
    assert json.loads(parts["params"].data) == params
    assert parts["image"].filename == "covid_mtl_x1.nii.gz"
    assert parts["image"].data == payload


def test_multipart_without_boundary_is_a_readable_error():
    with pytest.raises(CovidMTLLogicError, match="without a boundary"):
        parse_multipart(b"--x\r\n\r\n--x--", "multipart/form-data")


@pytest.mark.parametrize("typed, expected", [
    ("127.0.0.1:8000", "http://127.0.0.1:8000"),
    (" http://server.local:8000/ ", "http://server.local:8000"),
    ("https://a.example/monai", "https://a.example/monai"),
    ("", "http://127.0.0.1:8000"),
])
def test_server_url_is_normalised(typed, expected):
    assert CovidMTLClient(typed).url == expected


def test_closed_port_says_cannot_reach_and_connection_refused():
    url = closed_port_url()
    with pytest.raises(CovidMTLLogicError) as caught:
        CovidMTLClient(url).info()
    assert str(caught.value).startswith(f"Cannot reach the covid-mtl server at {url}: connection refused")


def test_closed_port_through_the_idle_thread_gives_the_same_message():
    """With an idle hook the request runs in a worker thread; its error must still reach the caller as text."""
    client = CovidMTLClient(closed_port_url(), idle=lambda: None)
    with pytest.raises(CovidMTLLogicError, match="connection refused"):
        client.next_sample("uncertainty")


def test_classify_with_server_down_changes_nothing_in_the_scene(scene, oblique_ct):
    logic = CovidMTLLogic(scene, closed_port_url())
    nodes_before = scene.GetNumberOfNodes()
    with pytest.raises(CovidMTLLogicError, match="Cannot reach the covid-mtl server"):
        logic.classify_and_segment(oblique_ct)
    assert scene.GetNumberOfNodes() == nodes_before
    assert oblique_ct.GetAttribute("CovidMTL.ImageId") is None


def test_classify_refuses_a_labelmap_or_no_volume(scene, oblique_ct):
    logic = CovidMTLLogic(scene, closed_port_url())
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "lbl")
    slicer.util.updateVolumeFromArray(labelmap, np.zeros((2, 2, 2), np.uint8))
    for node in (None, labelmap):
        with pytest.raises(CovidMTLLogicError, match="Select a CT volume"):
            logic.classify_and_segment(node)


def test_submit_without_a_class_says_choose_one(scene, oblique_ct):
    logic = CovidMTLLogic(scene, closed_port_url())
    for nothing in ("", None):
        with pytest.raises(CovidMTLLogicError, match="Choose the class of this case"):
            logic.submit_correction(oblique_ct, nothing)


def test_submit_without_segmentation_says_classify_first(scene, oblique_ct):
    logic = CovidMTLLogic(scene, closed_port_url())
    with pytest.raises(CovidMTLLogicError, match="run Classify & Segment first"):
        logic.submit_correction(oblique_ct, "covid")


def test_bearer_token_reaches_the_server(monkeypatch):
    """With MONAI Label auth on, every request must carry the token (a real loopback HTTP server records it)."""
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            seen.append(self.headers.get("Authorization", ""))
            body = json.dumps({"models": {"covid_mtl": {}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        CovidMTLClient(url, token="abc.def.ghi").info()
        monkeypatch.setenv("COVID_MTL_TOKEN", "from-env")
        CovidMTLClient(url).info()
        monkeypatch.delenv("COVID_MTL_TOKEN")
        CovidMTLClient(url).info()
    finally:
        server.shutdown()
    assert seen == ["Bearer abc.def.ghi", "Bearer from-env", ""]
