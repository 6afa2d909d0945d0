"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) to the PACS a server serves from, with every failure typed.

Plain ``requests`` rather than MONAI Label's client: retrieval asks for ``transfer-syntax=*`` (the PACS sends the
instances as it stores them; an Orthanc without its GDCM plugin answers 500 when asked to transcode JPEG 2000),
instance bytes are written to disk as they arrive in the multipart reply (no decode and re-encode), and each
failure becomes :class:`lib.errors.PacsUnreachable` (no answer: 503) or :class:`lib.errors.PacsRefused` (an HTTP
error, wrong credentials included: 502), whose messages name the PACS without its credentials.
"""
from __future__ import annotations

import io
import logging
import os
import re
import uuid
from http import HTTPStatus
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import requests
from lib.errors import PacsRefused, PacsUnreachable
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
ANY_TRANSFER_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 300.0  # a whole series in one reply


def public_url(url: str) -> str:
    """``url`` without user and password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


BOUNDARY = re.compile(r'\bboundary\s*=\s*(?:"([^"]{1,200})"|([^";\s]{1,200}))', re.IGNORECASE)


def multipart_parts(body: bytes, content_type: str) -> List[Tuple[Dict[str, str], bytes]]:
    """(headers, payload) of each part of a ``multipart/related`` body, a PACS's reply or a viewer's upload (RFC 2046:
    a delimiter starts a line; the CR LF before it belongs to the delimiter; dicomweb-client opens the body with CR LF,
    which is allowed). ValueError without a boundary, without the closing delimiter (a cut-off body), or for a part
    without a header end."""
    found = BOUNDARY.search(content_type or "")
    if not found:
        raise ValueError(f"multipart body without a boundary ({content_type!r})")
    delimiter = b"--" + (found.group(1) or found.group(2)).encode("latin-1")
    pieces = (b"\r\n" + body).split(b"\r\n" + delimiter)
    if len(pieces) < 2 or not pieces[-1].startswith(b"--"):
        raise ValueError("the multipart body has no closing delimiter")
    result = []
    for piece in pieces[1:-1]:
        head, sep, payload = piece.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no header end")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        result.append((headers, payload))
    return result


def split_multipart(body: bytes, content_type: str) -> Iterator[bytes]:
    """The payloads of a ``multipart/related`` body, in order."""
    for _, payload in multipart_parts(body, content_type):
        yield payload


