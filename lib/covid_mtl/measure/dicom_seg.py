"""DICOM SEG export of the lesion mask (highdicom), referencing the CT series it was predicted from.

A PACS or viewer shows the SEG on top of the original series: one binary segment "COVID-19 lesion" with
SNOMED CT category *Morphologically altered structure* (49755003), type *Lesion* (52988006) and anatomic
region *Lung* (39607008); the algorithm identification carries the model version.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CovidMTLError
from ..image import Image

SEGMENT_LABEL = "COVID-19 lesion"
ALGORITHM_NAME = "covid-mtl"
MANUFACTURER = "covid-mtl (open source)"
DEFAULT_SERIES_NUMBER = 9401
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Type 2 attributes highdicom copies from the source: present-but-empty is valid DICOM, absent breaks it.
_TYPE2_DEFAULTS = {
    "PatientID": "", "PatientName": "", "PatientBirthDate": "", "PatientSex": "", "StudyID": "",
    "StudyDate": "", "StudyTime": "", "ReferringPhysicianName": "", "AccessionNumber": "",
}


def _codes():
    from pydicom.sr.coding import Code

    category = Code("49755003", "SCT", "Morphologically Altered Structure")
    kind = Code("52988006", "SCT", "Lesion")
    region = Code("39607008", "SCT", "Lung")
    return category, kind, region


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("covid-mtl")
    except PackageNotFoundError:
        return "unknown"


def _source_datasets(source: Image) -> list:
    import pydicom

    files = source.meta.get("files") or []
    if source.meta.get("format") != "dicom" or not files:
        raise CovidMTLError(f"{source.source}: DICOM SEG needs a DICOM source series (this image is not DICOM)")
    datasets = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=True)
        except Exception as exc:  # pydicom raises many types for broken files
            raise CovidMTLError(f"{f}: cannot re-read the source DICOM header for the SEG: {exc}") from exc
        _complete(ds)
        datasets.append(ds)
    return datasets


def _complete(ds) -> None:
    """Fill, in memory only, what anonymised or minimal exports drop but the SEG IOD needs from its source.

    An empty SOPClassUID on a CT series (seen in real anonymised data) is set to CT Image Storage, the class
    the reader already accepted it as; empty type 2 patient/study attributes are added empty.
    """
    if not str(ds.get("SOPClassUID", "")).strip() and str(ds.get("Modality", "CT") or "CT").upper() == "CT":
        ds.SOPClassUID = CT_IMAGE_STORAGE
    for keyword, value in _TYPE2_DEFAULTS.items():
        if keyword not in ds:
            setattr(ds, keyword, value)
    if "Modality" not in ds or not str(ds.Modality):
        ds.Modality = "CT"


def write_dicom_seg(
    mask: np.ndarray,
    source: Image,
    out_path: str | os.PathLike,
    model_version: str = "unknown",
    series_description: str = "COVID-19 lesion (covid-mtl)",
    series_number: int = DEFAULT_SERIES_NUMBER,
) -> Path:
    """Write ``mask`` (z, y, x, nonzero = lesion) as a binary DICOM SEG referencing ``source``'s series.

    ``source`` must come from ``covid_mtl.io.read_image`` on DICOM: its ``meta["files"]`` are in the same z
    order as ``mask``, and its (y, x) are the DICOM rows and columns. Empty slices are kept as frames so the
    SEG has one frame per source slice (viewers then never guess at missing frames).
    """
    import highdicom as hd
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentationTypeValues, SegmentDescription

    out = Path(out_path)
    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[None]
    datasets = _source_datasets(source)
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    frames = int(datasets[0].get("NumberOfFrames", 1) or 1)
    expected = (frames, rows, cols) if len(datasets) == 1 and frames > 1 else (len(datasets), rows, cols)
    if tuple(mask.shape) != expected or tuple(mask.shape) != tuple(source.array.shape):
        raise CovidMTLError(
            f"{out}: mask shape {mask.shape} does not match the source series {expected} ({source.source})"
        )
    missing = sorted({k for ds in datasets for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
                      if not str(ds.get(k, "")).strip()})
    if missing:
        # Inventing UIDs would make a SEG that claims to annotate a study no archive holds.
        raise CovidMTLError(
            f"{source.source}: source DICOM has empty {', '.join(missing)} (anonymised export?); "
            f"a SEG cannot reference it"
        )
    category, kind, region = _codes()
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
        version=str(model_version),
    )
    description = SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[region],
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=(mask > 0).astype(np.uint8),
            segmentation_type=SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=int(series_number),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=ALGORITHM_NAME,
            software_versions=[_package_version(), str(model_version)],
            device_serial_number="none",
            series_description=series_description,
            omit_empty_frames=False,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise CovidMTLError(f"{source.source}: cannot build a DICOM SEG from this series: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(str(out))
    return out
