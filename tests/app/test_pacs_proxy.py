"""MONAI Label's DICOMweb proxy in front of a real Orthanc: a viewer's reads pass, nothing else does.

A real Orthanc (``pacs.orthanc``, as ``make pacs``) holds the sample CT series; real covid-mtl servers serve it over
DICOMweb, one with authentication off and one with it on (``tests.realm``, a signed-token stand-in whose public key
the server fetches as it would Keycloak's). Every request of the hostile corpus is sent byte for byte over a socket
(no client library normalises its path), and what Orthanc holds is then read through Orthanc's own REST API: the
same instances, no new change in its change log, not restarted.
"""
from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlsplit

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from pacs.orthanc import dicom_files
from tests.pacs_site import SAMPLE_SERIES, pacs_site, server_env
from tests.realm import ADMIN, ANNOTATOR, USER, Realm, bearer
from tests.server import app_module, running_server

TIMEOUT = 120
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(url: str, method: str, target: str, headers: Optional[dict] = None, body: bytes = b"",
                declared_length: Optional[int] = None) -> Reply:
    """``method target`` sent exactly as written (no normalisation of dots, slashes or encodings)."""
    parts = urlsplit(url)
    head = {"Host": parts.netloc, "Connection": "close", **(headers or {})}
    if body or declared_length is not None or method in ("POST", "PUT"):
        head["Content-Length"] = str(declared_length if declared_length is not None else len(body))
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())


@dataclass
class Site:
    orthanc: object
    open_url: str  # a server with authentication off
    auth_url: str  # the same PACS behind a server with authentication on
    realm: Realm
    study: str
    series: str
    instance: str
    logs: list[Path]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("pacs_proxy")
    realm = Realm()
    first = pydicom.dcmread(dicom_files(SAMPLE_SERIES)[0], stop_before_pixels=True)
    try:
        with pacs_site(work, serve=False) as pacs:
            env = server_env(work, *pacs.orthanc.auth, pacs.cache)
            (work / "open").mkdir()
            (work / "auth").mkdir()
            with running_server(pacs.orthanc.dicomweb, work / "open", env=env) as open_server, \
                    running_server(pacs.orthanc.dicomweb, work / "auth", env={**env, **realm.server_env()},
                                   headers=bearer(realm.token(USER))) as auth_server:
                yield Site(pacs.orthanc, open_server.url, auth_server.url, realm, str(first.StudyInstanceUID),
                           str(first.SeriesInstanceUID), str(first.SOPInstanceUID),
                           [open_server.log_path, auth_server.log_path])
    finally:
        realm.stop()


def pacs_state(orthanc) -> dict:
    """What must not change: the instances, the change log's last entry, and how often Orthanc has started."""
    return {"instances": sorted(orthanc.get("/instances").json()),
            "last_change": orthanc.get("/changes", params={"limit": 0}).json()["Last"],
            "starts": orthanc.log().count("Orthanc has started"),
            "alive": orthanc.process.poll() is None}


def a_new_ct_file(tmp: Path) -> bytes:
    ds = pydicom.dcmread(dicom_files(SAMPLE_SERIES)[0])
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp / "new.dcm"
    ds.save_as(path)
    return path.read_bytes()


def stow_body(dicom: bytes) -> tuple[bytes, dict]:
    boundary = "covidmtlboundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + dicom
            + f"\r\n--{boundary}--\r\n".encode())
    return body, {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}


