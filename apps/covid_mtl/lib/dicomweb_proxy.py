"""What MONAI Label's DICOMweb proxy (``/proxy/...``) may forward to the PACS: a viewer's reads, nothing else.

MONAI Label forwards any method and any path under ``/proxy/dicom/`` to the PACS with the server's own PACS
credentials, joining the client's path to the PACS URL as given, so ``..%2F..%2Ftools%2Fbulk-delete`` reached
Orthanc's REST API and deleted the whole PACS. Here a request passes only when it is

- ``GET`` on ``/proxy/dicom/qido/...`` or ``/proxy/dicom/wado/...``, and
- its path, checked after every percent-decoding step (encoded and double-encoded dots, slashes and backslashes
  included), has no dot segments, empty segments (``//host``), backslashes, control characters or scheme, and
- its fully decoded path is a QIDO-RS search or a WADO-RS retrieval of the DICOMweb grammar below (UIDs are digits
  and dots, frame lists are numbers).

The PACS URL is then rebuilt from those checked segments (``urllib.parse``), never from the client's text; the query
string is passed as sent.

One write is taken, never forwarded: ``POST /proxy/dicom/wado/studies`` (OHIF's STOW-RS of its *Export DICOM SEG*)
with a multipart DICOM body, handed to ``lib.viewer_seg``, which checks it is one SEG lying on a CT series of the
PACS and saves it as that series' ``final`` label; the server's own client (``lib.pacs_client``) then stores a new
correction SEG. Everything else (other POSTs, STOW-RS of anything but such a SEG, Orthanc's REST API, the proxy
without an operation) is refused before MONAI Label reads a byte of the body. Writes into the PACS go only through
the server's own client: correction SEGs and, with ``store_results``, the AI's SEG and SR.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from lib import viewer_seg
from lib.errors import BadRequest, NotFound, Refused, TooLarge

PROXY_PREFIX = "/proxy/"
READ_ROOTS = ("/proxy/dicom/qido/", "/proxy/dicom/wado/")
READ_METHODS = ("GET",)
MAX_DECODINGS = 4  # a path still changing after this many decodings is an attack, not a viewer
MAX_PATH_CHARS = 1024

UID = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40}){0,40}")  # DICOM UIDs: digits and dots, at most 64 characters
FRAMES = re.compile(r"[1-9][0-9]{0,5}(?:,[1-9][0-9]{0,5}){0,999}")
BULK_KEY = re.compile(r"[0-9A-Fa-f]{8}|[0-9]{1,5}")  # tags (gggg eeee) and sequence item numbers
LEVELS = ("studies", "series", "instances")
VIEWS = ("metadata",)
"""``rendered`` and ``thumbnail`` are not passed: they make the PACS decode (and Debian's Orthanc with GDCM crashes
under a viewer's parallel decodes); OHIF renders its thumbnails itself from the frames."""
STORED_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
STORED_INSTANCES = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CONTROL = re.compile(r"[\x00-\x20\x7f\\]")  # control characters, spaces (CR LF: header injection), backslashes

ACCEPT = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,511}")  # printable ASCII: no header injection
WHAT_PASSES = ("the DICOMweb proxy passes a viewer's reads: GET /proxy/dicom/qido/... or /proxy/dicom/wado/... "
               "on studies, series, instances, metadata, frames and bulk data; " + viewer_seg.WHAT_PASSES)


@dataclass(frozen=True)
class ViewerRead:
    """A checked read: ``segments`` under the DICOMweb root, ``query`` as the client sent it."""

    segments: Tuple[str, ...]
    query: str

    @property
    def path(self) -> str:
        return "/" + "/".join(quote(s, safe="") for s in self.segments)

    def accept(self, asked: str) -> Optional[str]:
        """The Accept header the PACS gets: pixel data always as stored (``transfer-syntax=*``), so the PACS never
        transcodes (an Orthanc without GDCM answers 500 for JPEG 2000, one with it crashed under a viewer's load);
        the viewer decodes. Searches and metadata: what the viewer asked for, when it is printable ASCII."""
        if "frames" in self.segments or "bulk" in self.segments:
            return STORED_FRAMES
        if self.segments[-1] == "metadata" or len(self.segments) % 2 == 1:  # metadata, or a search (an odd length)
            return asked if ACCEPT.fullmatch(asked or "") else None
        return STORED_INSTANCES

    def url(self, root: str) -> str:
        """The PACS URL of this read under the DICOMweb ``root`` (its path joined, never climbed out of)."""
        parts = urlsplit(root.rstrip("/"))
        return urlunsplit((parts.scheme, parts.netloc, parts.path + self.path, self.query, ""))


def _decodings(text: str) -> list[str]:
    """``text`` and each of its percent-decodings until nothing changes."""
    steps = [text]
    while True:
        decoded = unquote(steps[-1], errors="strict")
        if decoded == steps[-1]:
            return steps
        if len(steps) > MAX_DECODINGS:
            raise BadRequest(f"proxy path {text[:200]!r} is percent-encoded {MAX_DECODINGS} times or more; "
                             f"{WHAT_PASSES}")
        steps.append(decoded)


def _check_step(text: str, original: str) -> None:
    """One decoding of the path: nothing in it may leave the DICOMweb root."""
    problem = None
    if CONTROL.search(text):
        problem = "a backslash, space or control character"
    elif ":" in text:
        problem = "a scheme or absolute URL"
    elif text.startswith("/") or "//" in text:
        problem = "an empty segment (//host)"
    elif any(segment in (".", "..") for segment in text.split("/")):
        problem = "a '.' or '..' segment"
    if problem:
        raise BadRequest(f"proxy path {original[:200]!r} holds {problem} (encoded or not) and would leave the "
                         f"DICOMweb root; {WHAT_PASSES}")


