"""NIfTI and NRRD readers. Neither format says "Hounsfield", so HU is inferred from the values."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CovidMTLError
from ..image import Image
from .checks import check_shape

# A CT in HU always contains air (about -1000) around or inside the body; anything whose minimum stays
# above this is a mask, a probability map or an already-scaled image.
HU_AIR_THRESHOLD = -500.0


def _looks_like_hu(array: np.ndarray) -> bool:
    return array.size > 0 and float(np.nanmin(array)) < HU_AIR_THRESHOLD


def _from_xyz(data: np.ndarray, affine: np.ndarray, source: str, fmt: str) -> Image:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise CovidMTLError(f"{source}: {data.ndim}D image (shape {data.shape}); expected a 2D slice or a 3D volume")
    check_shape(tuple(reversed(data.shape)), source)
    array = np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # column norms = voxel sizes along i, j, k
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    is_hu = _looks_like_hu(array)
    return Image(
        array=array,
        spacing=spacing,
        affine=np.asarray(affine, dtype=np.float64),
        is_hu=is_hu,
        source=source,
        bit_depth=None,
        meta={"format": fmt},
    )


def read_nifti(path: Path) -> Image:
    import nibabel as nib

    source = str(path)
    try:
        img = nib.load(source)
        shape = img.shape
        if len(shape) >= 3:
            check_shape((shape[2], shape[1], shape[0]), source)
        data = np.asanyarray(img.dataobj)
    except CovidMTLError:
        raise
    except Exception as exc:  # nibabel/gzip/zlib raise many types for truncated or fake files
        raise CovidMTLError(f"{source}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if data.dtype.kind not in "iufb":
        raise CovidMTLError(f"{source}: unsupported NIfTI data type {data.dtype}")
    return _from_xyz(data, img.affine, source, "nifti")


def _nrrd_affine(header: dict) -> np.ndarray:
    affine = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        rows = [np.asarray(d, float) for d in directions if d is not None and not np.any(np.isnan(np.asarray(d, float)))]
        if len(rows) == 3:
            affine[:3, :3] = np.stack(rows, axis=1)
    elif "spacings" in header:
        affine[:3, :3] = np.diag([float(s) for s in header["spacings"]][:3])
    origin = header.get("space origin")
    if origin is not None:
        affine[:3, 3] = np.asarray(origin, float)
    space = str(header.get("space", "")).lower()
    if space in ("left-posterior-superior", "lps"):
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    return affine


def read_nrrd(path: Path) -> Image:
    import nrrd

    source = str(path)
    try:
        data, header = nrrd.read(source)
    except Exception as exc:
        raise CovidMTLError(f"{source}: not a readable NRRD file ({type(exc).__name__}: {exc})") from exc
    return _from_xyz(data, _nrrd_affine(header), source, "nrrd")
