"""DICOM SEG export of the lesion mask (highdicom), referencing the CT series it was predicted from.

A PACS or viewer shows the SEG on top of the original series: one binary segment "COVID-19 lesion" with
SNOMED CT category *Morphologically altered structure* (49755003), type *Lesion* (52988006) and anatomic
region *Lung* (39607008); the algorithm identification carries the model version.

A radiologist's correction is the same SEG marked SEMIAUTOMATIC (a model's mask edited by a person), and carries
the class the radiologist gave in its Content Description: ``covid-mtl correction; classification: covid``
(:data:`CLASS_PREFIX`). :func:`read_dicom_seg` reads such a SEG back onto its source series, voxel for voxel, and
refuses one that does not lie on that series.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CovidMTLError
from ..image import LABELS, Image

SEGMENT_LABEL = "COVID-19 lesion"
ALGORITHM_NAME = "covid-mtl"
MANUFACTURER = "covid-mtl (open source)"
DEFAULT_SERIES_NUMBER = 9401
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
CORRECTION_DESCRIPTION = "covid-mtl correction"
CLASS_PREFIX = "classification: "
_CLASS_IN_DESCRIPTION = re.compile(re.escape(CLASS_PREFIX) + r"([A-Za-z-]+)")
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
    classification: Optional[str] = None,
    corrected: bool = False,
    segment_label: str = SEGMENT_LABEL,
    uids: Optional[tuple[str, str]] = None,
) -> Path:
    """Write ``mask`` (z, y, x, nonzero = lesion) as a binary DICOM SEG referencing ``source``'s series.

    ``source`` must come from ``covid_mtl.io.read_image`` on DICOM: its ``meta["files"]`` are in the same z
    order as ``mask``, and its (y, x) are the DICOM rows and columns. Empty slices are kept as frames so the
    SEG has one frame per source slice (viewers then never guess at missing frames).
    ``corrected``: the mask is a radiologist's correction (SEMIAUTOMATIC), ``classification`` the class they gave
    (one of ``covid_mtl.image.LABELS``), written into the Content Description. ``segment_label``: what viewers
    name the segment (``covid_mtl.measure.dicom_titles`` adds the measures for a stored result). ``uids``:
    (SeriesInstanceUID, SOPInstanceUID) to give the SEG instead of new ones.
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
    if classification is not None and classification not in LABELS:
        raise CovidMTLError(f"unknown classification {classification!r}; expected one of {list(LABELS)}")
    content = CORRECTION_DESCRIPTION if corrected else "covid-mtl prediction"
    if classification is not None:
        content += f"; {CLASS_PREFIX}{classification}"
    category, kind, region = _codes()
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
        version=str(model_version),
    )
    description = SegmentDescription(
        segment_number=1,
        segment_label=segment_label,
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=SegmentAlgorithmTypeValues.SEMIAUTOMATIC if corrected else SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[region],
    )
    description.RecommendedDisplayCIELabValue = _display_colour()
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=(mask > 0).astype(np.uint8),
            segmentation_type=SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=uids[0] if uids else hd.UID(),
            series_number=int(series_number),
            sop_instance_uid=uids[1] if uids else hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=ALGORITHM_NAME,
            software_versions=[_package_version(), str(model_version)],
            device_serial_number="none",
            series_description=series_description,
            omit_empty_frames=False,
            content_description=content,
            content_label="LESION",
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise CovidMTLError(f"{source.source}: cannot build a DICOM SEG from this series: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(str(out))
    return out


def _display_colour() -> list[int]:
    """The reports' lesion red as DICOM's scaled CIELab: viewers (OHIF, Slicer) show every covid-mtl SEG in the
    same colour, and OHIF no longer warns on each load that the SEG has none."""
    from skimage.color import rgb2lab

    from .report_style import LESION_RGBA

    lightness, a, b = rgb2lab(np.array([[LESION_RGBA[:3]]], float))[0, 0]
    return [round(lightness * 65535 / 100), round((a + 128) * 65535 / 255), round((b + 128) * 65535 / 255)]


def seg_classification(ds) -> Optional[str]:
    """The class a correction SEG carries (see the module doc), or None."""
    found = _CLASS_IN_DESCRIPTION.search(str(ds.get("ContentDescription", "") or ""))
    return found.group(1) if found and found.group(1) in LABELS else None


def read_dicom_seg(ds, source: Image) -> np.ndarray:
    """The lesion mask (z, y, x, uint8 0/1) of the SEG dataset ``ds`` on ``source``, a DICOM series read with
    ``covid_mtl.io.read_image``, in ``source``'s z order. All segments merge into one lesion mask.

    Refuses (CovidMTLError) a SEG that references another series, whose frames have another size, that references
    instances this series does not hold, or whose frames lie elsewhere than their source slices.
    """
    import highdicom as hd

    if str(ds.get("SOPClassUID", "")) != SEG_STORAGE:
        raise CovidMTLError(f"not a DICOM Segmentation (SOP class {ds.get('SOPClassUID', 'missing')})")
    series_uid = source.meta.get("series_uid")
    referenced = [str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])]
    if series_uid not in referenced:
        raise CovidMTLError(f"the SEG references series {referenced or 'none'}, not {series_uid}")
    shape = tuple(source.array.shape[1:])
    if (int(ds.Rows), int(ds.Columns)) != shape:
        raise CovidMTLError(f"the SEG frames are {ds.Rows}x{ds.Columns}; the series slices are {shape[0]}x{shape[1]}")
    held = set(source.meta["sop_instance_uids"])
    claimed = {str(item.ReferencedSOPInstanceUID) for series in ds.get("ReferencedSeriesSequence", [])
               for item in series.get("ReferencedInstanceSequence", [])
               if str(series.get("SeriesInstanceUID", "")) == series_uid}
    if claimed - held:
        raise CovidMTLError(f"the SEG does not lie on series {series_uid}: it references {len(claimed - held)} "
                            f"instance(s) the series does not hold")
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        # OHIF's SEGs (dcmjs) do not state SpatialLocationsPreserved; each frame's position and orientation are
        # checked against its source slice below instead, for every SEG.
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(source.meta["sop_instance_uids"]),
            combine_segments=False,
            assert_missing_frames_are_empty=True,
            ignore_spatial_locations=True,
        )
    except (ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise CovidMTLError(f"the SEG does not lie on series {series_uid}: {exc}") from exc
    mask = (pixels > 0).any(axis=-1).astype(np.uint8)
    _check_positions(ds, source)
    return mask


def _orientation(frame, shared) -> Optional[np.ndarray]:
    for group in (frame, shared):
        planes = group.get("PlaneOrientationSequence") if group is not None else None
        if planes:
            return np.array(planes[0].ImageOrientationPatient, float)
    return None


def _check_positions(ds, source: Image) -> None:
    """Each frame's Image Position (Patient) must be its source slice's (within 0.01 voxel): a SEG copied from
    a re-sliced or shifted series references the right instances but paints the wrong place."""
    import pydicom

    by_uid = {uid: path for uid, path in zip(source.meta["sop_instance_uids"], source.meta.get("files") or [])}
    spacing = min(source.spacing or (1.0, 1.0, 1.0))
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        try:
            uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        except (AttributeError, IndexError):
            continue  # not tied to a source slice: highdicom's indexing by source instance left it out
        path = by_uid.get(uid)
        if path is None:
            continue
        try:
            position = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        except (AttributeError, IndexError) as exc:
            raise CovidMTLError(f"a SEG frame on source slice {uid} has no Image Position (Patient)") from exc
        orientation = _orientation(frame, shared)
        slice_ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        expected = np.array(slice_ds.ImagePositionPatient, float)
        if np.abs(position - expected).max() > 0.01 * spacing:
            raise CovidMTLError(f"a SEG frame lies at {position.round(2).tolist()}, its source slice at "
                                f"{expected.round(2).tolist()}")
        if orientation is None or np.abs(orientation - np.array(slice_ds.ImageOrientationPatient, float)).max() > 1e-3:
            raise CovidMTLError(f"a SEG frame's orientation {None if orientation is None else orientation.tolist()} "
                                f"is not its source slice's {list(map(float, slice_ds.ImageOrientationPatient))}")
