"""A LocalDatastore that refuses bad uploads with a 4xx instead of storing them.

MONAI Label's LocalDatastore copies whatever it is given; a label of the wrong shape or an image that cannot
be read would only fail later, inside training. Checks run before anything is written, so a refused request
changes nothing on disk.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict

import numpy as np
from fastapi import HTTPException

from covid_mtl.errors import CovidMTLError
from covid_mtl.image import LABELS
from covid_mtl.io import read_image
from monailabel.datastore.local import LocalDatastore

logger = logging.getLogger(__name__)

# Ids become file names in the studies folder: no separators, no "..", nothing hidden.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SAFE_TAG = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_MAX_UPLOAD_MB = 2048


def check_id(value: str, what: str = "image id") -> str:
    if not value or not SAFE_ID.match(value) or ".." in value:
        raise HTTPException(status_code=400, detail=f"invalid {what} {value!r}: use letters, digits, '.', '_', '-'")
    return value


def _max_upload_bytes() -> int:
    return int(float(os.environ.get("COVID_MTL_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)) * 1024 * 1024)


def _check_size(path: str, what: str) -> None:
    size = os.path.getsize(path)
    if size > _max_upload_bytes():
        raise HTTPException(
            status_code=413, detail=f"{what} is {size / 2**20:.0f} MB; the limit is {_max_upload_bytes() / 2**20:.0f} MB"
        )


def _read(path: str, what: str):
    try:
        return read_image(path)
    except CovidMTLError as exc:
        raise HTTPException(status_code=422, detail=f"{what}: {exc}".replace(path, os.path.basename(path))) from exc


def check_classification(info: Dict[str, Any]) -> None:
    value = info.get("classification")
    if value is not None and value not in LABELS:
        raise HTTPException(
            status_code=422, detail=f"unknown classification {value!r}; expected one of {list(LABELS)}"
        )


class ValidatingDatastore(LocalDatastore):
    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        if image_id:
            check_id(image_id)
        _check_size(image_filename, "uploaded image")
        _read(image_filename, "uploaded image")
        check_classification(image_info or {})
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        check_id(image_id)
        if not SAFE_TAG.match(label_tag or ""):
            raise HTTPException(status_code=400, detail=f"invalid label tag {label_tag!r}")
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} not found in the datastore")
        check_classification(label_info or {})
        _check_size(label_filename, "uploaded label")
        label = _read(label_filename, "uploaded label")
        image = _read(self.get_image_uri(image_id), f"image {image_id}")
        if label.shape != image.shape:
            raise HTTPException(
                status_code=422,
                detail=f"label shape {list(label.shape)} (z, y, x) differs from image {image_id!r} {list(image.shape)}",
            )
        values = np.unique(label.array)
        if not set(values.tolist()) <= {0.0, 1.0}:
            raise HTTPException(
                status_code=422, detail=f"label values must be 0 or 1; found {values[:10].tolist()}"
            )
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def get_image_uri(self, image_id: str) -> str:
        check_id(image_id)
        return super().get_image_uri(image_id)
