"""DICOM reader: one series from a folder (or a single file) into an :class:`Image` in HU."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import CovidMTLError
from ..image import Image
from .checks import check_shape
from .dicom_decode import decode_all, is_compressed

# Modalities whose pixel values are Hounsfield units once the rescale is applied.
HU_MODALITIES = {"CT"}
# Image modalities we refuse with a specific message rather than producing nonsense HU.
NON_CT_MODALITIES = {"MR", "PT", "NM", "US", "XA", "RF", "MG", "OT", "SR", "SEG", "RTSTRUCT", "PR", "KO", "DOC"}
# Gaps between consecutive slices may differ by this fraction of the median before we call the series broken.
SPACING_TOLERANCE = 0.1


def is_dicom_file(path: Path) -> bool:
    """True for files with the DICM preamble marker (suffix-less DICOM files are common)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _dcmread(path: Path, header_only: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=header_only, force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CovidMTLError(f"{path}: not a readable DICOM file ({exc})") from exc


def _looks_like_image(ds) -> bool:
    return "Rows" in ds and "Columns" in ds


def _collect(paths: list[Path], folder: Path) -> dict[str, list]:
    """Headers of every DICOM image file in ``paths`` grouped by SeriesInstanceUID."""
    series: dict[str, list] = defaultdict(list)
    rejected: list[str] = []
    for p in paths:
        try:
            ds = _dcmread(p, header_only=True)
        except CovidMTLError:
            rejected.append(p.name)
            continue
        if not _looks_like_image(ds):
            modality = str(ds.get("Modality", "")) or "unknown"
            rejected.append(f"{p.name} ({modality}, no image)")
            continue
        ds.filename = str(p)
        series[str(ds.get("SeriesInstanceUID", "unknown"))].append(ds)
    if not series:
        detail = f"; unreadable or non-image files: {', '.join(rejected[:5])}" if rejected else ""
        raise CovidMTLError(f"{folder}: no DICOM image found{detail}")
    return series


def _slice_normal(ds) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    return np.cross(row, col)


def _sort(headers: list, source: str) -> tuple[list, float | None]:
    """Sort slices along the patient axis; returns them and the slice gap in mm (None when unknown)."""
    normal = _slice_normal(headers[0])
    if normal is not None and all("ImagePositionPatient" in h for h in headers):
        keys = [float(np.dot(normal, np.array(h.ImagePositionPatient, float))) for h in headers]
    elif all("SliceLocation" in h for h in headers):
        keys = [float(h.SliceLocation) for h in headers]
    else:
        keys = [float(h.get("InstanceNumber", i)) for i, h in enumerate(headers)]
        order = np.argsort(keys, kind="stable")
        return [headers[i] for i in order], None
    order = np.argsort(keys, kind="stable")
    headers = [headers[i] for i in order]
    positions = np.array(sorted(keys))
    if len(positions) < 2:
        return headers, None
    gaps = np.diff(positions)
    if np.any(gaps < 1e-3):
        raise CovidMTLError(f"{source}: two slices share the same position; the series has duplicates")
    median = float(np.median(gaps))
    if np.any(np.abs(gaps - median) > SPACING_TOLERANCE * median):
        raise CovidMTLError(
            f"{source}: inconsistent slice spacing (gaps from {gaps.min():.2f} to {gaps.max():.2f} mm); "
            f"missing slices or a mixed series"
        )
    return headers, median


def _pixels(ds, path: str) -> np.ndarray:
    from pydicom.pixel_data_handlers.util import apply_modality_lut

    if "PixelData" not in ds:
        raise CovidMTLError(f"{path}: DICOM file has no pixel data")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for truncated or undecodable data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise CovidMTLError(f"{path}: cannot decode pixel data (transfer syntax {syntax}): {exc}") from exc
    if raw.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1:
        raise CovidMTLError(f"{path}: colour DICOM ({ds.get('PhotometricInterpretation')}) is not a CT slice")
    return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)


def _slice_pixels(path: str) -> np.ndarray:
    """One file's pixels in HU as (frames, rows, cols) float32 (runs in decoding workers too)."""
    pixels = _pixels(_dcmread(Path(path), header_only=False), path)
    return pixels if pixels.ndim == 3 else pixels[None]


