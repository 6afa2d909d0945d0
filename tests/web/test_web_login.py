"""The browser review page against a server with MONAI Label's authentication on: the reviewer types a user name and
password, Connect logs in through the server's ``/auth/token`` (``tests.realm``, a signed-token stand-in for
Keycloak on loopback), and the page works with the token. A wrong password is a clear error; the password field is
emptied once used, and neither the password nor the token reaches the web app's log.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.realm import ANNOTATOR, USER, Realm, bearer
from tests.server import copy_studies, quiet_env, running_server
from tests.web.test_web_review import OUT, expect_no_error, page, pytestmark, web_app  # noqa: F401 (fixtures)

PASSWORD = "Pa55-for-the-web"


@pytest.fixture(scope="module")
def realm() -> Iterator[Realm]:
    realm = Realm()
    realm.add_user("reviewer", PASSWORD, USER, ANNOTATOR)
    yield realm
    realm.stop()


@pytest.fixture(scope="module")
def out_dir():
    folder = OUT.parent / (OUT.name + "-login")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(realm, tmp_path_factory):
    work = tmp_path_factory.mktemp("web_login")
    with running_server(copy_studies(work / "studies"), work, env=quiet_env(work, **realm.server_env()),
                        headers=bearer(realm.token(USER))) as running:
        yield running


def test_the_page_logs_in_and_then_works(page, realm, web_app):
    page.get_by_test_id("connect").click()
    page.get_by_test_id("error").wait_for()
    assert "requires a login" in page.get_by_test_id("error").inner_text()

    page.get_by_test_id("username").locator("input").fill("reviewer")
    page.get_by_test_id("password").locator("input").fill("not-the-password")
    page.get_by_test_id("connect").click()
    page.get_by_text("login refused").wait_for()
    assert realm.issued == []

    page.get_by_test_id("password").locator("input").fill(PASSWORD)
    page.get_by_test_id("connect").click()
    page.get_by_text("Models: covid_mtl").wait_for()
    assert realm.issued == ["reviewer"]
    assert page.get_by_test_id("password").locator("input").input_value() == ""
    page.get_by_test_id("next-case").click()  # an authenticated call after the login
    page.get_by_text("Loaded: ").wait_for()
    expect_no_error(page)
    assert PASSWORD not in web_app.log()
