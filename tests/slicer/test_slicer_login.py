"""The Slicer module's logic against a real covid-mtl server with MONAI Label's authentication on.

The identity provider is ``tests.realm``: a signed-token stand-in on loopback that serves its public key and a
password-grant token endpoint the way Keycloak does; the server fetches the key and forwards logins to it. The
module logs in with a user name and password through the server's ``/auth/token``, renews the token before it
expires and after a 401, and keeps the token and the password out of the scene, its parameter node and the log.
"""
from __future__ import annotations

import logging
import time
from typing import Iterator

import pytest
import requests
from CovidMTLLib import client as client_module
from CovidMTLLib import scene as mrml
from CovidMTLLib.client import CovidMTLLogicError
from CovidMTLLib.logic import CovidMTLLogic
from tests.realm import ANNOTATOR, USER, Realm, bearer
from tests.server import Server, copy_studies, quiet_env, running_server
from tests.slicer.slicer_helpers import application_scene

TOKEN_LIFETIME_S = 40  # renewed once fewer than client.RENEW_BEFORE_S (30 s) are left: after ~10 s
PASSWORD = "s3cret-Radiology!"


@pytest.fixture(scope="module")
def realm() -> Iterator[Realm]:
    realm = Realm(token_lifetime_s=TOKEN_LIFETIME_S)
    realm.add_user("dr.lee", PASSWORD, USER, ANNOTATOR)
    yield realm
    realm.stop()


@pytest.fixture(scope="module")
def server(realm: Realm, tmp_path_factory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("slicer_login")
    with running_server(copy_studies(work / "studies"), work, env=quiet_env(work, **realm.server_env()),
                        headers=bearer(realm.token(USER))) as running:
        yield running


def test_without_a_login_the_module_says_the_server_wants_one(server: Server) -> None:
    with application_scene() as scene:
        logic = CovidMTLLogic(scene, server.url, timeout=120)
        with pytest.raises(CovidMTLLogicError, match="requires a login"):
            logic.connect()
        with pytest.raises(CovidMTLLogicError, match="requires a login"):
            logic.connect(lambda: None)  # the dialog was cancelled


def test_a_wrong_password_is_refused_clearly(server: Server, realm: Realm) -> None:
    with application_scene() as scene:
        logic = CovidMTLLogic(scene, server.url, timeout=120)
        with pytest.raises(CovidMTLLogicError, match=r"login refused.*\(HTTP 401\)"):
            logic.connect(lambda: ("dr.lee", "wrong"))
        assert not logic.client.logged_in
    reply = requests.post(f"{server.url}/auth/token", data={"username": "dr.lee", "password": "wrong"}, timeout=60)
    assert reply.status_code == 401 and "login refused" in reply.json()["detail"]


def test_the_module_logs_in_works_renews_and_keeps_secrets_out_of_the_scene(server: Server, realm: Realm,
                                                                            sample_data, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with application_scene() as scene:
        logic = CovidMTLLogic(scene, server.url, timeout=300)
        info = logic.connect(lambda: ("dr.lee", PASSWORD))
        assert info["models"] and logic.client.logged_in and realm.issued == ["dr.lee"]
        token = logic.client.session.headers["Authorization"].split()[-1]

        volume = mrml.read_volume(scene, sample_data / "covid_002.nii.gz", "covid_002")
        result = logic.classify_and_segment(volume)  # upload (annotator) and infer (user) with the token
        assert result.probabilities and result.segmentation_node is not None
        params = logic.parameter_node()
        params.server_url, params.image_id = server.url, result.image_id

        # renewal before expiry: the token is within RENEW_BEFORE_S of its end after ~10 s
        time.sleep(TOKEN_LIFETIME_S - client_module.RENEW_BEFORE_S + 1)
        logic.connect()
        assert realm.issued == ["dr.lee", "dr.lee"]

        # a token the server no longer accepts (here: signed by a stranger) is replaced after the 401
        logic.client.session.headers["Authorization"] = "Bearer " + realm.token(USER, key=_stranger_key())
        assert logic.client.info()["models"]
        assert realm.issued == ["dr.lee"] * 3

        scene_file = tmp_path / "scene.mrml"
        scene.SetURL(str(scene_file))
        assert scene.Commit()
        saved = scene_file.read_text()
        assert server.url in saved  # the parameter node was saved
        node = params.node
        stored = " ".join(f"{n}={node.GetParameter(n)}" for n in node.GetParameterNames())
        for secret in (PASSWORD, token, logic.client.session.headers["Authorization"].split()[-1]):
            assert secret not in saved and secret not in stored and secret not in caplog.text
            assert secret not in repr(logic.client)


def _stranger_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