def hostile_corpus(site: Site, dicom: bytes, orthanc_port: int) -> list[tuple]:
    """(name, method, target, headers, body, declared length): traversal in every encoding found, writes, Orthanc
    REST calls, STOW, oversized bodies, header injection."""
    study_ids = json.dumps({"Resources": site.orthanc.get("/studies").json()})
    stow, stow_headers = stow_body(dicom)
    s, r, i = site.study, site.series, site.instance
    js = {"Content-Type": "application/json"}
    return [
        ("dot-dot, slash encoded", "GET", "/proxy/dicom/..%2Fsystem", {}, b"", None),
        ("dots encoded", "GET", "/proxy/dicom/%2E%2E/patients", {}, b"", None),
        ("backslash encoded", "GET", "/proxy/dicom/..%5Csystem", {}, b"", None),
        ("dots and slash double-encoded", "GET", "/proxy/dicom/qido/%252E%252E%252Fsystem", {}, b"", None),
        ("triple-encoded", "GET", "/proxy/dicom/wado/%25252E%25252E%25252Fpatients", {}, b"", None),
        ("lower-case encoding", "GET", "/proxy/dicom/qido/%2e%2e%2f%2e%2e%2fstatistics", {}, b"", None),
        ("literal dot-dot", "GET", "/proxy/dicom/wado/../../system", {}, b"", None),
        ("dot-dot after a valid prefix", "GET", f"/proxy/dicom/qido/studies/{s}/..%2F..%2F..%2Fpatients", {}, b"",
         None),
        ("single dot segments", "GET", "/proxy/dicom/qido/./studies/./", {}, b"", None),
        ("overlong UTF-8 slash", "GET", "/proxy/dicom/qido/..%c0%afsystem", {}, b"", None),
        ("NUL byte", "GET", "/proxy/dicom/qido/studies%00/../system", {}, b"", None),
        ("//host", "GET", f"/proxy/dicom/qido//127.0.0.1:{orthanc_port}/system", {}, b"", None),
        ("absolute URL", "GET", f"/proxy/dicom/qido/http:%2F%2F127.0.0.1:{orthanc_port}%2Fsystem", {}, b"", None),
        ("encoded leading slash", "GET", "/proxy/dicom/wado/%2Fsystem", {}, b"", None),
        ("semicolon path parameter", "GET", "/proxy/dicom/qido/studies;/../../system", {}, b"", None),
        ("CR LF in the path (header injection)", "GET", "/proxy/dicom/qido/studies%0D%0AX-Injected:%201", {}, b"",
         None),
        ("Orthanc REST without an operation", "GET", "/proxy/dicom/system", {}, b"", None),
        ("not a DICOMweb resource", "GET", "/proxy/dicom/qido/tools/find", {}, b"", None),
        ("STOW-RS", "POST", "/proxy/dicom/stow/studies", stow_headers, stow, None),
        ("STOW-RS through wado", "POST", "/proxy/dicom/wado/studies", stow_headers, stow, None),
        ("upload to Orthanc's REST API", "POST", "/proxy/dicom/..%2Finstances", {}, dicom, None),
        ("bulk delete", "POST", "/proxy/dicom/wado/..%2F..%2Ftools%2Fbulk-delete", js, study_ids.encode(), None),
        ("reset", "POST", "/proxy/dicom/..%2Ftools%2Freset", {}, b"", None),
        ("anonymize", "POST", f"/proxy/dicom/qido/..%2F..%2Fstudies%2F{site.orthanc.get('/studies').json()[0]}"
                              f"%2Fanonymize", js, b"{}", None),
        ("DELETE a study", "DELETE", f"/proxy/dicom/wado/studies/{s}", {}, b"", None),
        ("PUT", "PUT", f"/proxy/dicom/wado/studies/{s}", {}, dicom, None),
        ("oversized body", "POST", "/proxy/dicom/stow/studies", stow_headers, b"", 50 * 2**30),
        ("dot-dot after frames", "GET", f"/proxy/dicom/wado/studies/{s}/series/{r}/instances/{i}/frames/1/"
                                        f"..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Ftools%2Freset", {}, b"", None),
    ]


def test_hostile_proxy_requests_are_refused_and_the_pacs_is_unchanged(site: Site, tmp_path: Path) -> None:
    before = pacs_state(site.orthanc)
    corpus = hostile_corpus(site, a_new_ct_file(tmp_path), urlsplit(site.orthanc.url).port)
    assert len(corpus) >= 15
    for url, headers in ((site.open_url, {}), (site.auth_url, bearer(site.realm.token(ADMIN, ANNOTATOR, USER)))):
        for name, method, target, extra, body, declared in corpus:
            reply = raw_request(url, method, target, {**headers, **extra}, body, declared)
            assert reply.status in (400, 403), f"{name}: {method} {target} -> {reply.status} {reply.body[:300]!r}"
            assert "detail" in json.loads(reply.body), name  # this server's refusal, not something the PACS said
            assert "www-authenticate" not in reply.headers, name
    assert pacs_state(site.orthanc) == before
    log = site.logs[0].read_text(errors="replace")
    assert "DICOMweb proxy refused POST '/proxy/dicom/wado/..%2F..%2Ftools%2Fbulk-delete'" in log


def viewer_reads(site: Site, url: str, headers: dict) -> list[requests.Response]:
    """What OHIF asks for to list, open and show a study: the study list, the series' metadata, a frame."""
    root = f"{url}/proxy/dicom"
    return [
        requests.get(f"{root}/qido/studies", params={"limit": 101, "offset": 0, "fuzzymatching": "false",
                                                     "includefield": "00081030,00080060"},
                     headers=headers, timeout=TIMEOUT),
        requests.get(f"{root}/qido/studies/{site.study}/series", headers=headers, timeout=TIMEOUT),
        requests.get(f"{root}/wado/studies/{site.study}/series/{site.series}/metadata", headers=headers,
                     timeout=TIMEOUT),
        requests.get(f"{root}/wado/studies/{site.study}/series/{site.series}/instances/{site.instance}/frames/1",
                     headers={**headers, "Accept": FRAME_ACCEPT}, timeout=TIMEOUT),
    ]


