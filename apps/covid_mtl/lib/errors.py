"""What can go wrong in a request, typed where it is found; ``lib.http_errors`` alone turns each type into an HTTP
status. Messages are built here, once per kind of problem, so every endpoint words the same problem the same way.

Bad input to the core (an unreadable image, a label the reader refuses) stays ``covid_mtl.errors.CovidMTLError``;
a model file the server cannot use is ``covid_mtl.errors.ModelFileError``.
"""
from __future__ import annotations

from http import HTTPStatus
from typing import Any, Iterable, Optional


class AppError(Exception):
    """A problem with a request that the client can fix, or must at least be told about."""


# ----- 400: the request itself is malformed -------------------------------------------------------------------------
class BadRequest(AppError):
    """Malformed parameters, ids or tags; a request that names no image."""


class InvalidName(BadRequest):
    def __init__(self, what: str, value: Any, allowed: str) -> None:
        super().__init__(f"invalid {what} {value!r}: use {allowed}")


class NoImageGiven(BadRequest):
    def __init__(self) -> None:
        super().__init__("no image: give a datastore image id (?image=), a multipart file, or the session_id of an "
                         "existing session (PUT /session/)")


# ----- 401 ----------------------------------------------------------------------------------------------------------
class LoginRefused(AppError):
    """The identity provider refused a user name and password (``POST /auth/token``)."""

    def __init__(self) -> None:
        super().__init__("login refused: the identity provider did not accept this user name and password")


# ----- 403 / 421: refused by policy -----------------------------------------------------------------------------------
class Refused(AppError):
    """Not allowed on this server, whoever asks (e.g. inference writing the ``final`` tag, model uploads)."""


class HostNotServed(AppError):
    """The Host header names a host this server does not answer for (DNS rebinding)."""


# ----- 404 -----------------------------------------------------------------------------------------------------------
class NotFound(AppError):
    pass


class UnknownImage(NotFound):
    def __init__(self, image_id: Any) -> None:
        super().__init__(f"image {image_id!r} not found in the datastore")


class UnknownLabel(NotFound):
    def __init__(self, image_id: Any, tag: Any) -> None:
        super().__init__(f"label {image_id!r} (tag {tag!r}) not found in the datastore")


class UnknownTask(NotFound):
    def __init__(self, kind: str, name: Any, available: Iterable[str]) -> None:
        super().__init__(f"unknown {kind} {name!r}; available: {sorted(available)}")


# ----- 409 / 413 / 422 ------------------------------------------------------------------------------------------------
class AlreadyExists(AppError):
    pass


class TooLarge(AppError):
    """An upload over the limit: one message whether the size was declared, counted or measured on disk."""

    def __init__(self, what: str, size_bytes: Optional[int], limit_bytes: int) -> None:
        size = f"{size_bytes / 2**20:.1f} MB" if size_bytes is not None else "more than the limit"
        super().__init__(f"{what} is {size}; the upload limit is {limit_bytes / 2**20:.0f} MB "
                         f"(server setting max_upload_mb / COVID_MTL_MAX_UPLOAD_MB)")


class Unprocessable(AppError):
    """Well-formed but unusable content: a label off its image's grid or with values other than 0/1, an unknown
    class."""


class Unreadable(Unprocessable):
    """A file the core's reader refuses, named by what it is (``what``: "uploaded label", "image covid_001")."""

    def __init__(self, what: str, problem: BaseException) -> None:
        super().__init__(f"{what}: {problem}" if what else str(problem))


# ----- 503 -----------------------------------------------------------------------------------------------------------
class ModelUnavailable(AppError):
    """The server cannot run its model (none published, or the file cannot be loaded): the server's fault."""


# ----- 502 / 503: the PACS behind a DICOMweb datastore ----------------------------------------------------------------
class PacsError(AppError):
    """The PACS this server serves from did not do what was asked; the message names the PACS and the problem."""


class PacsUnreachable(PacsError):
    """No answer from the PACS (down, wrong address, timed out): 503, try again later."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"the PACS at {url} cannot be reached ({problem}); ask its administrator whether it is "
                         f"running (nothing was changed)")


class PacsRefused(PacsError):
    """The PACS answered with an error (wrong credentials, a server error): 502."""

    def __init__(self, url: str, what: str, status: int, reason: str = "") -> None:
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            problem = (f"the PACS refused this server's credentials (HTTP {status}); check "
                       f"MONAI_LABEL_DICOMWEB_USERNAME / MONAI_LABEL_DICOMWEB_PASSWORD")
        else:
            problem = f"the PACS answered HTTP {status}{': ' + reason if reason else ''}"
        super().__init__(f"{what} at {url}: {problem} (nothing was changed)")
