"""The one place that decides which HTTP status an error becomes, so the same error gets the same status and
message on every endpoint. Errors are typed where a problem is found (``lib.errors``, ``covid_mtl.errors``);
handlers in ``http_guard`` and the endpoint wrappers call :func:`classify` / :func:`to_http`. A test fails when a
status number appears anywhere else in the app.

| error | status |
|---|---|
| ``lib.errors.BadRequest`` (malformed params, ids, tags; no image named), ``json.JSONDecodeError`` | 400 |
| ``lib.errors.LoginRefused`` (wrong user name or password at ``/auth/token``) | 401 |
| ``lib.errors.Refused`` (e.g. inference writing ``final``, model uploads, cross-site requests) | 403 |
| ``lib.errors.NotFound`` (unknown image, label, model, strategy) | 404 |
| ``lib.errors.AlreadyExists`` | 409 |
| ``lib.errors.TooLarge`` | 413 |
| ``lib.errors.HostNotServed`` | 421 |
| ``lib.errors.Unprocessable`` (label off the grid, not 0/1, unknown class), ``covid_mtl.errors.CovidMTLError`` | 422 |
| ``lib.errors.PacsRefused`` (the PACS answered an error: wrong credentials, its own fault) | 502 |
| ``lib.errors.PacsUnreachable`` (the PACS did not answer) | 503 |
| ``lib.errors.ModelUnavailable``, ``covid_mtl.errors.ModelFileError`` (the server's own model) | 503 |
| ``OSError`` ENOSPC / EDQUOT (full disk or quota) | 507 "no space left on the server" |
| MONAI Label's own errors | as ``monailabel_compat.translate`` types them |
| ``HTTPException`` raised by MONAI Label or FastAPI | its own status |
| anything else (``covid_mtl.errors.InternalError`` included) | 500, logged with its traceback |
"""
from __future__ import annotations

import errno
import json
import re
from typing import Optional

from fastapi import HTTPException
from lib import errors
from lib.monailabel_compat import translate

from covid_mtl.errors import CovidMTLError, ModelFileError

NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
NO_SPACE = "no space left on the server; ask its administrator to free disk space (nothing was saved)"

# First match wins: subclasses before their bases (ModelFileError is a CovidMTLError).
STATUSES: tuple[tuple[type, int], ...] = (
    (errors.BadRequest, 400),
    (errors.LoginRefused, 401),
    (errors.Refused, 403),
    (errors.NotFound, 404),
    (errors.AlreadyExists, 409),
    (errors.TooLarge, 413),
    (errors.HostNotServed, 421),
    (errors.Unprocessable, 422),
    (errors.PacsRefused, 502),
    (errors.PacsUnreachable, 503),
    (errors.ModelUnavailable, 503),
    (ModelFileError, 503),
    (CovidMTLError, 422),
)
NO_SPACE_STATUS = 507
SERVER_FAULT = 500

# Folder prefixes in messages: replies name files, never the server's folder layout.
_DIRS = re.compile(r"(?:[A-Za-z]:)?[\\/](?:[^\\/\s'\":,;()\[\]]+[\\/])+")
# The names tempfile gives the uploads MONAI Label's endpoints write (``tmp`` + 8 random characters + suffix).
TEMP_UPLOAD_NAME = re.compile(r"\btmp[a-z0-9_]{8}(?:\.[A-Za-z0-9_.-]*)?")


def public_message(text: str, upload_name: Optional[str] = None) -> str:
    """``text`` without directory prefixes; with ``upload_name``, the server's temp file name becomes the name
    of the file the user sent."""
    text = _DIRS.sub("", str(text))
    if upload_name:
        text = TEMP_UPLOAD_NAME.sub(lambda _: upload_name, text)
    return text


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def classify(exc: BaseException) -> tuple[int, str]:
    """(status, detail) for ``exc``; 500 for anything that is not a known client or capacity error."""
    exc = translate(exc) or exc
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if is_no_space(exc):
        return NO_SPACE_STATUS, NO_SPACE
    if isinstance(exc, json.JSONDecodeError):
        return 400, f"request parameters are not valid JSON ({exc.msg} at character {exc.pos})"
    for kind, status in STATUSES:
        if isinstance(exc, kind):
            # the app's own messages name ids and endpoints; the core's name files, whose folders stay private
            names_files = not isinstance(exc, errors.AppError) or isinstance(exc, errors.Unreadable)
            detail = public_message(str(exc)) if names_files else str(exc)
            model_fault = isinstance(exc, (errors.ModelUnavailable, ModelFileError))
            return status, f"the model could not run: {detail}" if model_fault else detail
    return SERVER_FAULT, f"internal server error ({type(exc).__name__}); see the server log"


def is_server_fault(status: int) -> bool:
    """A 5xx the client can do nothing about, logged in full; a full disk (507) is a capacity error the client
    is told about."""
    return status >= 500 and status != NO_SPACE_STATUS


def to_http(exc: BaseException, upload_name: Optional[str] = None) -> HTTPException:
    """``exc`` as the HTTPException the client gets, naming ``upload_name`` instead of the server's temp file."""
    status, detail = classify(exc)
    if upload_name and not is_server_fault(status):
        detail = TEMP_UPLOAD_NAME.sub(lambda _: upload_name, detail)
    return HTTPException(status_code=status, detail=detail)
