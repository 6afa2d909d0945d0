"""The one write the DICOMweb proxy accepts: a viewer's correction, one DICOM SEG, sent as OHIF sends it.

OHIF's segmentation panel (*Export DICOM SEG*, then a *Create Report* dialog asking for a name) builds a SEG with
dcmjs and stores it with STOW-RS on its data source: ``POST {wadoRoot}/studies``, that is
``/proxy/dicom/wado/studies``, with ``Content-Type: multipart/related; type="application/dicom"; boundary=...`` and
one part (dicomweb-client's ``storeInstances``; OHIF's configuration has no separate STOW root). That request, and
only that one, is taken here instead of being refused. The SEG itself never reaches the PACS:

1. annotator role when authentication is on (403), as ``PUT /datastore/label``;
2. one part, ``application/dicom``, a DICOM file (400), of SOP class Segmentation Storage (403), at most
   ``MAX_SEG_BYTES`` (413, checked on ``Content-Length`` before the body is read and counted as it arrives);
3. it references exactly one series (422), a CT series this server serves from its PACS (404 unknown, 422 not CT),
   under the same study (422);
4. it lies on that series, frame by frame (``covid_mtl.measure.dicom_seg.read_dicom_seg``: referenced instances,
   frame size, each frame's position and orientation; 422);
5. its mask becomes the series' ``final`` label through the datastore's ``save_label``, the same path as
   ``PUT /datastore/label``: grid, 0/1 values, class and size checked again, then the server's own PACS client
   stores a new correction SEG (highdicom, SEMIAUTOMATIC, with the class) under the study, which training reads.
   It takes the viewer SEG's series and instance UIDs when the PACS holds neither: OHIF, once its export is
   answered, loads the SEG it sent back from the PACS by those UIDs and shows it;
6. the same viewer SEG sent again (a double click, a retry) is refused (409): it would be the same correction twice.

The class: OHIF cannot attach one. The name typed in OHIF's *Create Report* dialog is the SEG's Series Description;
when it is exactly one of ``covid``, ``normal``, ``other``, ``non-covid`` (any case), that is the class; a SEG that
carries ``classification: <class>`` in its Content Description (as this server's own SEGs do) keeps it; otherwise
``DEFAULT_CLASS`` (``covid``) is assumed and the label records ``class_assumed: true``. The radiologist changes the
class by saving the correction again from Slicer or the project's web page with another class (a new SEG supersedes
the old), or by exporting again from OHIF with the class as the name.
"""
from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from typing import Any, Dict, List, Tuple

from lib.errors import AlreadyExists, AppError, BadRequest, NotFound, Refused, TooLarge, Unprocessable
from lib.pacs_client import BOUNDARY, multipart_parts

from covid_mtl.errors import CovidMTLError
from covid_mtl.image import LABELS
from covid_mtl.measure.dicom_seg import SEG_STORAGE, read_dicom_seg, seg_classification

logger = logging.getLogger(__name__)

STORE_PATH = "/proxy/dicom/wado/studies"  # OHIF's STOW-RS target: its wadoRoot + "/studies"
STORE_METHOD = "POST"
MAX_SEG_BYTES = 2**29  # 512 MB; a 1,000-slice 512x512 binary SEG is 33 MB bit-packed, 262 MB unpacked
DEFAULT_CLASS = "covid"
SOURCE = "ohif"
WHAT_PASSES = (f"the only write is a viewer's correction: {STORE_METHOD} {STORE_PATH} with one DICOM SEG "
               f"(multipart/related; type=\"application/dicom\") on a CT series of this server's PACS")
_MULTIPART_DICOM = re.compile(r'^\s*multipart/related\s*;(?=.*\btype\s*=\s*"?application/dicom"?\s*(?:;|$))',
                              re.IGNORECASE)


def is_store(method: str, raw_path: str) -> bool:
    """Whether a proxy request asks for the one write (the path exactly as OHIF sends it: no encodings)."""
    return method.upper() == STORE_METHOD and raw_path.rstrip("/") == STORE_PATH


def check_request(query: str, headers: Dict[str, str]) -> None:
    """What can be checked before a byte of the body is read: no query, a multipart DICOM body, its size."""
    if query:
        raise BadRequest(f"{STORE_PATH} takes no query string; {WHAT_PASSES}")
    content_type = headers.get("content-type", "")
    if not _MULTIPART_DICOM.match(content_type) or not BOUNDARY.search(content_type):
        raise BadRequest(f"content type {content_type[:200]!r} is not multipart/related; type=\"application/dicom\" "
                         f"with a boundary; {WHAT_PASSES}")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SEG_BYTES:
        raise TooLarge("DICOM SEG upload", int(declared), MAX_SEG_BYTES)


def parts(body: bytes, content_type: str) -> List[Tuple[Dict[str, str], bytes]]:
    """(headers, payload) of each part of the upload (``lib.pacs_client.multipart_parts``); 400 when it is not
    well-formed or holds no part."""
    try:
        found = multipart_parts(body, content_type)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    if not found:
        raise BadRequest("the multipart body has no part")
    return found


def single_instance(body: bytes, content_type: str):
    """The one DICOM instance of the body (pydicom Dataset)."""
    import pydicom

    found = parts(body, content_type)
    if len(found) != 1:
        raise BadRequest(f"the body holds {len(found)} parts; send one DICOM SEG per request; {WHAT_PASSES}")
    headers, payload = found[0]
    kind = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
    if kind != "application/dicom":
        raise BadRequest(f"the part is {kind!r}, not application/dicom")
    try:
        return pydicom.dcmread(io.BytesIO(payload))  # a DICOM file (preamble and DICM), not forced
    except Exception as exc:  # pydicom raises many types for broken files
        raise BadRequest(f"the part is not a readable DICOM file: {exc}") from exc


