"""The one place that decides which HTTP status an error becomes, so the same error gets the same status on
every endpoint (issue 11). Handlers in ``http_guard`` and the app's own code call :func:`to_http`.

| error | status |
|---|---|
| ``HTTPException`` raised by the app | its own status |
| ``covid_mtl.errors.CovidMTLError`` (bad input: unreadable image, wrong label, bad manifest row) | 422 |
| :class:`ModelUnavailable` (no model file, or one that cannot be loaded) | 503 |
| ``OSError`` ENOSPC / EDQUOT (full disk or quota) | 507 "no space left on the server" |
| ``json.JSONDecodeError`` in request parameters | 400 |
| MONAI Label's image/label not found | 404; its INVALID_INPUT 400 |
| anything else | 500, logged with its traceback |
"""
from __future__ import annotations

import errno
import json
import re
from typing import Optional

from fastapi import HTTPException

from covid_mtl.errors import CovidMTLError

NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
NO_SPACE = "no space left on the server; ask its administrator to free disk space (nothing was saved)"

# Folder prefixes in messages: replies name files, never the server's folder layout.
_DIRS = re.compile(r"(?:[A-Za-z]:)?[\\/](?:[^\\/\s'\":,;()\[\]]+[\\/])+")
# The names tempfile gives the uploads MONAI Label's endpoints write (``tmp`` + 8 random characters + suffix).
TEMP_UPLOAD_NAME = re.compile(r"\btmp[a-z0-9_]{8}(?:\.[A-Za-z0-9_.-]*)?")


class ModelUnavailable(Exception):
    """The server cannot run its model (none published, or the file cannot be loaded): the server's fault."""


def public_message(text: str, upload_name: Optional[str] = None) -> str:
    """``text`` without directory prefixes; with ``upload_name``, the server's temp file name becomes the name
    of the file the user sent."""
    text = _DIRS.sub("", str(text))
    if upload_name:
        text = TEMP_UPLOAD_NAME.sub(lambda _: upload_name, text)
    return text


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def _monailabel_status(exc) -> Optional[int]:
    from monailabel.interfaces.exception import (ImageNotFoundException, LabelNotFoundException, MONAILabelError,
                                                 MONAILabelException)

    if not isinstance(exc, MONAILabelException):
        return None
    if isinstance(exc, (ImageNotFoundException, LabelNotFoundException)):
        return 404
    return 400 if getattr(exc, "error", None) == MONAILabelError.INVALID_INPUT else 500


def classify(exc: BaseException) -> tuple[int, str]:
    """(status, detail) for ``exc``; 500 for anything that is not a known client or capacity error."""
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, ModelUnavailable):
        return 503, f"the model could not run: {public_message(str(exc))}"
    if is_no_space(exc):
        return 507, NO_SPACE
    if isinstance(exc, json.JSONDecodeError):
        return 400, f"request parameters are not valid JSON ({exc.msg} at character {exc.pos})"
    if isinstance(exc, CovidMTLError):
        return 422, public_message(str(exc))
    status = _monailabel_status(exc)
    if status is not None:
        return status, public_message(getattr(exc, "msg", str(exc)))
    return 500, f"internal server error ({type(exc).__name__}); see the server log"


def is_server_fault(status: int) -> bool:
    """A 5xx the client can do nothing about, logged in full and answered without details; a full disk (507)
    is a capacity error the client is told about."""
    return status >= 500 and status != 507


def to_http(exc: BaseException, upload_name: Optional[str] = None, prefix: str = "") -> HTTPException:
    """``exc`` as the HTTPException the client gets; ``prefix`` says what failed (e.g. "uploaded label")."""
    status, detail = classify(exc)
    if not is_server_fault(status):
        detail = public_message(detail, upload_name)
        if prefix and status == 422:
            detail = f"{prefix}: {detail}"
    return HTTPException(status_code=status, detail=detail)
