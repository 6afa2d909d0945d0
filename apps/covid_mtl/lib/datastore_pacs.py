"""The PACS as the datastore: CT series listed and fetched over DICOMweb, corrections stored back as DICOM SEG.

``--studies http://pacs/dicom-web`` serves the PACS's CT series (``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``,
``{"Modality": "CT"}`` by default); an image id is a SeriesInstanceUID. It replaces MONAI Label's DICOMweb
datastore, which downloads the ``dcmqi`` binary from the internet at start-up and writes SEGs with it.

A local cache (``MONAI_LABEL_DATASTORE_CACHE_PATH``, else ``~/.cache/covid-mtl/pacs/<hash of the URL>``) holds:
- ``dicom/<series>/``: the instances as the PACS sent them (``transfer-syntax=*``), fetched once, staged and renamed
  into place, so a crash never leaves half a series that looks whole;
- ``studies/``: a :class:`lib.datastore.ValidatingDatastore` with each fetched series as ``<series>.nii`` on the
  DICOM grid (``covid_mtl.io.write_volume``), which infer, download, Slicer and the train task read, and the labels
  and image info (uncertainty scores) with their usual guarantees.

A ``final`` label (``PUT /datastore/label``) passes the file datastore's checks, becomes a DICOM SEG (highdicom,
``covid_mtl.measure.dicom_seg``: a new SEG series each time, with the class in its Content Description) stored in
the PACS, and only once the PACS has stored it is it written to the cache. Corrections other tools or servers stored
in the PACS are read back (:meth:`PacsDatastore.sync_corrections`): for each series the newest SEG that lies on it
becomes its ``final`` label (the AI's own SEGs, all segments AUTOMATIC, are not corrections); one on another grid
is refused and logged. A viewer's SEG (OHIF's export) comes in through ``lib.viewer_seg``. The PACS itself is never changed except by
adding SEGs: uploads and deletions are refused.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from filelock import FileLock, Timeout
from lib.datastore import ValidatingDatastore, check_id, read_checked
from lib.errors import PacsError, Refused, UnknownImage, Unprocessable
from lib.monailabel_compat import DataModel, ImageLabelModel
from lib.pacs_client import PacsClient
from lib.settings import AppSettings

from covid_mtl.errors import CovidMTLError
from covid_mtl.io import write_mask, write_volume
from covid_mtl.measure.dicom_seg import read_dicom_seg, seg_classification, write_dicom_seg
from covid_mtl.measure import dicom_titles as titles
from covid_mtl.measure.dicom_sr import write_dicom_sr
from monailabel.interfaces.datastore import DefaultLabelTag

logger = logging.getLogger(__name__)

FINAL = DefaultLabelTag.FINAL.value
IMAGE_EXT = ".nii"  # uncompressed: written and read in a fraction of the time gzip takes, on the server's own disk
SERIES_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "PatientID", "StudyDate", "SeriesDescription",
                 "SeriesNumber", "NumberOfSeriesRelatedInstances")
STAGING_MARK = "~"  # ".<series>~<random>": a fetch or conversion in progress (a UID never holds "~")


def url_key(url: str) -> str:
    """The cache folder name of one PACS: its DICOMweb URL hashed."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def default_cache(url: str) -> str:
    return os.path.join(pathlib.Path.home(), ".cache", "covid-mtl", "pacs", url_key(url))