def test_a_viewers_reads_pass(site: Site) -> None:
    before = pacs_state(site.orthanc)
    studies, series, metadata, frame = viewer_reads(site, site.open_url, {})
    assert studies.status_code == 200 and site.study in studies.text, studies.text[:300]
    assert series.status_code == 200 and site.series in series.text
    assert metadata.status_code == 200 and site.instance in metadata.text
    ds = pydicom.dcmread(dicom_files(SAMPLE_SERIES)[0], stop_before_pixels=True)
    assert frame.status_code == 200 and frame.headers["content-type"].startswith("multipart/related")
    assert len(frame.content) >= ds.Rows * ds.Columns * ds.BitsAllocated // 8
    unknown = requests.get(f"{site.open_url}/proxy/dicom/qido/studies/1.2.3.4/series", timeout=TIMEOUT)
    assert unknown.status_code < 500  # the PACS's own answer for an unknown study, not a server fault
    assert pacs_state(site.orthanc) == before


def test_with_authentication_on_proxy_reads_need_a_token(site: Site) -> None:
    for headers in ({}, bearer(site.realm.token(USER, expires_in=-60)), bearer("not-a-token")):
        for reply in viewer_reads(site, site.auth_url, headers):
            assert reply.status_code == 401, (headers, reply.status_code)
    for reply in viewer_reads(site, site.auth_url, bearer(site.realm.token(USER))):
        assert reply.status_code == 200, reply.text[:300]


def test_pacs_credentials_never_leave_the_server(site: Site, tmp_path: Path) -> None:
    user, password = site.orthanc.auth
    seen = []
    for reply in viewer_reads(site, site.open_url, {}):
        seen += [reply.content, json.dumps(dict(reply.headers)).encode()]
    for name, method, target, extra, body, declared in hostile_corpus(site, a_new_ct_file(tmp_path), 1):
        reply = raw_request(site.open_url, method, target, extra, body, declared)
        seen += [reply.body, json.dumps(reply.headers).encode()]
    for path in ("/info/", "/datastore/?output=all", "/auth/"):
        reply = requests.get(site.open_url + path, timeout=TIMEOUT)
        seen += [reply.content, json.dumps(dict(reply.headers)).encode()]
    seen += [path.read_bytes() for path in site.logs]
    secret = password.encode()
    assert not [s[:200] for s in seen if secret in s]
    assert not any(f"{user}:{password}".encode() in s for s in seen)


def test_a_pacs_that_refuses_the_servers_credentials_is_a_502_without_a_login_prompt(tmp_path: Path) -> None:
    with pacs_site(tmp_path, serve=False) as pacs:
        env = server_env(tmp_path, pacs.orthanc.auth[0], "wrong-password-123", pacs.cache)
        with running_server(pacs.orthanc.dicomweb, tmp_path, env=env) as server:
            reply = requests.get(f"{server.url}/proxy/dicom/qido/studies", timeout=TIMEOUT)
            assert reply.status_code == 502 and "credentials" in reply.json()["detail"]
            assert "www-authenticate" not in {k.lower() for k in reply.headers}
            assert "wrong-password-123" not in reply.text and "wrong-password-123" not in server.log()


def test_the_bundled_ohif_gets_the_apps_configuration_without_upload(site: Site) -> None:
    reply = requests.get(f"{site.open_url}/ohif/app-config.js", timeout=TIMEOUT)
    assert reply.status_code == 200
    assert "dicomUploadEnabled: false" in reply.text and "dicomUploadEnabled: true" not in reply.text
    assert "supportsReject: false" in reply.text
    assert requests.get(f"{site.open_url}/ohif/", timeout=TIMEOUT).status_code == 200  # the viewer itself
    for folder in ("/ohif/..", "/ohif/%2e%2e", "/ohif/.", "/ohif/assets"):  # before: 500 (a folder sent as a file)
        sent = raw_request(site.open_url, "GET", folder)
        assert sent.status == 200 and b"<!doctype html>" in sent.body[:100].lower(), (folder, sent.status)


