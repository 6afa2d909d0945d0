"""Security properties of the served app, over real HTTP with MONAI Label's authentication switched on.

The OpenID Connect realm is ``tests.realm``: a thread on a loopback port that serves a freshly generated RSA public
key the way Keycloak does (``{"public_key": ...}``); tokens are signed in the test with the private key.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import pytest
import requests
import torch
from cryptography.hazmat.primitives.asymmetric import rsa

from covid_mtl.nets.checkpoint import load_checkpoint
from covid_mtl.errors import CovidMTLError
from tests.realm import ADMIN, ANNOTATOR, USER, Realm, bearer, realm  # noqa: F401 (realm: the fixture)
from tests.server import ROOT, Server, copy_studies, quiet_env, running_server

TIMEOUT = 120


class Payload:
    """Unpickling this runs a shell command: what a hostile "model file" would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"format": 1, "config": {"name": "lite"}, "tasks": ["seg"], "state_dict": Payload(marker)}, path)
    return path


def test_makefile_serves_on_loopback_by_default() -> None:
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^HOST\s*\?=\s*127\.0\.0\.1\s*$", text, re.M), "HOST must default to 127.0.0.1"
    recipe = text.split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert "--host $(HOST)" in recipe  # MONAI Label itself defaults to 0.0.0.0


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = hostile_checkpoint(tmp_path / "model.pt", marker)
    torch.load(path, weights_only=False)  # the payload is live: a plain unpickle runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CovidMTLError, match="not a readable covid-mtl checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


# ----- a server with authentication on ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(realm: Realm, tmp_path_factory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("security")
    studies = copy_studies(work / "studies")
    env = quiet_env(work, MONAI_LABEL_AUTH_ENABLE="true", MONAI_LABEL_AUTH_REALM_URI=realm.uri)
    with running_server(studies, work, conf={"preload": "false"}, env=env,
                        headers=bearer(realm.token(ADMIN, USER))) as srv:
        yield srv


def infer(server: Server, headers: dict, image: str = "covid_slice_001") -> requests.Response:
    return requests.post(f"{server.url}/infer/covid_mtl", params={"image": image, "output": "json"},
                         data={"params": "{}"}, headers=headers, timeout=TIMEOUT)


def test_requests_without_a_valid_token_are_refused(server: Server, realm: Realm) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    invalid = {
        "no token": {},
        "other key": bearer(realm.token(ADMIN, USER, key=stranger)),
        "unsigned (alg none)": bearer(realm.token(ADMIN, USER, key="", algorithm="none")),
        "expired": bearer(realm.token(ADMIN, USER, expires_in=-60)),
        "garbage": bearer("not.a.token"),
    }
    for what, headers in invalid.items():
        for method, path in (("GET", "/info/"), ("GET", "/datastore/image?image=covid_001"),
                             ("POST", "/infer/covid_mtl?image=covid_001"), ("PUT", "/datastore/label?image=covid_001")):
            r = requests.request(method, f"{server.url}{path}", headers=headers, timeout=30)
            assert r.status_code == 401, (what, method, path, r.status_code, r.text)


def test_valid_token_is_served_according_to_its_role(server: Server, realm: Realm) -> None:
    user = bearer(realm.token(USER))
    assert requests.get(f"{server.url}/info/", headers=user, timeout=30).status_code == 200
    assert infer(server, user).status_code == 200
    # saving a label needs the annotator role, training the admin role
    r = requests.put(f"{server.url}/datastore/label", params={"image": "covid_001"}, headers=user,
                     files={"label": ("covid_001.nii.gz", b"x")}, timeout=30)
    assert r.status_code == 403 and ANNOTATOR in r.json()["detail"]
    r = requests.post(f"{server.url}/train/covid_mtl", json={}, headers=bearer(realm.token(USER, ANNOTATOR)),
                      timeout=30)
    assert r.status_code == 403 and ADMIN in r.json()["detail"]
    # MONAI Label's /reload re-creates the app and has no role check at all
    assert requests.post(f"{server.url}/reload", headers=user, timeout=30).status_code == 403