class PacsClient:
    """One PACS: ``url`` is its DICOMweb root (e.g. ``http://127.0.0.1:8042/dicom-web``)."""

    def __init__(self, url: str, username: str = "", password: str = "",
                 timeouts: Tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) -> None:
        self.url = url.rstrip("/")
        self.public_url = public_url(self.url)
        self.timeouts = timeouts
        self.session = requests.Session()
        if username or password:
            self.session.auth = (username, password)
        # A PACS closes idle keep-alive connections (Orthanc after about a second); a read sent on one just as it
        # closes fails with "connection aborted" (seen once in a training run). Reads are retried; writes (STOW)
        # never, so nothing is stored twice.
        retry = Retry(total=2, connect=2, read=2, status=0, other=0, backoff_factor=0.2,
                      allowed_methods=frozenset({"GET"}), raise_on_status=False)
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(max_retries=retry))

    # ----- one request, every failure typed ------------------------------------------------------------------------
    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeouts, **kwargs)
        except requests.Timeout as exc:
            raise PacsUnreachable(self.public_url, f"no answer within {self.timeouts[1]:.0f} s to {what}") from exc
        except requests.ConnectionError as exc:
            raise PacsUnreachable(self.public_url, f"connection failed during {what}") from exc
        if not response.ok:  # the PACS's status, reported in ours (lib.http_errors decides which)
            server_side = response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR
            reason = re.sub(r"\s+", " ", response.text[:200]).strip() if server_side else ""
            raise PacsRefused(self.public_url, what, response.status_code, reason)
        return response

    def _json(self, path: str, what: str, params: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        response = self._request("GET", path, what, params=params, headers={"Accept": DICOM_JSON})
        if response.status_code == HTTPStatus.NO_CONTENT or not response.content:
            return []
        try:
            return list(response.json())
        except ValueError as exc:
            raise PacsRefused(self.public_url, what, response.status_code, "the reply is not DICOM JSON") from exc

    # ----- QIDO-RS -------------------------------------------------------------------------------------------------
    def search_series(self, filters: Dict[str, Any], fields: Tuple[str, ...] = ()) -> list:
        """Series matching ``filters`` (DICOM keywords) as pydicom Datasets (study-level fields included)."""
        from pydicom import Dataset

        params: Dict[str, Any] = dict(filters)
        if fields:
            params["includefield"] = ",".join(fields)
        return [Dataset.from_json(item) for item in self._json("/series", "the series search", params)]

    def holds(self, series_uid: str, instance_uid: str) -> bool:
        """Whether the PACS holds a series or an instance with one of these UIDs."""
        return bool(self._json("/series", "the series search", {"SeriesInstanceUID": series_uid})
                    or self._json("/instances", "the instance search", {"SOPInstanceUID": instance_uid}))

    # ----- WADO-RS -------------------------------------------------------------------------------------------------
    def series_metadata(self, study_uid: str, series_uid: str) -> list:
        from pydicom import Dataset

        items = self._json(f"/studies/{study_uid}/series/{series_uid}/metadata", f"the metadata of series {series_uid}")
        return [Dataset.from_json(item) for item in items]

    def retrieve_series(self, study_uid: str, series_uid: str, folder: str) -> List[str]:
        """Every instance of the series, as stored, into ``folder`` (``<n>.dcm``); the paths written."""
        response = self._request("GET", f"/studies/{study_uid}/series/{series_uid}", f"the retrieval of series "
                                 f"{series_uid}", headers={"Accept": ANY_TRANSFER_SYNTAX})
        os.makedirs(folder, exist_ok=True)
        paths = []
        try:
            parts = split_multipart(response.content, response.headers.get("Content-Type", ""))
            for n, payload in enumerate(parts):
                path = os.path.join(folder, f"{n:05d}.dcm")
                with open(path, "wb") as f:
                    f.write(payload)
                paths.append(path)
        except ValueError as exc:
            raise PacsRefused(self.public_url, f"the retrieval of series {series_uid}", response.status_code,
                              str(exc)) from exc
        return paths

    def retrieve_instance(self, study_uid: str, series_uid: str, instance_uid: str):
        import pydicom

        what = f"the retrieval of instance {instance_uid}"
        response = self._request("GET", f"/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}", what,
                                 headers={"Accept": ANY_TRANSFER_SYNTAX})
        try:
            payload = next(split_multipart(response.content, response.headers.get("Content-Type", "")))
            return pydicom.dcmread(io.BytesIO(payload))
        except (StopIteration, ValueError, pydicom.errors.InvalidDicomError) as exc:
            raise PacsRefused(self.public_url, what, response.status_code, "no DICOM instance in the reply") from exc

    def viewer_read(self, url: str, accept: Optional[str]) -> Tuple[int, str, bytes]:
        """(status, content type, body) of a viewer's read that ``lib.dicomweb_proxy`` checked and built under this
        PACS's root. The PACS's own answer is passed on, except that its refusal of this server's credentials is
        this server's problem (502), never a login prompt for the viewer."""
        if not url.startswith(self.url + "/"):
            raise ValueError(f"{url!r} is not under the PACS root")
        try:
            response = self.session.get(url, headers={"Accept": accept} if accept else {}, timeout=self.timeouts,
                                        allow_redirects=False)
        except requests.Timeout as exc:
            raise PacsUnreachable(self.public_url, f"no answer within {self.timeouts[1]:.0f} s to a viewer's read") \
                from exc
        except requests.ConnectionError as exc:
            raise PacsUnreachable(self.public_url, "connection failed during a viewer's read") from exc
        if response.status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN) or response.is_redirect:
            raise PacsRefused(self.public_url, "a viewer's read", response.status_code)
        return response.status_code, response.headers.get("Content-Type", ""), response.content

    # ----- STOW-RS -------------------------------------------------------------------------------------------------
    def store(self, dataset, what: str) -> None:
        """Store one instance; a PACS that answers with a failure (HTTP error, or a FailedSOPSequence) raises."""
        buffer = io.BytesIO()
        dataset.save_as(buffer, write_like_original=False)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buffer.getvalue()
                + f"\r\n--{boundary}--\r\n".encode())
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": DICOM_JSON}
        response = self._request("POST", "/studies", what, data=body, headers=headers)
        try:
            reply = response.json() if response.content else {}
        except ValueError:
            reply = {}
        if isinstance(reply, dict) and reply.get("00081198", {}).get("Value"):  # FailedSOPSequence
            raise PacsRefused(self.public_url, what, response.status_code, "the PACS did not store the instance")
