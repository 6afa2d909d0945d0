"""Small HTTP client for the covid-mtl MONAI Label server: only the endpoints the Slicer module uses.

No Qt, no Slicer: it runs in Slicer's Python and in a plain interpreter (tests). Every failure becomes a
CovidMTLLogicError whose text a radiologist can act on (server down, server said no and why), never a traceback.
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
RENEW_BEFORE_S = 30.0  # a token this close to its expiry is renewed before the next request


class CovidMTLLogicError(Exception):
    """A failure the user can read: the message says what went wrong and, where known, what to do."""


@dataclass
class Part:
    """One part of a multipart reply."""

    name: str
    filename: Optional[str]
    content_type: str
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> dict[str, Part]:
    """Split a multipart body (MONAI Label's infer reply) into parts by name.

    The email package does the MIME work (the cgi module is gone from Python 3.13); binary payloads come back
    byte for byte because the parser reads bytes and nothing declares a transfer encoding.
    """
    if "boundary=" not in content_type:
        raise CovidMTLLogicError(f"multipart reply without a boundary (Content-Type: {content_type!r})")
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise CovidMTLLogicError("the server's multipart reply could not be parsed")
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        parts[str(name)] = Part(str(name), part.get_filename(), part.get_content_type(), data)
    return parts


def _filename_from(response: requests.Response, default: str) -> str:
    """The file name the server gave (Content-Disposition), reduced to a safe base name."""
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", disposition)
    name = Path(match.group(1)).name if match else ""
    return name if name and not name.startswith(".") else default


def _reason(exc: BaseException) -> str:
    """Short cause of a connection failure, found by walking the exception chain (requests nests urllib3's)."""
    seen: Optional[BaseException] = exc
    visited: set[int] = set()
    text = str(exc)
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return "host name not found"
    if "timed out" in lowered:
        return "connection timed out"
    return text.splitlines()[-1][:200] if text else type(exc).__name__


def token_expiry(token: str) -> Optional[float]:
    """The ``exp`` claim (seconds since the epoch) of a JWT, read without checking its signature (the server
    checks it; the client only needs to know when to renew); None when the token carries none."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def _detail(response: requests.Response) -> str:
    """The server's own explanation: MONAI Label / FastAPI put it in {"detail": ...}."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}, ...]
        detail = "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail if isinstance(d, dict)
        )
    if not detail:
        detail = response.text.strip()[:300] or response.reason or "no explanation given"
    return str(detail)


class CovidMTLClient:
    """The endpoints of docs/CONTRACTS.md section HTTP. ``idle`` (optional) is called every ~50 ms while a request
    is in flight; Slicer passes ``slicer.app.processEvents`` so the window repaints during a long inference.

    Login (a server with MONAI Label's authentication on): :meth:`login` exchanges a user name and password for a
    token at ``/auth/token``. The token, and the password needed to renew it, live in this object only: never in
    the scene, the parameter node, a file or a log line. The token is renewed shortly before it expires and once
    more when the server answers 401."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 600.0, idle: Optional[Callable[[], None]] = None,
                 token: Optional[str] = None):
        url = (url or DEFAULT_URL).strip().rstrip("/")
        self.url = url if "://" in url else f"http://{url}"
        self.timeout = timeout
        self.idle = idle
        self.session = requests.Session()
        self._credentials: Optional[tuple[str, str]] = None  # kept only to renew the token
        self._expires: Optional[float] = None
        # A token given by the caller or the environment (scripts); the panels log in instead.
        token = token or os.environ.get("COVID_MTL_TOKEN")
        if token:
            self._use_token(token)

    def __repr__(self) -> str:  # never the token or the password
        return f"CovidMTLClient({self.url!r}, logged_in={self.logged_in})"

    # -- login ----------------------------------------------------------------------------------------------------
    @property
    def logged_in(self) -> bool:
        return "Authorization" in self.session.headers

    def auth_required(self) -> bool:
        """Whether the server has MONAI Label's authentication on (``GET /auth/``, open to everyone)."""
        response = self._send("GET", "/auth/", "authentication check", ok=(200, 404), timeout=min(self.timeout, 30))
        return response.status_code == 200 and bool(self.json(response, "authentication check").get("enabled"))

    def login(self, username: str, password: str) -> None:
        """A token for ``username`` from the server's ``/auth/token`` (its identity provider checks the password)."""
        if not username or not password:
            raise CovidMTLLogicError("Enter a user name and a password to log in")
        self._credentials = None
        self.session.headers.pop("Authorization", None)
        response = self._send("POST", "/auth/token", f"login of {username}", timeout=min(self.timeout, 60),
                              data={"username": username, "password": password, "grant_type": "password"})
        token = self.json(response, "login").get("access_token")
        if not token:  # MONAI Label answers null when its authentication is off: nothing to send
            return
        self._use_token(str(token))
        self._credentials = (username, password)

    def logout(self) -> None:
        self._credentials, self._expires = None, None
        self.session.headers.pop("Authorization", None)

    def _use_token(self, token: str) -> None:
        self.session.headers["Authorization"] = f"Bearer {token}"
        self._expires = token_expiry(token)

    def _renew(self) -> bool:
        if self._credentials is None:
            return False
        self.login(*self._credentials)
        return True

    # -- transport --------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,),
                **kwargs: Any) -> requests.Response:
        """One HTTP call; ``what`` names the action in error messages ("classification of image X"). A token about
        to expire is renewed first, and a 401 is retried once with a new one."""
        if self._credentials is not None and self._expires is not None and time.time() > self._expires - RENEW_BEFORE_S:
            self._renew()
        response = self._send(method, path, what, ok + (401,), **kwargs)
        if response.status_code == 401 and 401 not in ok and self._renew():
            for _, handle, *_ in (kwargs.get("files") or {}).values():
                handle.seek(0)  # an upload is sent again from its start
            response = self._send(method, path, what, ok + (401,), **kwargs)
        if response.status_code == 401 and 401 not in ok:
            hint = ("log in again" if self._credentials else "log in with your user name and password (Connect)")
            raise CovidMTLLogicError(f"The covid-mtl server refused the {what}: {_detail(response)} (HTTP 401): "
                                     f"{hint}")
        return response

    def _send(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,),
              **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self._in_background(lambda: self.session.request(method, self.url + path, **kwargs))
        except requests.Timeout as exc:
            raise CovidMTLLogicError(
                f"The covid-mtl server at {self.url} did not answer within {kwargs['timeout']:.0f} s ({what})"
            ) from exc
        except requests.ConnectionError as exc:
            raise CovidMTLLogicError(
                f"Cannot reach the covid-mtl server at {self.url}: {_reason(exc)}. "
                "Check the address and that the server is running (make serve)."
            ) from exc
        except requests.RequestException as exc:
            raise CovidMTLLogicError(f"Request to the covid-mtl server at {self.url} failed ({what}): {exc}") from exc
        if response.status_code not in ok:
            raise CovidMTLLogicError(
                f"The covid-mtl server refused the {what}: {_detail(response)} (HTTP {response.status_code})"
            )
        return response

    def _in_background(self, call: Callable[[], requests.Response]) -> requests.Response:
        """Run ``call`` in a worker thread and keep calling ``idle`` until it returns (no idle: run inline).

        Only the network wait leaves the main thread; the MRML scene is touched by the caller afterwards.
        """
        if self.idle is None:
            return call()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["response"] = call()
            except BaseException as exc:  # handed back to the main thread below
                box["error"] = exc

        worker = threading.Thread(target=work, name="covid-mtl-http", daemon=True)
        worker.start()
        while worker.is_alive():
            self.idle()
            worker.join(0.05)
        if "error" in box:
            raise box["error"]
        return box["response"]

    def json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise CovidMTLLogicError(
                f"The server at {self.url} did not answer the {what} like a MONAI Label server (no JSON)"
            ) from exc

    # -- endpoints ----------------------------------------------------------------------------------------------
    def info(self) -> dict:
        what = "information request"
        return self.json(self.request("GET", "/info/", what, timeout=min(self.timeout, 30)), what)

    def has_image(self, image_id: str) -> bool:
        # No check_sum: MONAI Label 0.8.5 compares a stripped digest with "SHA256:<digest>", so a check_sum never
        # matches; the logic's image ids are derived from the voxel content, which makes existence enough.
        response = self.request("HEAD", "/datastore/image", f"check for image {image_id}", ok=(200, 404),
                                params={"image": image_id})
        return response.status_code == 200

    def upload_image(self, image_id: str, path: Path) -> str:
        with open(path, "rb") as f:
            response = self.request(
                "PUT", "/datastore/image", f"upload of image {image_id}", params={"image": image_id},
                files={"file": (Path(path).name, f, "application/octet-stream")}, data={"params": "{}"},
            )
        return self.json(response, "upload").get("image", image_id)

    def infer(self, model: str, image_id: str, params: Optional[dict] = None) -> tuple[dict, Optional[Part]]:
        """Result JSON and the mask part (None when the server sent JSON only)."""
        what = f"classification of image {image_id}"
        response = self.request("POST", f"/infer/{model}", what, params={"image": image_id},
                                data={"params": json.dumps(params or {})})
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("multipart/"):
            parts = parse_multipart(response.content, content_type)
            if "params" not in parts:
                raise CovidMTLLogicError(f"The server's {what} reply has no 'params' part (parts: {sorted(parts)})")
            try:
                result = json.loads(parts["params"].data.decode("utf-8"))
            except ValueError as exc:
                raise CovidMTLLogicError(f"The server's {what} reply carries unreadable JSON") from exc
            return result, parts.get("image")
        return self.json(response, what), None

    def download_image(self, image_id: str, folder: Path) -> Path:
        response = self.request("GET", "/datastore/image", f"download of image {image_id}", params={"image": image_id})
        path = Path(folder) / _filename_from(response, f"{image_id}.nii.gz")
        path.write_bytes(response.content)
        return path

    def save_label(self, image_id: str, label_path: Path, tag: str, params: dict) -> dict:
        with open(label_path, "rb") as f:
            response = self.request(
                "PUT", "/datastore/label", f"correction for image {image_id}", params={"image": image_id, "tag": tag},
                files={"label": (Path(label_path).name, f, "application/octet-stream")},
                data={"params": json.dumps(params)},
            )
        return self.json(response, "correction")

    def next_sample(self, strategy: str) -> dict:
        what = "next-case request"
        return self.json(self.request("POST", f"/activelearning/{strategy}", what, json={}), what)

    def start_training(self, model: str, params: dict) -> dict:
        return self.json(self.request("POST", f"/train/{model}", "training request", json=params), "training request")

    def training_status(self) -> Optional[dict]:
        """The latest training task, or None when the server never trained (MONAI Label answers 404)."""
        response = self.request("GET", "/train/", "training status request", ok=(200, 404))
        return None if response.status_code == 404 else self.json(response, "training status request")

    def stop_training(self) -> dict:
        return self.json(self.request("DELETE", "/train/", "request to stop training"), "request to stop training")
