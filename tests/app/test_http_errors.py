"""One mapping from errors to HTTP statuses (issue 11): the same error gets the same status on every endpoint.
The real-server tests show each status in context; this pins the table itself."""
from __future__ import annotations

import errno
import json
import sys

import pytest
from fastapi import HTTPException

from covid_mtl.errors import CovidMTLError
from tests.server import APP

sys.path.insert(0, str(APP))  # the app's own ``lib`` package, as MONAI Label imports it
from lib.http_errors import ModelUnavailable, classify, public_message, to_http  # noqa: E402


@pytest.mark.parametrize("exc, status", [
    (CovidMTLError("/srv/studies/scan.nii.gz: not a readable NIfTI file"), 422),
    (ModelUnavailable("/srv/app/model/covid_mtl.pt: not a readable covid-mtl checkpoint"), 503),
    (OSError(errno.ENOSPC, "No space left on device"), 507),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), 507),
    (json.JSONDecodeError("Expecting value", "{x", 1), 400),
    (HTTPException(status_code=409, detail="exists"), 409),
    (OSError(errno.EIO, "Input/output error"), 500),
    (RuntimeError("bug"), 500),
])
def test_each_error_has_one_status(exc: Exception, status: int) -> None:
    assert classify(exc)[0] == status
    assert to_http(exc).status_code == status
    assert "/srv/" not in classify(exc)[1]


def test_messages_name_the_users_file_not_the_temp_copy() -> None:
    text = "/tmp/tmpab12cd_9.nii.gz: not a readable NIfTI file (Cannot work out file type of \"tmpab12cd_9.nii.gz\")"
    assert public_message(text, "patient scan.nii.gz") == (
        'patient scan.nii.gz: not a readable NIfTI file (Cannot work out file type of "patient scan.nii.gz")')
    assert to_http(CovidMTLError(text), "a.nii.gz", prefix="uploaded image").detail.startswith("uploaded image: a.nii")