def from_monailabel_settings(url: str, ml_settings, app_settings: AppSettings) -> "PacsDatastore":
    """The datastore ``start_server --studies URL`` asks for, configured the way MONAI Label reads its settings:
    ``MONAI_LABEL_DATASTORE_USERNAME`` / ``_PASSWORD`` (or the older ``MONAI_LABEL_DICOMWEB_*``), the cache in
    ``MONAI_LABEL_DATASTORE_CACHE_PATH`` (or ``MONAI_LABEL_DICOMWEB_CACHE_PATH``), the series filter in
    ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``."""
    username = ml_settings.MONAI_LABEL_DATASTORE_USERNAME or ml_settings.MONAI_LABEL_DICOMWEB_USERNAME
    password = ml_settings.MONAI_LABEL_DATASTORE_PASSWORD or ml_settings.MONAI_LABEL_DICOMWEB_PASSWORD
    cache = (ml_settings.MONAI_LABEL_DATASTORE_CACHE_PATH or ml_settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
    client = PacsClient(url, username, password)
    cache = os.path.join(cache, url_key(url)) if cache else default_cache(url)
    return PacsDatastore(client, cache, ml_settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER, app_settings)


def _text(ds, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def series_info(ds) -> Dict[str, str]:
    return {k: _text(ds, k) for k in SERIES_FIELDS if _text(ds, k)}


def is_ai_result(ds) -> bool:
    """A SEG whose segments are all AUTOMATIC: an AI's result (``store_results``), not a person's correction.
    Corrections are SEMIAUTOMATIC (this server's) or MANUAL (OHIF's, Slicer's)."""
    kinds = {_text(segment, "SegmentAlgorithmType").upper() for segment in ds.get("SegmentSequence") or []}
    return kinds == {"AUTOMATIC"}


@dataclass(frozen=True)
class Correction:
    """One SEG instance in the PACS and the CT series it references."""

    study: str
    series: str
    instance: str
    image: str
    when: str  # ContentDate + ContentTime: the newest correction of a series wins

    @classmethod
    def from_metadata(cls, ds) -> Optional["Correction"]:
        if is_ai_result(ds):  # the model's own mask (store_results) is never a correction to train on
            return None
        referenced = ds.get("ReferencedSeriesSequence") or []
        if not referenced or not _text(referenced[0], "SeriesInstanceUID"):
            return None
        when = _text(ds, "ContentDate") + _text(ds, "ContentTime") or _text(ds, "SeriesDate") + _text(ds, "SeriesTime")
        return cls(_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"), _text(ds, "SOPInstanceUID"),
                   _text(referenced[0], "SeriesInstanceUID"), when)


class PacsDatastore(ValidatingDatastore):
    def __init__(self, client: PacsClient, cache_path: str, search_filter: Optional[Dict[str, Any]] = None,
                 settings: Optional[AppSettings] = None) -> None:
        self.client = client
        self.search_filter = dict(search_filter or {"Modality": "CT"})
        self.dicom_root = os.path.join(cache_path, "dicom")
        studies = os.path.join(cache_path, "studies")
        os.makedirs(self.dicom_root, exist_ok=True)
        os.makedirs(studies, exist_ok=True)
        self._corrections: Dict[str, List[Correction]] = {}  # SEG series -> its instances (metadata read once)
        self._refused: Dict[str, str] = {}  # SEG instance -> why it cannot be a label
        super().__init__(studies, extensions=["*" + IMAGE_EXT], auto_reload=False, read_only=False, settings=settings)
        self._remove_interrupted_fetches()
        logger.info(f"PACS datastore: {client.public_url} (series {self.search_filter}); cache {cache_path}")

    def name(self) -> str:
        return self.client.public_url

    def description(self) -> str:
        return f"DICOMweb PACS {self.client.public_url}"

    # ----- the PACS's series ---------------------------------------------------------------------------------------
    def _listing(self) -> Dict[str, Any]:
        series = self.client.search_series(self.search_filter, SERIES_FIELDS)
        return {_text(ds, "SeriesInstanceUID"): ds for ds in series if _text(ds, "SeriesInstanceUID")}

    def list_images(self) -> List[str]:
        return sorted(self._listing())

    def _series(self, image_id: str):
        """The PACS's record of ``image_id``: 404 when it holds no such series, 422 when it is not CT."""
        check_id(image_id)
        found = [ds for ds in self.client.search_series({"SeriesInstanceUID": image_id}, SERIES_FIELDS)
                 if _text(ds, "SeriesInstanceUID") == image_id]
        if not found:
            raise UnknownImage(image_id)
        modality = _text(found[0], "Modality").upper()
        wanted = str(self.search_filter.get("Modality", "CT")).upper()
        if modality != wanted:
            raise Unprocessable(f"series {image_id} is {modality or 'of no modality'}, not {wanted}: covid-mtl "
                                f"reads chest CT")
        return found[0]

    def has_image(self, image_id: str) -> bool:
        return self._series(image_id) is not None

    def _cached(self, image_id: str) -> Optional[str]:
        self._fresh()
        obj = self.model.objects.get(image_id)
        if obj is None:
            return None
        path = os.path.join(self.model.image_path(), image_id + obj.image.ext)
        return path if os.path.isfile(path) else None

    def _series_lock(self, image_id: str, timeout: float = -1) -> FileLock:
        return FileLock(os.path.join(self.dicom_root, image_id + ".lock"), timeout=timeout)

    def _remove_interrupted_fetches(self) -> None:
        """Staging left by a crash (``.<series>~...``); one whose series lock is held is another process's fetch in
        progress (a training task starting while the server fetches) and stays."""
        for name in os.listdir(self.dicom_root):
            if not (name.startswith(".") and STAGING_MARK in name):
                continue
            try:
                with self._series_lock(name[1:].split(STAGING_MARK)[0], timeout=0):
                    logger.warning(f"PACS cache: removing {name}, left by an interrupted fetch")
                    path = os.path.join(self.dicom_root, name)
                    shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
            except Timeout:
                continue

    def dicom_folder(self, image_id: str) -> str:
        return os.path.join(self.dicom_root, check_id(image_id))

    def get_image_uri(self, image_id: str) -> str:
        """The series as NIfTI on its DICOM grid, fetched from the PACS the first time."""
        check_id(image_id)
        cached = self._cached(image_id)
        if cached and os.path.isdir(self.dicom_folder(image_id)):
            return cached
        with self._series_lock(image_id):  # one fetch per series, across processes
            cached = self._cached(image_id)
            if cached and os.path.isdir(self.dicom_folder(image_id)):
                return cached
            return self._fetch(image_id, self._series(image_id))

    def _fetch(self, image_id: str, record) -> str:
        folder = self.dicom_folder(image_id)
        if not os.path.isdir(folder):
            staging = tempfile.mkdtemp(prefix=f".{image_id}{STAGING_MARK}", dir=self.dicom_root)
            try:
                if not self.client.retrieve_series(_text(record, "StudyInstanceUID"), image_id, staging):
                    raise Unprocessable(f"the PACS at {self.client.public_url} sent no instance of series {image_id}")
                os.rename(staging, folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        try:
            image = read_checked(folder, f"PACS series {image_id}")
        except Unprocessable:
            shutil.rmtree(folder, ignore_errors=True)  # fetched again next time, once the PACS holds a readable one
            raise
        info = {**series_info(record), "source": "pacs"}
        fd, converted = tempfile.mkstemp(prefix=f".{image_id}{STAGING_MARK}convert-", suffix=IMAGE_EXT,
                                         dir=self.dicom_root)
        os.close(fd)
        try:
            write_volume(image, converted)
            with self._change() as ch:
                ch.put(os.path.join(ch.model.image_path(), image_id + IMAGE_EXT), converted)
                old = ch.model.objects.get(image_id)
                obj = old or ImageLabelModel(image=DataModel(info={}, ext=IMAGE_EXT))
                obj.image.info.update(info)
                obj.image.ext = IMAGE_EXT
                ch.model.objects[image_id] = obj
        finally:
            if os.path.exists(converted):
                os.unlink(converted)
        return os.path.join(self.model.image_path(), image_id + IMAGE_EXT)

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        self._fresh()
        obj = self.model.objects.get(check_id(image_id))
        if obj is not None:
            return dict(obj.image.info)
        return {**series_info(self._series(image_id)), "source": "pacs"}

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        self.get_image_uri(image_id)  # scores and strategy notes live with the cached series
        super().update_image_info(image_id, info)

    # ----- corrections: DICOM SEG in the PACS ----------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        self.get_image_uri(image_id)
        label = self.check_label(image_id, label_filename, label_tag, label_info)
        label_info = dict(label_info or {})
        if label_tag == FINAL:
            viewer_uids = (label_info.get("viewer_seg_series"), label_info.get("viewer_seg_instance"))
            label_info.update(self._store_correction(image_id, label, label_info.get("classification"),
                                                     viewer_uids if all(viewer_uids) else None))
        return self.write_label(image_id, label_filename, label_tag, label_info)

    def final_label_info(self, image_id: str) -> Dict[str, Any]:
        """The info of the series' ``final`` label ({} when it has none), the PACS's corrections synced first."""
        self.sync_corrections({image_id})
        self._fresh()
        obj = self.model.objects.get(image_id)
        return dict(obj.labels[FINAL].info) if obj is not None and FINAL in obj.labels else {}

    def _store_correction(self, image_id: str, label, classification: Optional[str],
                          viewer_uids: Optional[Tuple[str, str]] = None) -> Dict[str, str]:
        """``viewer_uids``: the (series, instance) UIDs of the viewer's SEG this correction came from. The stored SEG
        takes them when they are valid and new to the PACS: OHIF, having sent its SEG, loads it back by those UIDs
        (its own copy never reaches the PACS, so with new UIDs OHIF would wait for it forever)."""
        from pydicom.uid import UID

        source = read_checked(self.dicom_folder(image_id), f"PACS series {image_id}")
        reuse = (viewer_uids is not None and all(UID(u).is_valid for u in viewer_uids)
                 and not self.client.holds(*viewer_uids))
        with tempfile.TemporaryDirectory(prefix="covid-mtl-seg-") as tmp:
            path = write_dicom_seg(label.array != 0, source, os.path.join(tmp, "seg.dcm"),
                                   model_version="radiologist correction", classification=classification,
                                   corrected=True, series_description="COVID-19 lesion correction (covid-mtl)",
                                   uids=viewer_uids if reuse else None)
            import pydicom

            seg = pydicom.dcmread(path)
            self.client.store(seg, f"storing the correction of series {image_id} as DICOM SEG")
        logger.info(f"PACS: correction of {image_id} stored as SEG {seg.SOPInstanceUID}")
        return {"seg_series": str(seg.SeriesInstanceUID), "seg_instance": str(seg.SOPInstanceUID)}

    def store_results(self, image_id: str, mask, result: Dict[str, Any], model_version: str) -> Dict[str, str]:
        """The AI's result for a PACS series stored under its study: a SEG of the lesion mask (AUTOMATIC, with the
        model version) and an SR measurement report referencing the series and the SEG. Each infer adds a new
        pair; nothing in the PACS is overwritten."""
        import pydicom

        source = read_checked(self.dicom_folder(image_id), f"PACS series {image_id}")  # fetched by the infer
        with tempfile.TemporaryDirectory(prefix="covid-mtl-result-") as tmp:
            seg = pydicom.dcmread(write_dicom_seg(mask, source, os.path.join(tmp, "seg.dcm"),
                                                  model_version=model_version,
                                                  series_description=titles.seg_series_description(result),
                                                  segment_label=titles.segment_label(result)))
            sr = pydicom.dcmread(write_dicom_sr(result, source, seg, os.path.join(tmp, "sr.dcm"),
                                                model_version=model_version,
                                                series_description=titles.sr_series_description(result)))
            self.client.store(seg, f"storing the result of series {image_id} as DICOM SEG")
            self.client.store(sr, f"storing the measures of series {image_id} as DICOM SR")
        logger.info(f"PACS: result of {image_id} stored as SEG {seg.SOPInstanceUID} and SR {sr.SOPInstanceUID}")
        return {"seg_series": str(seg.SeriesInstanceUID), "seg_instance": str(seg.SOPInstanceUID),
                "sr_series": str(sr.SeriesInstanceUID), "sr_instance": str(sr.SOPInstanceUID)}

    def _pacs_corrections(self, images: set) -> Dict[str, List[Correction]]:
        """CT series id -> the SEG instances in the PACS that reference it, newest first."""
        found: Dict[str, List[Correction]] = {}
        for seg in self.client.search_series({"Modality": "SEG"}, ("StudyInstanceUID",)):
            series = _text(seg, "SeriesInstanceUID")
            if series not in self._corrections:
                metadata = self.client.series_metadata(_text(seg, "StudyInstanceUID"), series)
                self._corrections[series] = [c for c in map(Correction.from_metadata, metadata) if c]
            for c in self._corrections[series]:
                if c.image in images:
                    found.setdefault(c.image, []).append(c)
        return {image: sorted(cs, key=lambda c: (c.when, c.instance), reverse=True) for image, cs in found.items()}

    def sync_corrections(self, images: set) -> None:
        """Make each of the CT series ``images`` (the listing the caller has) take as ``final`` label the newest SEG
        in the PACS that lies on it."""
        for image_id, candidates in sorted(self._pacs_corrections(images).items()):
            self._fresh()
            obj = self.model.objects.get(image_id)
            current = obj.labels.get(FINAL).info.get("seg_instance") if obj and FINAL in obj.labels else None
            for c in candidates:
                if c.instance == current:
                    break
                if c.instance in self._refused:
                    continue
                try:
                    self._adopt_correction(image_id, c)
                    break
                except (CovidMTLError, Unprocessable) as exc:
                    self._refused[c.instance] = str(exc)
                    logger.warning(f"PACS: SEG {c.instance} is not used as the label of series {image_id}: {exc}")

    def _adopt_correction(self, image_id: str, c: Correction) -> None:
        image = read_checked(self.get_image_uri(image_id), f"image {image_id}")
        seg = self.client.retrieve_instance(c.study, c.series, c.instance)
        source = read_checked(self.dicom_folder(image_id), f"PACS series {image_id}")
        mask = read_dicom_seg(seg, source)
        with tempfile.TemporaryDirectory(prefix="covid-mtl-label-") as tmp:
            path = str(write_mask(mask, image, os.path.join(tmp, image_id + ".nii.gz")))
            info = {"seg_series": c.series, "seg_instance": c.instance, "source": "pacs"}
            classification = seg_classification(seg)
            if classification:
                info["classification"] = classification
            self.write_label(image_id, path, FINAL, info)
        logger.info(f"PACS: SEG {c.instance} is now the final label of series {image_id}")

    def _labeled(self, images: set, label_tag: Optional[str] = None, labels=None) -> List[str]:
        """Of the listed ``images``, those with a label, once the PACS's corrections are synced."""
        self.sync_corrections(images)
        return [i for i in super().get_labeled_images(label_tag, labels) if i in images]

    def get_labeled_images(self, label_tag: Optional[str] = None, labels=None) -> List[str]:
        return self._labeled(set(self.list_images()), label_tag, labels)

    def get_unlabeled_images(self, label_tag: Optional[str] = None, labels=None) -> List[str]:
        images = self.list_images()
        labeled = set(self._labeled(set(images), label_tag, labels))
        return [i for i in images if i not in labeled]

    def training_images(self) -> List[str]:
        """Only the corrected series: training on a PACS must not fetch every series it holds."""
        return self.get_labeled_images(FINAL)

    def datalist(self, full_path=True):
        self.sync_corrections(set(self.list_images()))
        return super().datalist(full_path)

    def status(self) -> Dict[str, Any]:
        """Part of ``/info/``, which must answer while the PACS does not (Slicer connects through it): the PACS's
        problem is reported in ``error`` instead."""
        try:
            images = self.list_images()
            labeled = self._labeled(set(images), FINAL)
            return {"total": len(images), "completed": len(labeled), "label_tags": {FINAL: len(labeled)},
                    "pacs": self.client.public_url}
        except PacsError as exc:
            logger.warning(f"PACS: {exc}")
            return {"total": 0, "completed": 0, "label_tags": {}, "pacs": self.client.public_url, "error": str(exc)}

    def json(self):
        listing = self._listing()
        self.sync_corrections(set(listing))
        self._fresh()
        objects = {}
        for image_id, record in listing.items():
            obj = self.model.objects.get(image_id)
            image = {"ext": obj.image.ext if obj else "", "info": {**series_info(record), **(obj.image.info if obj else {})}}
            labels = {tag: {"ext": label.ext, "info": label.info} for tag, label in (obj.labels.items() if obj else [])}
            objects[image_id] = {"image": image, "labels": labels}
        return {"name": self.name(), "description": self.description(), "objects": objects}

    # ----- the PACS is only ever added to --------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        raise Refused(f"this server serves the PACS at {self.client.public_url}: store new series in the PACS; "
                      f"they are listed here as soon as it holds them")

    def remove_image(self, image_id: str) -> None:
        raise Refused(f"this server serves the PACS at {self.client.public_url} and deletes nothing from it")

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        if label_tag == FINAL:  # the class of a correction is in its SEG: a changed class is a new correction
            raise Refused(f"a final label's class is stored in its DICOM SEG in the PACS at {self.client.public_url}: "
                          f"send the correction again with the new class")
        super().update_label_info(label_id, label_tag, info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        if label_tag == FINAL:
            raise Refused(f"final labels are DICOM SEGs in the PACS at {self.client.public_url}; this server deletes "
                          f"nothing from it (a new correction supersedes the old one)")
        super().remove_label(label_id, label_tag)


__all__ = ["PacsDatastore", "default_cache", "url_key", "from_monailabel_settings", "Correction", "is_ai_result"]
