"""Checks wrapped around MONAI Label's endpoint functions, before MONAI Label touches a request.

``monailabel_compat.replace_endpoint_functions`` puts these wrappers on the routes, with the uploaded file's real
name at hand (MONAI Label copies uploads to ``tmpXXXXXXXX<suffix>`` and every later message names that):
- ``params`` / ``info`` must be a JSON object, not nested too deep (400) (``lib.params``);
- infer and batch infer never write the ``final`` label tag (403);
- an image upload without ``?image=`` gets the whole file stem as its id, and ``{"replace": true}`` is reported
  back with the labels it deleted;
- a refused upload is named after the user's file, and a full disk is a 507 (``lib.http_errors``);
- the DICOMweb proxy forwards only checked viewer reads, through the server's own PACS client
  (``lib.dicomweb_proxy.forward`` replaces MONAI Label's ``proxy_dicom``);
- ``GET /train/?check_if_running=true`` answers ``{"status": "NOT RUNNING"}`` when nothing runs (OHIF's panel polls
  it; MONAI Label's 404 there read as an error on every poll); without ``check_if_running`` a server that never
  trained still answers 404, as the Slicer module expects;
- the bundled OHIF gets this app's configuration (``apps/covid_mtl/ohif/app-config.js``: no DICOM upload, no
  reject), not MONAI Label's, and its Export DICOM SEG fixed (``lib.ohif_fixes``); a path naming a folder gets the
  viewer's page, not a 500.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from http import HTTPStatus
from typing import Any, Callable, Optional

from lib import dicomweb_proxy, ohif_fixes
from lib.datastore import REPLACE_KEY, base_name, id_from_filename
from lib.errors import BadRequest
from lib.http_errors import classify, is_server_fault, to_http
from lib.monailabel_compat import app_instance, ohif_folder, replace_endpoint_functions
from lib.params import parse_params, refuse_final_tag

logger = logging.getLogger(__name__)


def _upload_name(upload) -> Optional[str]:
    return base_name(getattr(upload, "filename", None)) or None


def _named(exc: Exception, upload_name: Optional[str]) -> Exception:
    """``exc`` as the HTTPException the client gets, naming the user's file; server faults stay as they are."""
    return exc if is_server_fault(classify(exc)[0]) else to_http(exc, upload_name)


def _call(original: Callable, upload_name: Optional[str], *args) -> Any:
    try:
        return original(*args)
    except Exception as exc:
        converted = _named(exc, upload_name)
        if converted is exc:
            raise
        raise converted from exc


def _infer_hook(original: Callable) -> Callable:
    @functools.wraps(original)
    def run_inference(background_tasks, model, image="", session_id="", params="{}", file=None, label=None,
                      output=None):
        parsed = parse_params(params)
        # app.infer refuses it too, but only after MONAI Label has copied the upload to a temp file that its
        # background clean-up never removes when the request fails: refuse before anything is written
        refuse_final_tag(parsed)
        return _call(original, _upload_name(file), background_tasks, model, image, session_id, json.dumps(parsed),
                     file, label, output)
    return run_inference


def _add_image_hook(original: Callable) -> Callable:
    @functools.wraps(original)
    def add_image(background_tasks, image=None, params="{}", file=None, user=None):
        parsed = parse_params(params)
        image = image or id_from_filename(_upload_name(file) or "") or None
        replace = parsed.get(REPLACE_KEY) is True
        existed, labels = False, []
        if replace and image:  # said back to the client: what the replacement deleted
            datastore = app_instance().datastore()
            existed = image in datastore.list_images()
            labels = sorted(datastore.get_labels_by_image_id(image)) if existed else []
        result = _call(original, _upload_name(file), background_tasks, image, json.dumps(parsed), file, user)
        if replace:
            result = {**result, "replaced": existed, "labels_deleted": labels}
        return result
    return add_image


def _save_label_hook(original: Callable) -> Callable:
    @functools.wraps(original)
    def save_label(background_tasks, image, params="{}", tag="final", label=None, user=None):
        parsed = parse_params(params)
        return _call(original, _upload_name(label), background_tasks, image, json.dumps(parsed), tag, label, user)
    return save_label


def _info_hook(original: Callable, n_ids: int) -> Callable:
    @functools.wraps(original)
    def update_info(*args):
        args = list(args)
        args[n_ids] = json.dumps(parse_params(args[n_ids], "info"))
        return _call(original, None, *args)
    return update_info


def _batch_hook(original: Callable) -> Callable:
    @functools.wraps(original)
    def run(model, images=None, params=None, run_sync=False):
        if params is not None and not isinstance(params, dict):
            raise BadRequest("batch infer parameters must be a JSON object")
        refuse_final_tag(params or {})
        return original(model, images, params, run_sync)
    return run


def _session_hook(original: Callable) -> Callable:
    @functools.wraps(original)
    def create_session(background_tasks, uncompress=False, expiry=0, files=None):
        files = files or []
        name = _upload_name(files[0]) if len(files) == 1 else f"the uploaded series ({len(files)} files)"
        return _call(original, name, background_tasks, uncompress, expiry, files)
    return create_session


def _train_status_hook(original: Callable) -> Callable:
    @functools.wraps(original)
    def status(all: bool = False, check_if_running: bool = False):
        from fastapi import HTTPException

        try:
            return original(all, check_if_running)
        except HTTPException as exc:
            if check_if_running and exc.status_code == HTTPStatus.NOT_FOUND:
                return {"status": "NOT RUNNING", "detail": str(exc.detail)}
            raise
    return status


OHIF_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ohif", "app-config.js")


def _ohif_hook(original: Callable) -> Callable:
    @functools.wraps(original)
    def get_ohif(path: str):
        if path.strip("/") == "app-config.js":
            from fastapi.responses import FileResponse

            return FileResponse(OHIF_CONFIG, media_type="application/javascript")
        patched = ohif_fixes.fixed(path)
        if patched is not None:
            from fastapi.responses import Response

            return Response(patched, media_type="application/javascript")
        if os.path.isdir(os.path.join(ohif_folder(), path.replace("/", os.pathsep))):  # MONAI Label's own lookup
            # A folder (".", "..", "assets") is not a file: MONAI Label answered 500 trying to send it. The viewer's
            # page instead, as for any path it does not hold.
            path = ""
        return original(path)
    return get_ohif


def install() -> None:
    """Idempotent: the app may be created more than once in one process."""
    replace_endpoint_functions([
        ("infer", "run_inference", _infer_hook), ("datastore", "add_image", _add_image_hook),
        ("datastore", "save_label", _save_label_hook),
        ("datastore", "update_image_info", lambda f: _info_hook(f, 1)),
        ("datastore", "update_label_info", lambda f: _info_hook(f, 2)),
        ("batch_infer", "run", _batch_hook), ("session", "create_session", _session_hook),
        ("proxy", "proxy_dicom", lambda original: dicomweb_proxy.forward), ("ohif", "get_ohif", _ohif_hook),
        ("train", "status", _train_status_hook),
    ])