def test_start_up_says_when_anyone_can_read_the_pacs() -> None:
    proxy = app_module("lib.dicomweb_proxy")
    compat = app_module("lib.monailabel_compat")
    pacs = "http://covid-mtl:secret@10.0.0.5:8042/dicom-web"
    line = proxy.exposure_warning(pacs, False, compat.served_host(["start_server", "--host", "0.0.0.0"]))
    assert "anyone who reaches it can read the PACS" in line and "MONAI_LABEL_AUTH_ENABLE=true" in line
    assert "secret" not in line and "\n" not in line
    assert compat.served_host(["start_server", "--app", "a"]) == "0.0.0.0"  # MONAI Label's own default
    assert proxy.exposure_warning(pacs, False, compat.served_host(["start_server", "-i", "127.0.0.1"])) is None
    assert proxy.exposure_warning(pacs, True, "0.0.0.0") is None
    assert proxy.exposure_warning("/data/studies", False, "0.0.0.0") is None


def test_jpeg2000_frames_pass_as_stored_and_the_pacs_never_transcodes(site: Site, real_ct: Path) -> None:
    """lidc0001 is JPEG 2000. Orthanc without its GDCM plugin cannot transcode it (MONAI Label's proxy, which sends
    no Accept, got 500 for every frame); with GDCM it crashed under a viewer's parallel frame requests. The proxy
    asks for the frames as stored, whatever the viewer asked, and the viewer decodes them."""
    files = dicom_files(real_ct / "full_chest" / "lidc0001")[40:48]
    assert site.orthanc.upload(files) == len(files)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert first.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    path = (f"/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}/instances/"
            f"{{}}/frames/1")
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    before = pacs_state(site.orthanc)
    direct = requests.get(site.orthanc.dicomweb + path.format(uids[0]), auth=site.orthanc.auth, timeout=TIMEOUT,
                          headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    if not Path("/usr/share/orthanc/plugins/libOrthancGdcm.so").exists():
        assert direct.status_code >= 400  # the trap: asked to transcode, this PACS cannot
    asks = ['multipart/related; type="application/octet-stream"; transfer-syntax="*"',  # OHIF's default
            'multipart/related; type="application/octet-stream"',  # "transcode to little endian", which fails
            "*/*"]
    for accept in asks:
        reply = requests.get(f"{site.open_url}/proxy/dicom/wado" + path.format(uids[0]), headers={"Accept": accept},
                             timeout=TIMEOUT)
        assert reply.status_code == 200, (accept, reply.status_code, reply.text[:200])
        assert b"1.2.840.10008.1.2.4.90" in reply.content[:400] or "1.2.840.10008.1.2.4.90" in \
            reply.headers["content-type"]
    from concurrent.futures import ThreadPoolExecutor

    def frame(uid: str) -> int:
        return requests.get(f"{site.open_url}/proxy/dicom/wado" + path.format(uid),
                            headers={"Accept": asks[0]}, timeout=TIMEOUT).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(frame, uids * 3)) == [200] * (3 * len(uids))  # a viewer's load, in parallel
    after = pacs_state(site.orthanc)
    assert after["alive"] and after["starts"] == before["starts"]


def test_with_authentication_on_a_viewers_seg_needs_the_annotator_role(site: Site) -> None:
    """The one write the proxy takes (``lib.viewer_seg``: OHIF's exported SEG becomes the series' correction) needs
    what ``PUT /datastore/label`` needs: a token (401) with the annotator role (403 for a user-role token)."""
    import numpy as np

    from covid_mtl.io import read_image
    from tests.app.test_pacs_seg_upload import STORE, ohif_body, ohif_seg, part10

    source = read_image(SAMPLE_SERIES)
    mask = np.zeros(source.array.shape, np.uint8)
    mask[2:4, 10:30, 10:30] = 1
    body, headers = ohif_body(part10(ohif_seg([Path(f) for f in source.meta["files"]], mask)))
    before = pacs_state(site.orthanc)
    for token, status in ((None, 401), (site.realm.token(USER), 403)):
        extra = bearer(token) if token else {}
        reply = requests.post(site.auth_url + STORE, data=body, headers={**headers, **extra}, timeout=TIMEOUT)
        assert reply.status_code == status, reply.text[:300]
    assert pacs_state(site.orthanc) == before
    reply = requests.post(site.auth_url + STORE, data=body, timeout=TIMEOUT,
                          headers={**headers, **bearer(site.realm.token(ANNOTATOR, USER))})
    assert reply.status_code == 200, reply.text[:300]
    assert len(pacs_state(site.orthanc)["instances"]) == len(before["instances"]) + 1  # the correction SEG
