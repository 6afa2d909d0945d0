"""A LocalDatastore that refuses bad uploads with a 4xx and has one writer for ``datastore_v2.json``.

MONAI Label's LocalDatastore copies whatever it is given and writes its in-memory copy of the datastore back on
every change. Here:
- uploads are read with ``covid_mtl.io.read_image`` before anything is written; a label must lie on its image's
  grid (shape and affine, ``covid_mtl.io.grid``) and hold only 0 and 1;
- every change is a read-modify-write of the file on disk under the file lock (``datastore_file.change``): a task
  process (scoring, training) cannot write back a stale copy, and a change that fails changes nothing;
- an existing image id is replaced only on request (``{"replace": true}``), and then its labels are deleted;
- ids are the whole file stem: only the image extension is stripped (``1.2.840.113619.2.55.3.nii.gz`` ->
  ``1.2.840.113619.2.55.3``).
Staging files a crash left behind are removed at start.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from filelock import FileLock
from lib import datastore_file
from lib.datastore_file import STAGING_PREFIX
from lib.errors import AlreadyExists, InvalidName, TooLarge, UnknownImage, UnknownLabel, Unprocessable, Unreadable
from lib.monailabel_compat import DataModel, ImageLabelModel, LocalDatastoreBase
from lib.settings import AppSettings

from covid_mtl.errors import CovidMTLError
from covid_mtl.image import LABELS
from covid_mtl.io import SUPPORTED_SUFFIXES, read_image
from covid_mtl.io.grid import grid_difference

logger = logging.getLogger(__name__)

__all__ = ["ValidatingDatastore", "check_id", "check_tag", "read_checked", "check_classification", "base_name",
           "id_from_filename", "STAGING_PREFIX", "REPLACE_KEY"]

# Ids become file names in the studies folder: no separators, no "..", nothing hidden.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SAFE_TAG = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REPLACE_KEY = "replace"


def check_id(value: Any, what: str = "image id") -> str:
    if not isinstance(value, str) or not SAFE_ID.match(value) or ".." in value:
        raise InvalidName(what, value, "letters, digits, '.', '_', '-'")
    return value


def check_tag(value: Any) -> str:
    if not isinstance(value, str) or not SAFE_TAG.match(value):
        raise InvalidName("label tag", value, "letters, digits, '_', '-'")
    return value


def split_suffix(name: str, suffixes=SUPPORTED_SUFFIXES) -> Tuple[str, str]:
    """(stem, suffix) with only a known image suffix removed (the longest that matches, any case)."""
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if suffix and lower.endswith(suffix.lower()) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    return name, ""


def base_name(filename: Optional[str]) -> str:
    """A client's file name without the folders it may carry (either separator)."""
    return re.split(r"[\\/]", filename or "")[-1]


def id_from_filename(filename: str) -> str:
    """The id an upload without ``?image=`` gets: its file name without folders and without the image suffix."""
    return split_suffix(base_name(filename))[0]


def _check_size(path: str, what: str, limit_bytes: int) -> None:
    size = os.path.getsize(path)
    if size > limit_bytes:
        raise TooLarge(what, size, limit_bytes)


def read_checked(path: str, what: str = ""):
    """``read_image``, an unreadable file typed :class:`Unreadable` and named by ``what``."""
    try:
        return read_image(path)
    except CovidMTLError as exc:
        raise Unreadable(what, exc) from exc


def check_classification(info: Dict[str, Any]) -> None:
    value = info.get("classification")
    if value is not None and value not in LABELS:
        raise Unprocessable(f"unknown classification {value!r}; expected one of {list(LABELS)}")


def check_label_values(label) -> None:
    values = np.unique(label.array)
    if not set(values.tolist()) <= {0.0, 1.0}:
        raise Unprocessable(f"label values must be 0 or 1; found {values[:10].tolist()}")