def is_viewer_resource(segments: Tuple[str, ...]) -> bool:
    """QIDO-RS searches and WADO-RS retrievals: ``studies[/UID[/series[/UID[/instances[/UID]]]]]`` with a view
    (metadata), frames or bulk data at the end; ``series`` and ``instances`` searches."""
    if len(segments) == 1:
        return segments[0] in LEVELS
    for depth, level in enumerate(LEVELS):
        at = 2 * depth
        if len(segments) <= at or segments[at] != level:
            return False
        if len(segments) == at + 1:
            return depth > 0  # a search inside the level above (studies/UID/series)
        if not UID.fullmatch(segments[at + 1]) or len(segments[at + 1]) > 64:
            return False
        rest = segments[at + 2:]
        if not rest or (len(rest) == 1 and rest[0] in VIEWS):
            return True
        if level == "studies" and rest == ("instances",):
            return True
        if level == "instances":
            if rest[0] == "frames":
                return len(rest) == 2 and bool(FRAMES.fullmatch(rest[1]))
            return rest[0] == "bulk" and 1 < len(rest) <= 9 and all(BULK_KEY.fullmatch(k) for k in rest[1:])
    return False


def viewer_read(method: str, raw_path: str, query: str = "") -> ViewerRead:
    """The read a proxy request asks for; ``Refused`` (403) or ``BadRequest`` (400) naming why otherwise.

    ``raw_path`` is the path as sent (still percent-encoded, the ASGI ``raw_path``)."""
    if len(raw_path) > MAX_PATH_CHARS:
        raise BadRequest(f"proxy path of {len(raw_path)} characters (at most {MAX_PATH_CHARS}); {WHAT_PASSES}")
    if method.upper() not in READ_METHODS:
        raise Refused(f"{method} through the DICOMweb proxy is refused: nothing is written into the PACS through "
                      f"this server except its own SEGs; {WHAT_PASSES}")
    root = next((r for r in READ_ROOTS if raw_path.startswith(r)), None)
    if root is None:
        raise Refused(f"proxy path {raw_path[:200]!r} is not a DICOMweb read; {WHAT_PASSES}")
    rest = raw_path[len(root):]
    try:
        steps = _decodings(rest)
    except UnicodeDecodeError:
        raise BadRequest(f"proxy path {raw_path[:200]!r} is not valid percent-encoded UTF-8") from None
    for step in steps:
        _check_step(step, raw_path)
    segments = tuple(steps[-1].rstrip("/").split("/"))
    if not is_viewer_resource(segments):
        raise Refused(f"proxy path {raw_path[:200]!r} is not a QIDO-RS or WADO-RS read; {WHAT_PASSES}")
    if re.search(r"[\x00-\x20\x7f#]", query):
        raise BadRequest("proxy query string holds spaces, control characters or a fragment")
    return ViewerRead(segments, query)


async def forward(request, op: str, path: str):
    """Stands in for MONAI Label's ``proxy_dicom`` (``lib.endpoint_hooks`` puts it there): the checked read, sent
    by the server's own PACS client; the reply carries the PACS's status, body and content type and no other header
    (no ``WWW-Authenticate`` from the PACS, nothing that names its credentials)."""
    from fastapi.responses import Response
    from lib.monailabel_compat import app_instance
    from lib.pacs_client import PacsClient
    from starlette.concurrency import run_in_threadpool

    if viewer_seg.is_store(request.method, target(request.scope)[0]):
        return await viewer_seg.store(request)
    read = viewer_read(request.method, *target(request.scope))
    client = getattr(app_instance().datastore(), "client", None)
    if not isinstance(client, PacsClient):
        raise NotFound("this server serves a folder of studies, not a PACS: its DICOMweb proxy forwards nothing")
    status, content_type, body = await run_in_threadpool(
        client.viewer_read, read.url(client.url), read.accept(request.headers.get("accept", "")))
    return Response(content=body, status_code=status, media_type=content_type or None)


def exposure_warning(studies: str, auth_on: bool, host: str) -> Optional[str]:
    """The one line a server that serves a PACS without authentication beyond loopback says at start-up."""
    if auth_on or not studies.startswith(("http://", "https://")):
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    from lib.pacs_client import public_url

    return (f"authentication is off and the server listens on {host}: anyone who reaches it can read the PACS "
            f"{public_url(studies)} through /proxy/dicom (its studies, series and images); turn authentication on "
            f"with MONAI_LABEL_AUTH_ENABLE=true and MONAI_LABEL_AUTH_REALM_URI (docs/SECURITY.md), or serve on "
            f"127.0.0.1")


def target(scope) -> Tuple[str, str]:
    """(path as sent, still percent-encoded; query string) of an ASGI request."""
    raw_path = scope.get("raw_path") or quote(scope["path"]).encode()
    return raw_path.decode("latin-1"), scope.get("query_string", b"").decode("latin-1")


def under_proxy(path: str) -> bool:
    return path == PROXY_PREFIX.rstrip("/") or path.startswith(PROXY_PREFIX)


def refusal(scope) -> Optional[Exception]:
    """The error for a proxy request (ASGI ``scope``) that must not be forwarded (or taken as a viewer's SEG),
    else None."""
    raw_path, query = target(scope)
    try:
        if viewer_seg.is_store(scope["method"], raw_path):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            viewer_seg.check_request(query, headers)
        else:
            viewer_read(scope["method"], raw_path, query)
    except (BadRequest, Refused, TooLarge) as exc:
        return exc
    return None
