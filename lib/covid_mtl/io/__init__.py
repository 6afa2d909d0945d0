"""The one way to read an image: ``read_image(path)`` for DICOM, NIfTI, NRRD and PNG/JPG/TIFF."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CovidMTLError
from ..image import Image
from .checks import check_array
from .dicom import read_dicom, is_dicom_file
from .raster import RASTER_SUFFIXES, read_raster
from .volume import read_nifti, read_nrrd
from .write import write_mask, write_volume

__all__ = ["read_image", "read_mask", "write_mask", "write_volume", "image_suffix", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".dcm") + RASTER_SUFFIXES


def image_suffix(path: str | os.PathLike) -> str:
    """The suffix that decides the reader (``.nii.gz`` counts as one suffix)."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def read_image(path: str | os.PathLike, series_uid: str | None = None) -> Image:
    """Read a DICOM folder or file, NIfTI, NRRD or a PNG/JPG/TIFF slice into an :class:`Image`.

    ``series_uid`` picks one series out of a DICOM folder that holds several.
    Raises :class:`CovidMTLError` naming the file and the problem for anything unusable.
    """
    p = Path(path)
    if not p.exists():
        raise CovidMTLError(f"{p}: no such file or folder")
    if p.is_dir():
        image = read_dicom(p, series_uid=series_uid)
    else:
        if p.stat().st_size == 0:
            raise CovidMTLError(f"{p}: file is empty (0 bytes)")
        suffix = image_suffix(p)
        if suffix in (".nii.gz", ".nii"):
            image = read_nifti(p)
        elif suffix == ".nrrd":
            image = read_nrrd(p)
        elif suffix in RASTER_SUFFIXES:
            image = read_raster(p)
        elif suffix == ".dcm" or is_dicom_file(p):
            image = read_dicom(p, series_uid=series_uid)
        else:
            raise CovidMTLError(
                f"{p}: unsupported file type {suffix or '(no suffix)'}; expected a DICOM folder or file, "
                f"NIfTI, NRRD, PNG, JPG or TIFF"
            )
    check_array(image.array, image.source)
    return image


def read_mask(path: str | os.PathLike, like: Image) -> np.ndarray:
    """A lesion mask on ``like``'s grid as uint8 0/1 (any non-zero voxel is lesion; the three MedSeg labels merge)."""
    mask = read_image(path).array
    if mask.shape != like.array.shape:
        raise CovidMTLError(f"{path}: mask shape {mask.shape} differs from its image {like.source} "
                            f"shape {like.array.shape}")
    return (mask != 0).astype(np.uint8)