def test_browser_cross_site_and_rebinding_requests_are_refused(server: Server, realm: Realm) -> None:
    admin = bearer(realm.token(ADMIN, USER))
    r = requests.post(f"{server.url}/infer/covid_mtl?image=covid_001", timeout=30,
                      headers={**admin, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    r = requests.options(f"{server.url}/datastore/label", timeout=30, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"})
    assert r.status_code == 403 and "access-control-allow-origin" not in {k.lower() for k in r.headers}
    r = requests.get(f"{server.url}/info/", headers={**admin, "Host": "rebound.evil.example:8000"}, timeout=30)
    assert r.status_code == 421
    same_origin = {**admin, "Origin": server.url}  # the server's own pages (e.g. /ohif) keep working
    assert requests.get(f"{server.url}/info/", headers=same_origin, timeout=30).status_code == 200


def test_file_names_and_ids_never_leave_the_datastore(server: Server, realm: Realm) -> None:
    admin = bearer(realm.token(ADMIN, ANNOTATOR, USER))
    work = server.studies.parent
    png = (server.studies / "covid_slice_001.png").read_bytes()
    r = requests.put(f"{server.url}/datastore/image", headers=admin, data={"params": "{}"},
                     files={"file": ("../../../escaped_evil.png", png)}, timeout=30)
    assert r.status_code == 200, r.text
    assert (server.studies / "escaped_evil.png").read_bytes() == png
    label = (server.studies / "labels" / "final" / "covid_slice_001.png").read_bytes()
    r = requests.put(f"{server.url}/datastore/label", params={"image": "escaped_evil", "tag": "final"}, headers=admin,
                     files={"label": ("../../../../label_evil.png", label)}, data={"params": "{}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert (server.studies / "labels" / "final" / "escaped_evil.png").read_bytes() == label
    escaped = [p for p in work.parent.rglob("*evil*") if server.studies not in p.parents]
    assert not escaped, escaped
    r = requests.put(f"{server.url}/session/", headers=admin, files={"files": ("slice.png", png)}, timeout=30)
    session = r.json()["session_id"]
    # MONAI Label joins the id to its session folder: ".." would rmtree the folder above it
    r = requests.delete(f"{server.url}/session/%2E%2E", headers=admin, timeout=30)
    assert r.status_code == 400 and (work / "sessions").is_dir()
    assert requests.get(f"{server.url}/session/{session}", headers=admin, timeout=30).status_code == 200


def test_model_files_cannot_be_replaced_over_http(server: Server, realm: Realm, tmp_path) -> None:
    from covid_mtl.nets.packaged import packaged_model_path

    admin = bearer(realm.token(ADMIN, ANNOTATOR, USER))
    packaged = Path(packaged_model_path())
    before = packaged.read_bytes()
    marker = tmp_path / "pwned"
    hostile = hostile_checkpoint(tmp_path / "upload.pt", marker).read_bytes()
    r = requests.put(f"{server.url}/model/covid_mtl", headers=admin, files={"file": ("covid_mtl.pt", hostile)},
                     timeout=30)
    assert r.status_code == 403 and "training" in r.json()["detail"], r.text
    assert requests.delete(f"{server.url}/model/covid_mtl", headers=admin, timeout=30).status_code == 403
    assert packaged.read_bytes() == before and not (server.app_dir / "model" / "covid_mtl.pt").exists()
    assert infer(server, admin).status_code == 200 and not marker.exists()


def test_hostile_published_model_is_not_run_and_server_keeps_serving(server: Server, realm: Realm, tmp_path) -> None:
    user = bearer(realm.token(USER))
    marker = tmp_path / "pwned"
    published = server.app_dir / "model" / "covid_mtl.pt"
    hostile_checkpoint(published, marker)
    try:
        r = infer(server, user)
        assert r.status_code == 503 and "not a readable covid-mtl checkpoint" in r.json()["detail"], r.text
        assert str(server.app_dir) not in r.text
        assert not marker.exists()
        assert requests.get(f"{server.url}/info/", headers=user, timeout=30).status_code == 200
    finally:
        published.unlink()
    assert infer(server, user).status_code == 200  # back on the packaged model, without a restart
    assert not marker.exists()
