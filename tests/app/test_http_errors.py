"""One mapping from typed errors to HTTP statuses (issues 11 and 22): the same error gets the same status and
message on every endpoint. The real-server tests show each status in context; this pins the table itself."""
from __future__ import annotations

import errno
import json
import sys

import pytest
from fastapi import HTTPException

from covid_mtl.errors import CovidMTLError, InternalError, ModelFileError
from tests.server import APP

sys.path.insert(0, str(APP))  # the app's own ``lib`` package, as MONAI Label imports it
from lib import errors  # noqa: E402
from lib.http_errors import classify, public_message, to_http  # noqa: E402


def _monailabel_not_found():
    from monailabel.interfaces.exception import ImageNotFoundException

    return ImageNotFoundException("Image x not found")


@pytest.mark.parametrize("exc, status", [
    (errors.BadRequest("request params are not valid JSON"), 400),
    (errors.InvalidName("image id", "../x", "letters"), 400),
    (errors.NoImageGiven(), 400),
    (errors.Refused("inference never writes the 'final' label tag"), 403),
    (errors.UnknownImage("scan1"), 404),
    (errors.UnknownLabel("scan1", "final"), 404),
    (errors.UnknownTask("model", "segmentation", ["covid_mtl"]), 404),
    (errors.AlreadyExists("image 'scan1' already exists"), 409),
    (errors.TooLarge("uploaded label", 3 * 2**20, 2**20), 413),
    (errors.HostNotServed("host name 'evil.example' is not served here"), 421),
    (errors.Unprocessable("label values must be 0 or 1"), 422),
    (errors.Unreadable("uploaded label", CovidMTLError("/srv/x.nii.gz: not a readable NIfTI file")), 422),
    (CovidMTLError("/srv/studies/scan.nii.gz: not a readable NIfTI file"), 422),
    (errors.ModelUnavailable("no covid_mtl model is available on this server yet"), 503),
    (ModelFileError("/srv/app/model/covid_mtl.pt: not a readable covid-mtl checkpoint"), 503),  # the server's model
    (OSError(errno.ENOSPC, "No space left on device"), 507),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), 507),
    (json.JSONDecodeError("Expecting value", "{x", 1), 400),
    (HTTPException(status_code=401, detail="not authenticated"), 401),  # raised by MONAI Label / FastAPI
    (HTTPException(status_code=500, detail="Neither Image nor File not Session ID input is provided"), 400),
    (_monailabel_not_found(), 404),
    (OSError(errno.EIO, "Input/output error"), 500),
    (InternalError("aggregate: expected (z, 3) probabilities"), 500),  # a bug, not the user's input
    (RuntimeError("bug"), 500),
])
def test_each_error_has_one_status(exc: Exception, status: int) -> None:
    assert classify(exc)[0] == status
    assert to_http(exc).status_code == status
    assert "/srv/" not in classify(exc)[1]


def test_one_problem_has_one_wording() -> None:
    assert str(errors.UnknownImage("scan1")) == "image 'scan1' not found in the datastore"
    declared, counted = errors.TooLarge("request body", 3 * 2**20, 2**20), errors.TooLarge("request body", None, 2**20)
    assert str(declared).split(";")[1] == str(counted).split(";")[1]  # the limit and the setting, said once


def test_messages_name_the_users_file_not_the_temp_copy() -> None:
    text = "/tmp/tmpab12cd_9.nii.gz: not a readable NIfTI file (Cannot work out file type of \"tmpab12cd_9.nii.gz\")"
    assert public_message(text, "patient scan.nii.gz") == (
        'patient scan.nii.gz: not a readable NIfTI file (Cannot work out file type of "patient scan.nii.gz")')
    unreadable = errors.Unreadable("uploaded image", CovidMTLError(text))
    assert to_http(unreadable, "a.nii.gz").detail.startswith("uploaded image: a.nii")
