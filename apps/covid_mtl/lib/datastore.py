"""A LocalDatastore that refuses bad uploads with a 4xx and never leaves a half-written file.

MONAI Label's LocalDatastore copies whatever it is given; a label of the wrong shape or an image that cannot be
read would only fail later, inside training. Checks run before anything is written, so a refused request changes
nothing on disk. Writes (images, labels, ``datastore_v2.json``) go to a temporary file in the destination folder,
are fsynced and renamed over the target, all under the datastore's file lock: a server killed mid-save leaves the
previous file or the new one, never a mix. Staging files a crash left behind are removed at start.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, Dict

import numpy as np
from fastapi import HTTPException
from filelock import FileLock
from lib.http_guard import max_upload_bytes, public_message

from covid_mtl.atomic import atomic_write as core_atomic_write
from covid_mtl.errors import CovidMTLError
from covid_mtl.image import LABELS
from covid_mtl.io import read_image
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore

logger = logging.getLogger(__name__)

# Ids become file names in the studies folder: no separators, no "..", nothing hidden.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SAFE_TAG = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STAGING_PREFIX = ".covid-mtl-staging-"


def check_id(value: Any, what: str = "image id") -> str:
    if not isinstance(value, str) or not SAFE_ID.match(value) or ".." in value:
        raise HTTPException(status_code=400, detail=f"invalid {what} {value!r}: use letters, digits, '.', '_', '-'")
    return value


def check_tag(value: Any) -> str:
    if not isinstance(value, str) or not SAFE_TAG.match(value):
        raise HTTPException(status_code=400, detail=f"invalid label tag {value!r}: use letters, digits, '_', '-'")
    return value


def _check_size(path: str, what: str) -> None:
    size, limit = os.path.getsize(path), max_upload_bytes()
    if size > limit:
        raise HTTPException(status_code=413, detail=f"{what} is {size / 2**20:.1f} MB; the upload limit is "
                                                    f"{limit / 2**20:.0f} MB (COVID_MTL_MAX_UPLOAD_MB)")


def read_or_422(path: str, what: str | None = None):
    """``read_image``, with an unreadable file answered 422 and a message that names no server folder."""
    try:
        return read_image(path)
    except CovidMTLError as exc:
        message = public_message(str(exc))
        raise HTTPException(status_code=422, detail=f"{what}: {message}" if what else message) from exc


def check_classification(info: Dict[str, Any]) -> None:
    value = info.get("classification")
    if value is not None and value not in LABELS:
        raise HTTPException(
            status_code=422, detail=f"unknown classification {value!r}; expected one of {list(LABELS)}"
        )


def atomic_write(dest: str, source: str | None = None, data: bytes | None = None) -> None:
    """The core's atomic replace, with the staging prefix that start-up cleans after a crash."""
    core_atomic_write(dest, data, source=source, prefix=STAGING_PREFIX)


class ValidatingDatastore(LocalDatastore):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._remove_staging_leftovers()

    # ----- writes: validated, then atomic ----------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        default_id, image_ext = self._to_id(os.path.basename(image_filename))
        image_id = check_id(image_id or default_id)
        _check_size(image_filename, "uploaded image")
        read_or_422(image_filename, "uploaded image")
        image_info = dict(image_info or {})
        check_classification(image_info)
        name = self._filename(image_id, image_ext)
        dest = os.path.realpath(os.path.join(self._datastore.image_path(), name))
        logger.info(f"Adding Image: {image_id} => {name}")
        with FileLock(self._lock_file):
            atomic_write(dest, source=image_filename)
            image_info.update({"ts": int(time.time()), "name": name})
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=image_info, ext=image_ext))
            self._update_datastore_file(lock=False)
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        self._known(image_id)
        check_tag(label_tag)
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} not found in the datastore")
        label_info = dict(label_info or {})
        check_classification(label_info)
        _check_size(label_filename, "uploaded label")
        label = read_or_422(label_filename, "uploaded label")
        image = read_or_422(self.get_image_uri(image_id), f"image {image_id}")
        if label.shape != image.shape:
            raise HTTPException(
                status_code=422,
                detail=f"label shape {list(label.shape)} (z, y, x) differs from image {image_id!r} {list(image.shape)}",
            )
        values = np.unique(label.array)
        if not set(values.tolist()) <= {0.0, 1.0}:
            raise HTTPException(status_code=422, detail=f"label values must be 0 or 1; found {values[:10].tolist()}")
        _, label_ext = self._to_id(os.path.basename(label_filename))
        label_path = self._datastore.label_path(label_tag)
        name = self._filename(image_id, label_ext)
        logger.info(f"Saving label {label_tag}/{name}; info: {label_info}")
        with FileLock(self._lock_file):
            os.makedirs(label_path, exist_ok=True)
            atomic_write(os.path.join(label_path, name), source=label_filename)
            label_info.update({"ts": int(time.time()), "name": name})
            obj.labels[label_tag] = DataModel(info=label_info, ext=label_ext)
            self._update_datastore_file(lock=False)
        return image_id

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        if self._known(image_id) not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} not found in the datastore")
        return super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        if not self._datastore.label(self._known(label_id, "label id"), check_tag(label_tag)):
            raise HTTPException(status_code=404, detail=f"label {label_id!r} (tag {label_tag!r}) not found")
        check_classification(info or {})
        return super().update_label_info(label_id, label_tag, info)

    def _update_datastore_file(self, lock: bool = True) -> None:
        """MONAI Label rewrites datastore_v2.json in place (a crash mid-write leaves a file it cannot start on)."""

        def write() -> None:
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            atomic_write(self._datastore_config_path, data=text.encode())
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    def _remove_staging_leftovers(self) -> None:
        folders = {self._datastore.image_path(), os.path.dirname(self._datastore_config_path)}
        labels = self._datastore.label_path(None)
        folders.update(os.path.join(labels, d) for d in os.listdir(labels) if os.path.isdir(os.path.join(labels, d)))
        with FileLock(self._lock_file):  # a save in progress in another process holds this lock
            for folder in folders:
                for name in os.listdir(folder):
                    if name.startswith(STAGING_PREFIX):
                        logger.warning(f"removing {name} in {folder}, left by an interrupted save")
                        os.unlink(os.path.join(folder, name))

    # ----- reads: ids never leave the datastore folder ----------------------------------------------------------
    def _known(self, image_id: Any, what: str = "image id") -> str:
        """Ids already in the datastore came from its own folder listing (an admin may have copied in "my scan.nii");
        anything else must be a safe file name, so no id ever resolves outside the folder."""
        if isinstance(image_id, str) and image_id in self._datastore.objects:
            return image_id
        return check_id(image_id, what)

    def get_image_uri(self, image_id: str) -> str:
        return super().get_image_uri(self._known(image_id))

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        return super().get_label_uri(self._known(label_id, "label id"), check_tag(label_tag))

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        return super().get_image_info(self._known(image_id))

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        return super().get_label_info(self._known(label_id, "label id"), check_tag(label_tag))
