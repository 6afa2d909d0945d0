"""What the MONAI Label HTTP layer lacks, added once to its FastAPI app from the app's constructor.

- A request size limit (the ``max_upload_mb`` setting) checked on ``Content-Length`` before the body is read and
  counted while it streams, so an oversized upload (image, label, infer file or ``/session/`` series) gets a
  413 instead of being spooled to disk first.
- ``PUT``/``DELETE /model/...`` (MONAI Label overwrites or moves the served, possibly packaged, model file) and the
  unauthenticated ``POST /reload`` are refused; models change only through training's atomic publish.
- Browser requests from other sites are refused: ``127.0.0.1`` is reachable from every web page the radiologist
  opens (cross-site form posts, DNS rebinding), and MONAI Label answers CORS for any origin.
- JSON 4xx instead of MONAI Label's bare 500 for bad input (unknown ids, malformed ``params``, unreadable files),
  with server folders stripped from the message; the status of each error comes from ``lib.http_errors``.
- JWT validation that works (``monailabel_compat.pin_jwt_algorithms``).
- MONAI Label's DICOMweb proxy (``/proxy/...``) passes a viewer's reads and takes one write, a viewer's correction
  SEG (``lib.dicomweb_proxy``, ``lib.viewer_seg``): everything else is refused and logged here, before MONAI Label
  routes it or reads its body.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
from typing import Iterable, Optional
from urllib.parse import parse_qs

from fastapi.responses import JSONResponse
from lib import dicomweb_proxy, monailabel_compat
from lib.errors import AppError, BadRequest, HostNotServed, Refused, TooLarge
from lib.http_errors import NO_SPACE_STATUS, classify, is_server_fault, to_http
from lib.settings import AppSettings

from covid_mtl.errors import CovidMTLError

logger = logging.getLogger(__name__)

ENVELOPE_BYTES = 256 * 1024  # multipart boundaries, headers and the small form fields around the file(s)
BODY_METHODS = {"POST", "PUT", "PATCH"}
SAFE_SESSION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")  # MONAI Label makes uuid4 session ids


def _hostname(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: Optional[str], allowed: Iterable[str]) -> bool:
    """IP literals and localhost cannot be re-pointed by DNS; other names only when the admin listed them."""
    if not host_header:
        return True  # HTTP/1.0 clients; no name to rebind
    name = _hostname(host_header)
    allowed = set(allowed)
    if "*" in allowed or name in allowed or name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def origin_allowed(origin: Optional[str], host_header: Optional[str], allowed: Iterable[str]) -> bool:
    """No Origin (Slicer, curl, requests) or the server's own origin (its /ohif viewer) or a listed one."""
    if not origin:
        return True
    origin = origin.rstrip("/").lower()
    allowed = {a.rstrip("/").lower() for a in allowed}
    if "*" in allowed or origin in allowed:
        return True
    return bool(host_header) and origin.split("://", 1)[-1] == host_header.strip().lower()


def _bad_session_id(scope) -> Optional[str]:
    path = scope["path"]
    candidates = [path[len("/session/"):].rstrip("/")] if path.startswith("/session/") else []
    candidates += parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_id", [])
    return next((c for c in candidates if c and not SAFE_SESSION_ID.match(c)), None)