def _uid(value: Any) -> str:
    return str(value or "").strip()


def referenced_series(seg) -> str:
    """The one CT series the SEG lies on; refuses any other SOP class (403) and a SEG that names none or several."""
    sop_class = _uid(seg.get("SOPClassUID"))
    if sop_class != SEG_STORAGE:
        raise Refused(f"SOP class {sop_class or 'missing'} is not written into the PACS through this server; "
                      f"{WHAT_PASSES}")
    series = {_uid(item.get("SeriesInstanceUID")) for item in seg.get("ReferencedSeriesSequence", [])}
    series.discard("")
    if len(series) != 1:
        raise Unprocessable(f"the SEG references {len(series)} series; a correction lies on exactly one CT series")
    return series.pop()


def classification(seg) -> Tuple[str, bool]:
    """(class, assumed): from the SEG's Content Description, else its Series Description (the name typed in OHIF's
    Create Report dialog) when that is a class, else ``DEFAULT_CLASS``."""
    carried = seg_classification(seg)
    if carried:
        return carried, False
    named = str(seg.get("SeriesDescription", "") or "").strip().lower()
    if named in LABELS:
        return named, False
    return DEFAULT_CLASS, True


def save_correction(datastore, seg) -> Dict[str, Any]:
    """Check the viewer's SEG against its series and save its mask as the series' ``final`` label (stored in the
    PACS as a new SEG by ``datastore.save_label``); the label's info. Nothing is written when a check fails."""
    from lib.datastore import read_checked
    from lib.datastore_pacs import FINAL
    from lib.monailabel_compat import app_instance

    from covid_mtl.io import write_mask

    series = referenced_series(seg)
    datastore.has_image(series)  # 404 when the PACS holds no such series, 422 when it is not CT
    instance = _uid(seg.get("SOPInstanceUID"))
    current = datastore.final_label_info(series)
    if instance and current.get("viewer_seg_instance") == instance:
        raise AlreadyExists(f"SEG {instance} is already the final label of series {series}; export again to "
                            f"send a new correction")
    image_path = datastore.get_image_uri(series)  # fetched from the PACS the first time
    study = str(datastore.get_image_info(series).get("StudyInstanceUID", ""))
    if _uid(seg.get("StudyInstanceUID")) != study:
        raise Unprocessable(f"the SEG is under study {_uid(seg.get('StudyInstanceUID')) or 'none'}; its series "
                            f"{series} is under study {study}")
    source = read_checked(datastore.dicom_folder(series), f"PACS series {series}")
    mask = read_dicom_seg(seg, source)  # CovidMTLError (422) when it does not lie on the series
    image = read_checked(image_path, f"image {series}")
    label_class, assumed = classification(seg)
    info = {"classification": label_class, "class_assumed": assumed, "source": SOURCE,
            "viewer_seg_instance": instance, "viewer_seg_series": _uid(seg.get("SeriesInstanceUID"))}
    with tempfile.TemporaryDirectory(prefix="covid-mtl-viewer-seg-") as tmp:
        path = str(write_mask(mask, image, os.path.join(tmp, series + ".nii.gz")))
        label_id = datastore.save_label(series, path, FINAL, info)
    app_instance().on_save_label(series, label_id)
    saved = datastore.final_label_info(series)
    logger.info(f"viewer SEG {instance} is now the final label of series {series} (class {label_class}"
                f"{', assumed' if assumed else ''}; stored as SEG {saved.get('seg_instance')})")
    return saved


async def read_body(request, limit: int = MAX_SEG_BYTES) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` (chunked uploads declare no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge("DICOM SEG upload", None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def stow_reply(saved: Dict[str, Any]) -> Dict[str, Any]:
    """A STOW-RS answer (DICOM JSON) naming the SEG the PACS now holds: the server's correction SEG, which replaces
    the viewer's (the viewer's own never reaches the PACS)."""
    return {"00081199": {"vr": "SQ", "Value": [{
        "00081150": {"vr": "UI", "Value": [SEG_STORAGE]},
        "00081155": {"vr": "UI", "Value": [str(saved.get("seg_instance", ""))]},
    }]}}


async def store(request):
    """``POST /proxy/dicom/wado/studies``, already past ``check_request``: the checks above, then the label."""
    from fastapi.responses import JSONResponse
    from lib.monailabel_compat import app_instance, has_role
    from lib.pacs_client import PacsClient
    from starlette.concurrency import run_in_threadpool

    try:
        if not has_role(request.headers.get("authorization"), "annotator"):
            raise Refused("saving a correction needs the annotator role")
        datastore = app_instance().datastore()
        if not isinstance(getattr(datastore, "client", None), PacsClient):
            raise NotFound("this server serves a folder of studies, not a PACS: save corrections with "
                           "PUT /datastore/label")
        check_request("", {k.lower(): v for k, v in request.headers.items()})
        body = await read_body(request)
        seg = single_instance(body, request.headers.get("content-type", ""))
        saved = await run_in_threadpool(save_correction, datastore, seg)
    except (AppError, CovidMTLError) as exc:  # logged like the proxy's other refusals (lib.http_guard)
        client = (request.scope.get("client") or ("?",))[0]
        logger.warning(f"DICOMweb proxy refused the viewer SEG from {client}: {exc}")
        raise
    headers = {"X-Covid-MTL-Classification": str(saved.get("classification", "")),
               "X-Covid-MTL-Class-Assumed": "true" if saved.get("class_assumed") else "false"}
    return JSONResponse(stow_reply(saved), media_type="application/dicom+json", headers=headers)


__all__ = ["is_store", "check_request", "single_instance", "referenced_series", "classification",
           "save_correction", "store", "STORE_PATH", "DEFAULT_CLASS", "MAX_SEG_BYTES"]
