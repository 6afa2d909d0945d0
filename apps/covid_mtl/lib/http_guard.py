"""What the MONAI Label 0.8.5 HTTP layer lacks, added once to its FastAPI app from the app's constructor.

- A request size limit (``COVID_MTL_MAX_UPLOAD_MB``) checked on ``Content-Length`` before the body is read and
  counted while it streams, so an oversized upload (image, label, infer file or ``/session/`` series) gets a
  413 instead of being spooled to disk first.
- ``PUT``/``DELETE /model/...`` (MONAI Label overwrites or moves the served, possibly packaged, model file) and the
  unauthenticated ``POST /reload`` are refused; models change only through training's atomic publish.
- Browser requests from other sites are refused: ``127.0.0.1`` is reachable from every web page the radiologist
  opens (cross-site form posts, DNS rebinding), and MONAI Label answers CORS for any origin.
- JSON 4xx instead of MONAI Label's bare 500 for bad input (unknown ids, malformed ``params``, unreadable files),
  with server folders stripped from the message; the status of each error comes from ``lib.http_errors``.
- JWT validation that works: MONAI Label calls ``jwt.decode`` without ``algorithms``, which PyJWT 2 refuses, so
  with auth on every token, valid or not, was answered 401.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from typing import Any, Iterable, Optional
from urllib.parse import parse_qs

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from lib.http_errors import ModelUnavailable, classify, is_server_fault

from covid_mtl.errors import CovidMTLError

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 2048
ENVELOPE_BYTES = 256 * 1024  # multipart boundaries, headers and the small form fields around the file(s)
BODY_METHODS = {"POST", "PUT", "PATCH"}
SAFE_SESSION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")  # MONAI Label makes uuid4 session ids


def max_upload_bytes() -> int:
    """Largest accepted upload; read on every request so tests and admins can change it without a rebuild."""
    return int(float(os.environ.get("COVID_MTL_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)) * 1024 * 1024)


def _csv_env(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


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


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _too_large(size: Optional[int], limit: int) -> str:
    what = f"{size / 2**20:.1f} MB" if size is not None else "more than the limit"
    return (f"request body is {what}; the upload limit is {limit / 2**20:.0f} MB "
            f"(server setting COVID_MTL_MAX_UPLOAD_MB)")


def refusal(scope, headers: dict[str, str], origins: Iterable[str]) -> Optional[tuple[int, str]]:
    """(status, detail) when the request must not reach MONAI Label at all, else None."""
    host, method, path = headers.get("host"), scope["method"], scope["path"]
    if not host_allowed(host, _csv_env("COVID_MTL_ALLOWED_HOSTS")):
        return 421, (f"host name {_hostname(host)!r} is not served here; list it in COVID_MTL_ALLOWED_HOSTS "
                     f"(protection against DNS rebinding)")
    if not origin_allowed(headers.get("origin"), host, origins):
        return 403, f"cross-site request from {headers['origin']!r} refused; list the origin in COVID_MTL_CORS_ORIGINS"
    bad_session = _bad_session_id(scope)
    if bad_session is not None:  # MONAI Label joins it to its session folder: DELETE /session/%2E%2E = rmtree(..)
        return 400, f"invalid session id {bad_session!r}"
    if method == "POST" and path.rstrip("/") == "/reload":  # re-creates the app, and has no role check at all
        return 403, "/reload is disabled on this server"
    if method in ("PUT", "DELETE") and path.startswith("/model/"):
        # MONAI Label copies an upload (non-atomically, unchecked) over the model file infer uses, which until
        # training publishes one is the packaged model inside the installed package; DELETE moves that file away.
        return 403, "model files are replaced only by training (atomic publish); uploading or deleting them is disabled"
    declared = headers.get("content-length", "")
    if method in BODY_METHODS and declared.isdigit() and int(declared) > max_upload_bytes() + ENVELOPE_BYTES:
        return 413, _too_large(int(declared), max_upload_bytes())  # refused before a byte of the body is read
    return None


class GuardMiddleware:
    """Pure ASGI (no body buffering): ``refusal`` first, then the size limit counted as the body streams."""

    def __init__(self, app, origins: Iterable[str] = ()) -> None:
        self.app, self.origins = app, list(origins)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refused = refusal(scope, headers, self.origins)
        if refused is not None:
            return await _send_json(send, *refused)
        if scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        limit, received = max_upload_bytes() + ENVELOPE_BYTES, 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # chunked uploads declare no length
                    raise HTTPException(status_code=413, detail=_too_large(None, max_upload_bytes()))
            return message

        await self.app(scope, limited_receive, send)


# ----- exception handlers: statuses come from lib.http_errors (one mapping for every endpoint) -----------------------
async def _mapped(request, exc: Exception) -> JSONResponse:
    status, detail = classify(exc)
    if is_server_fault(status):
        logger.error(f"{request.method} {request.url.path} failed", exc_info=exc)
    elif status == 507:
        logger.error(f"{request.method} {request.url.path}: disk full ({exc})")
    return JSONResponse({"detail": detail}, status_code=status)


# Client mistakes that MONAI Label's endpoints themselves answer with 500.
CLIENT_ERRORS_SENT_AS_500 = {
    "Neither Image nor File not Session ID input is provided":
        "no image: give a datastore image id (?image=), a multipart file, or a session_id",
}


async def _http_error(request, exc):
    from fastapi.exception_handlers import http_exception_handler

    if exc.status_code == 500 and exc.detail in CLIENT_ERRORS_SENT_AS_500:
        exc = HTTPException(status_code=400, detail=CLIENT_ERRORS_SENT_AS_500[exc.detail])
    return await http_exception_handler(request, exc)


# ----- JWT -----------------------------------------------------------------------------------------------------------
class _JWTWithAlgorithms:
    """Stands in for the ``jwt`` module inside monailabel's auth: same decode, with the algorithms pinned by the
    server (never taken from the token, so ``alg: none`` or HS256-with-the-public-key tokens are refused)."""

    def __init__(self, jwt_module, algorithms: list[str]) -> None:
        self._jwt, self.algorithms = jwt_module, algorithms

    def decode(self, token: str, key: Any, options: Optional[dict] = None, **kwargs):
        kwargs.setdefault("algorithms", self.algorithms)
        return self._jwt.decode(token, key, options=options, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._jwt, name)


def _fix_jwt() -> None:
    from monailabel.endpoints.user import auth

    if not isinstance(auth.jwt, _JWTWithAlgorithms):
        auth.jwt = _JWTWithAlgorithms(auth.jwt, _csv_env("COVID_MTL_AUTH_ALGORITHMS") or ["RS256"])


def install(fastapi_app) -> None:
    """Add the guards to MONAI Label's FastAPI app (idempotent: /reload or a cache clear may re-create our app).

    MONAI Label builds our app inside its lifespan, after Starlette has built the middleware stack (it does so on
    the first ASGI call, which is the lifespan) and refuses changes to a built stack; dropping the built stack
    makes the next request rebuild it with our middleware and handlers.
    """
    from monailabel.interfaces.exception import MONAILabelException
    from starlette.exceptions import HTTPException as StarletteHTTPException

    _fix_jwt()
    if getattr(fastapi_app.state, "covid_mtl_guard", False):
        return
    from monailabel.config import settings

    origins = _csv_env("COVID_MTL_CORS_ORIGINS") + [str(o) for o in settings.MONAI_LABEL_CORS_ORIGINS or []]
    fastapi_app.middleware_stack = None
    fastapi_app.add_middleware(GuardMiddleware, origins=origins)
    fastapi_app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in (MONAILabelException, json.JSONDecodeError, CovidMTLError, ModelUnavailable, OSError, Exception):
        fastapi_app.add_exception_handler(kind, _mapped)
    _restrict_cors(fastapi_app, origins)
    fastapi_app.state.covid_mtl_guard = True


def _restrict_cors(fastapi_app, origins: list[str]) -> None:
    """MONAI Label allows every origin when none is configured; allow only the configured ones."""
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    for i, middleware in enumerate(fastapi_app.user_middleware):
        allows_all = "*" in middleware.kwargs.get("allow_origins", [])
        if middleware.cls is CORSMiddleware and allows_all and "*" not in origins:
            fastapi_app.user_middleware[i] = Middleware(
                CORSMiddleware, allow_origins=origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"]
            )