async def _send_error(send, exc: AppError) -> None:
    status, detail = classify(exc)
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def refusal(scope, headers: dict[str, str], settings: AppSettings, origins: Iterable[str]) -> Optional[AppError]:
    """The error to answer when the request must not reach MONAI Label at all, else None."""
    host, method, path = headers.get("host"), scope["method"], scope["path"]
    if not host_allowed(host, settings.allowed_hosts):
        return HostNotServed(f"host name {_hostname(host)!r} is not served here; list it in COVID_MTL_ALLOWED_HOSTS "
                             f"(protection against DNS rebinding)")
    if not origin_allowed(headers.get("origin"), host, origins):
        return Refused(f"cross-site request from {headers['origin']!r} refused; list the origin in "
                       f"COVID_MTL_CORS_ORIGINS")
    bad_session = _bad_session_id(scope)
    if bad_session is not None:  # MONAI Label joins it to its session folder: DELETE /session/%2E%2E = rmtree(..)
        return BadRequest(f"invalid session id {bad_session!r}")
    if dicomweb_proxy.under_proxy(path):
        refused = dicomweb_proxy.refusal(scope)
        if refused is not None:
            client = (scope.get("client") or ("?",))[0]
            sent = dicomweb_proxy.target(scope)[0]
            logger.warning(f"DICOMweb proxy refused {method} {sent[:300]!r} from {client}: {refused}")
            return refused
    if method == "POST" and path.rstrip("/") == "/reload":  # re-creates the app, and has no role check at all
        return Refused("/reload is disabled on this server")
    if method in ("PUT", "DELETE") and path.startswith("/model/"):
        # MONAI Label copies an upload (non-atomically, unchecked) over the model file infer uses, which until
        # training publishes one is the packaged model inside the installed package; DELETE moves that file away.
        return Refused("model files are replaced only by training (atomic publish); uploading or deleting them is "
                       "disabled")
    declared = headers.get("content-length", "")
    if method in BODY_METHODS and declared.isdigit() and int(declared) > settings.max_upload_bytes + ENVELOPE_BYTES:
        return TooLarge("request body", int(declared), settings.max_upload_bytes)  # before a byte is read
    return None


class GuardMiddleware:
    """Pure ASGI (no body buffering): ``refusal`` first, then the size limit counted as the body streams."""

    def __init__(self, app, settings: AppSettings, origins: Iterable[str] = ()) -> None:
        self.app, self.settings, self.origins = app, settings, list(origins)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refused = refusal(scope, headers, self.settings, self.origins)
        if refused is not None:
            return await _send_error(send, refused)
        if scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        limit, received = self.settings.max_upload_bytes + ENVELOPE_BYTES, 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # chunked uploads declare no length
                    # as an HTTPException: FastAPI's form parser turns anything else into "error parsing the body"
                    raise to_http(TooLarge("request body", None, self.settings.max_upload_bytes))
            return message

        await self.app(scope, limited_receive, send)


# ----- exception handlers: statuses come from lib.http_errors (one mapping for every endpoint) -----------------------
async def _mapped(request, exc: Exception) -> JSONResponse:
    status, detail = classify(exc)
    if is_server_fault(status):
        logger.error(f"{request.method} {request.url.path} failed", exc_info=exc)
    elif status == NO_SPACE_STATUS:
        logger.error(f"{request.method} {request.url.path}: disk full ({exc})")
    return JSONResponse({"detail": detail}, status_code=status)


async def _http_error(request, exc):
    """HTTPExceptions keep FastAPI's own answer (with its headers, e.g. WWW-Authenticate), unless MONAI Label used
    one for a client mistake (``monailabel_compat.translate``)."""
    from fastapi.exception_handlers import http_exception_handler

    typed = monailabel_compat.translate(exc)
    return await (_mapped(request, typed) if typed is not None else http_exception_handler(request, exc))


def install(fastapi_app, settings: AppSettings) -> None:
    """Add the guards to MONAI Label's FastAPI app (idempotent: /reload or a cache clear may re-create our app)."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    monailabel_compat.pin_jwt_algorithms(list(settings.auth_algorithms))
    origins = list(settings.cors_origins) + monailabel_compat.configured_origins()
    kinds = (*monailabel_compat.exception_types(), AppError, json.JSONDecodeError, CovidMTLError, OSError, Exception)
    handlers = {StarletteHTTPException: _http_error, **{kind: _mapped for kind in kinds}}
    monailabel_compat.install_http_layer(fastapi_app, GuardMiddleware, handlers, origins, settings=settings,
                                         origins=origins)