class ValidatingDatastore(LocalDatastoreBase):
    def __init__(self, datastore_path: str, *args, settings: Optional[AppSettings] = None, **kwargs):
        self.settings = settings or AppSettings()
        self.disk_stamp = None  # what the in-memory copy was loaded from (see fresh)
        # a change a kill interrupted is finished before loading
        lock, config = LocalDatastoreBase.files(datastore_path, kwargs.get("datastore_config"))
        if os.path.isdir(datastore_path) and datastore_file.recover(lock, config):
            logger.warning(f"finished the datastore change an interrupted server left in {config}")
        super().__init__(datastore_path, *args, **kwargs)
        self._remove_staging_leftovers()

    # ----- the one writer -------------------------------------------------------------------------------------
    def _change(self):
        return datastore_file.change(self.lock_path, self.config_path, self.root, self.model, self._written)

    def _written(self, model) -> None:
        """The model just read (and maybe written) under the lock becomes the in-memory copy."""
        self.disk_stamp = datastore_file.disk_stamp(self.config_path)
        self.adopt(model, os.stat(self.config_path).st_mtime if self.disk_stamp else None)

    def _fresh(self) -> None:
        """Reads see what is on disk: another process (scoring, training, a second server) may have changed it.
        Files are replaced atomically, so reading without the lock sees a whole file."""
        stamp = datastore_file.disk_stamp(self.config_path)
        if stamp is not None and stamp != self.disk_stamp:
            try:
                model = datastore_file.read_model(self.config_path, self.root, self.model)
            except (OSError, ValueError) as exc:  # replaced between stat and open: keep the copy we have
                logger.warning(f"datastore: could not reload datastore_v2.json ({exc})")
                return
            self.adopt(model, None)
            self.disk_stamp = stamp

    def write_back(self) -> None:
        """MONAI Label writes its whole in-memory copy here; only name and description may come from memory."""
        name, description = self.model.name, self.model.description
        with self._change() as ch:
            ch.model.name, ch.model.description = name, description

    def reconcile_files(self) -> None:
        with self._change() as ch:
            datastore_file.reconcile(ch.model, self.extensions, self.split_name)

    def refresh(self, throw_exception: bool = False) -> None:
        try:
            self._fresh()
        except Exception:
            if throw_exception:
                raise

    def split_name(self, file: str) -> Tuple[str, str]:
        suffixes = tuple(e.replace("*", "") for e in self.extensions) + SUPPORTED_SUFFIXES
        return split_suffix(file, suffixes)

    # ----- writes: validated, then one change -------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        default_id, image_ext = self.split_name(os.path.basename(image_filename))
        image_id = check_id(image_id or default_id)
        image_info = dict(image_info or {})
        replace = image_info.pop(REPLACE_KEY, False) is True
        _check_size(image_filename, "uploaded image", self.settings.max_upload_bytes)
        read_checked(image_filename, "uploaded image")
        check_classification(image_info)
        name = self.file_name(image_id, image_ext)
        dest = os.path.realpath(os.path.join(self.model.image_path(), name))
        logger.info(f"Adding Image: {image_id} => {name} (replace={replace})")
        with self._change() as ch:
            old = ch.model.objects.get(image_id)
            if (old is not None or os.path.exists(dest)) and not replace:
                tags = sorted(old.labels) if old is not None else []
                labels = f" with labels {tags}" if tags else ""
                raise AlreadyExists(f"image {image_id!r} already exists{labels}; to replace it send params "
                                    f"{{\"replace\": true}} (its labels are then deleted: they were drawn on the old image)")
            if old is not None:  # its labels were drawn on the old image
                for tag, label in old.labels.items():
                    ch.delete(os.path.join(ch.model.label_path(tag), image_id + label.ext))
                if old.image.ext != image_ext:
                    ch.delete(os.path.join(ch.model.image_path(), image_id + old.image.ext))
            ch.put(dest, image_filename)
            image_info.update({"ts": int(time.time()), "name": name})
            ch.model.objects[image_id] = ImageLabelModel(image=DataModel(info=image_info, ext=image_ext))
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        self.check_label(image_id, label_filename, label_tag, label_info)
        return self.write_label(image_id, label_filename, label_tag, label_info)

    def check_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]):
        """The uploaded label, read, if it may be saved for ``image_id`` (its grid, 0/1 values, class, size);
        raises the typed error otherwise. Nothing is written."""
        self._fresh()
        self._known(image_id)
        check_tag(label_tag)
        if image_id not in self.model.objects:
            raise UnknownImage(image_id)
        check_classification(label_info or {})
        _check_size(label_filename, "uploaded label", self.settings.max_upload_bytes)
        label = read_checked(label_filename, "uploaded label")
        image = read_checked(self.get_image_uri(image_id), f"image {image_id}")
        difference = grid_difference(label, image)
        if difference:
            raise Unprocessable(f"{difference} (image {image_id!r})")
        check_label_values(label)
        return label

    def write_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        """Put a label that passed :meth:`check_label` in place, with its info, in one change."""
        label_info = dict(label_info or {})
        _, label_ext = self.split_name(os.path.basename(label_filename))
        label_path = self.model.label_path(label_tag)
        name = self.file_name(image_id, label_ext)
        logger.info(f"Saving label {label_tag}/{name}; info: {label_info}")
        os.makedirs(label_path, exist_ok=True)
        with self._change() as ch:
            obj = ch.model.objects.get(image_id)
            if obj is None:  # removed since the checks
                raise UnknownImage(image_id)
            old = obj.labels.get(label_tag)
            if old is not None and old.ext != label_ext:  # e.g. .nii replaced by .nii.gz: one file per label
                ch.delete(os.path.join(label_path, image_id + old.ext))
            ch.put(os.path.join(label_path, name), label_filename)
            label_info.update({"ts": int(time.time()), "name": name})
            obj.labels[label_tag] = DataModel(info=label_info, ext=label_ext)
        return image_id

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        self._known(image_id)
        with self._change() as ch:
            obj = ch.model.objects.get(image_id)
            if obj is None:
                raise UnknownImage(image_id)
            obj.image.info.update(info or {})

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        self._known(label_id, "label id")
        check_tag(label_tag)
        check_classification(info or {})
        with self._change() as ch:
            label = ch.model.label(label_id, label_tag)
            if not label:
                raise UnknownLabel(label_id, label_tag)
            label.info.update(info or {})

    def remove_label(self, label_id: str, label_tag: str) -> None:
        self._known(label_id, "label id")
        check_tag(label_tag)
        with self._change() as ch:
            obj = ch.model.objects.get(label_id)
            label = obj.labels.pop(label_tag, None) if obj else None
            if label is None:
                raise UnknownLabel(label_id, label_tag)
            ch.delete(os.path.join(ch.model.label_path(label_tag), label_id + label.ext))

    def remove_image(self, image_id: str) -> None:
        self._known(image_id)
        with self._change() as ch:
            obj = ch.model.objects.pop(image_id, None)
            if obj is None:
                raise UnknownImage(image_id)
            for tag, label in obj.labels.items():
                ch.delete(os.path.join(ch.model.label_path(tag), image_id + label.ext))
            ch.delete(os.path.join(ch.model.image_path(), image_id + obj.image.ext))

    def _remove_staging_leftovers(self) -> None:
        folders = {self.model.image_path(), os.path.dirname(self.config_path)}
        labels = self.model.label_path(None)
        folders.update(os.path.join(labels, d) for d in os.listdir(labels) if os.path.isdir(os.path.join(labels, d)))
        with FileLock(self.lock_path):  # a save in progress in another process holds this lock
            for folder in folders:
                for name in os.listdir(folder):
                    if name.startswith(STAGING_PREFIX):
                        logger.warning(f"removing {name} in {folder}, left by an interrupted save")
                        os.unlink(os.path.join(folder, name))

    # ----- reads: what is on disk; ids never leave the datastore folder ----------------------------------------
    def _known(self, image_id: Any, what: str = "image id") -> str:
        """Ids already in the datastore came from its own folder listing (an admin may have copied in "my scan.nii");
        anything else must be a safe file name, so no id ever resolves outside the folder."""
        if isinstance(image_id, str) and image_id in self.model.objects:
            return image_id
        return check_id(image_id, what)

    def get_image_uri(self, image_id: str) -> str:
        self._fresh()
        return super().get_image_uri(self._known(image_id))

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        self._fresh()
        return super().get_label_uri(self._known(label_id, "label id"), check_tag(label_tag))

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        self._fresh()
        return super().get_image_info(self._known(image_id))

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        self._fresh()
        return super().get_label_info(self._known(label_id, "label id"), check_tag(label_tag))

    def get_labels_by_image_id(self, image_id: str) -> Dict[str, str]:
        self._fresh()
        return super().get_labels_by_image_id(image_id)

    def list_images(self) -> List[str]:
        self._fresh()
        return super().list_images()

    def get_labeled_images(self, label_tag: Optional[str] = None, labels=None) -> List[str]:
        self._fresh()
        return super().get_labeled_images(label_tag, labels)

    def get_unlabeled_images(self, label_tag: Optional[str] = None, labels=None) -> List[str]:
        self._fresh()
        return super().get_unlabeled_images(label_tag, labels)

    def has_image(self, image_id: str) -> bool:
        return image_id in self.list_images()

    def datalist(self, full_path=True):
        self._fresh()
        return super().datalist(full_path)

    def json(self):
        self._fresh()
        return super().json()