def _affine(first, spacing_zyx: tuple[float, float, float], normal_step: np.ndarray | None) -> np.ndarray | None:
    iop, ipp = first.get("ImageOrientationPatient"), first.get("ImagePositionPatient")
    if iop is None or ipp is None:
        return None
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    dz, dy, dx = spacing_zyx
    step = normal_step if normal_step is not None else np.cross(row, col) * dz
    lps = np.eye(4)
    lps[:3, 0] = row * dx  # increasing column index walks along the row direction
    lps[:3, 1] = col * dy
    lps[:3, 2] = step
    lps[:3, 3] = np.array(ipp, float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


def _is_hu(ds) -> bool:
    modality = str(ds.get("Modality", "")).upper()
    if modality:
        return modality in HU_MODALITIES
    # Minimal exports drop Modality; a rescale intercept of -1024/-1000 or signed values mean CT numbers.
    return "RescaleIntercept" in ds or int(ds.get("PixelRepresentation", 0)) == 1


def read_dicom(path: Path, series_uid: str | None = None) -> Image:
    """Read a DICOM folder (one series, or the one named by ``series_uid``) or a single DICOM file.

    pydicom's warnings (one per file for non-conformant UIDs) become named warnings in ``meta["warnings"]``.
    """
    from . import dicom_warnings

    with dicom_warnings.recorded() as caught:
        image = _read_dicom(path, series_uid)
    image.meta["warnings"] = dicom_warnings.summarize(caught, len(image.meta.get("files", [])))
    return image


def _read_dicom(path: Path, series_uid: str | None = None) -> Image:
    folder = path if path.is_dir() else path.parent
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise CovidMTLError(f"{path}: folder is empty")
    series = _collect(files, path)
    if series_uid is not None:
        if series_uid not in series:
            raise CovidMTLError(f"{path}: no series {series_uid}; found {', '.join(sorted(series))}")
        headers = series[series_uid]
    elif len(series) > 1:
        listing = "; ".join(
            f"{uid} ({len(h)} files, {h[0].get('Modality', '?')}, {h[0].get('SeriesDescription', '')!s})"
            for uid, h in sorted(series.items())
        )
        raise CovidMTLError(f"{path}: holds {len(series)} series, pick one with series_uid: {listing}")
    else:
        headers = next(iter(series.values()))
    source = str(path)
    first = headers[0]
    modality = str(first.get("Modality", "")).upper()
    if modality in NON_CT_MODALITIES:
        raise CovidMTLError(f"{source}: {modality} series; covid-mtl reads CT (or 2D slices as PNG/JPG)")
    rows, cols = int(first.Rows), int(first.Columns)
    frames = int(first.get("NumberOfFrames", 1) or 1)
    check_shape((max(len(headers), frames), rows, cols), source)
    for h in headers:
        if (int(h.Rows), int(h.Columns)) != (rows, cols):
            raise CovidMTLError(
                f"{source}: slices of different sizes ({rows}x{cols} and {h.Rows}x{h.Columns}) in one series"
            )
    headers, gap = _sort(headers, source)
    first = headers[0]
    slices = decode_all([str(h.filename) for h in headers], _slice_pixels, is_compressed(first))
    array = np.ascontiguousarray(np.concatenate(slices, axis=0), dtype=np.float32)
    pixel_spacing = first.get("PixelSpacing")
    dy, dx = (float(pixel_spacing[0]), float(pixel_spacing[1])) if pixel_spacing else (None, None)
    dz = gap or (float(first.SpacingBetweenSlices) if "SpacingBetweenSlices" in first else None)
    if dz is None and "SliceThickness" in first and first.SliceThickness:
        dz = float(first.SliceThickness)
    spacing = (dz or 1.0, dy, dx) if dy is not None else None
    normal_step = None
    if gap is not None and len(headers) > 1:
        normal_step = np.array(headers[1].ImagePositionPatient, float) - np.array(headers[0].ImagePositionPatient, float)
    affine = _affine(first, spacing, normal_step) if spacing else None
    meta = {
        "format": "dicom",
        "modality": modality or None,
        "series_uid": str(first.get("SeriesInstanceUID", "")) or None,
        "study_uid": str(first.get("StudyInstanceUID", "")) or None,
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")) or None,
        "sop_instance_uids": [str(h.get("SOPInstanceUID", "")) for h in headers],
        "files": [h.filename for h in headers],
        "series_description": str(first.get("SeriesDescription", "")),
    }
    return Image(array=array, spacing=spacing, affine=affine, is_hu=_is_hu(first), source=source, meta=meta)
