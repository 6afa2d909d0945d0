"""NIfTI and NRRD readers. Neither format says "Hounsfield", so HU is inferred from the values."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CovidMTLError
from ..image import Image
from .checks import OUTPUT_BYTES_PER_VOXEL, check_budget, check_shape, check_stored_size

# A CT in HU always contains air (about -1000) around or inside the body; anything whose minimum stays
# above this is a mask, a probability map or an already-scaled image.
HU_AIR_THRESHOLD = -500.0


def _looks_like_hu(array: np.ndarray) -> bool:
    return array.size > 0 and float(np.nanmin(array)) < HU_AIR_THRESHOLD


def _squeeze_extra(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(x, y, z, 1) and (x, y, z, 1, 1) are 3D volumes; a 2D slice (x, y) is (x, y, 1)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape + (1,) * (3 - len(shape)) if len(shape) == 2 else shape


def _check_header(shape: tuple[int, ...], itemsize: int, stored_bytes: int | None, compressed: bool,
                  source: str, kind: str) -> None:
    """Everything the header alone can refuse, before a byte of voxel data is allocated or inflated."""
    squeezed = _squeeze_extra(shape)
    per_voxel = int(itemsize) + OUTPUT_BYTES_PER_VOXEL  # the stored samples, then the float32 copy
    if len(squeezed) == 3:
        check_shape(tuple(reversed(squeezed)), source, bytes_per_voxel=per_voxel)
    else:  # other dimensionalities get their own message once read, if they fit the budget at all
        check_budget(squeezed, per_voxel, source)
    if stored_bytes is not None:
        claimed = int(np.prod(shape, dtype=np.int64)) * int(itemsize)
        check_stored_size(claimed, stored_bytes, compressed, source, kind)


def _from_xyz(data: np.ndarray, affine: np.ndarray, source: str, fmt: str) -> Image:
    stored_shape = [int(s) for s in data.shape]  # masks are written back in this shape (2D stays 2D)
    squeezed = _squeeze_extra(data.shape)
    if len(squeezed) == 3 and squeezed != data.shape:
        data = data.reshape(squeezed)
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
        meta={"format": fmt, "stored_shape": stored_shape},
    )


def read_nifti(path: Path) -> Image:
    import nibabel as nib

    source = str(path)
    try:
        img = nib.load(source)  # reads the header only
        compressed = source.lower().endswith(".gz")
        size = path.stat().st_size
        offset = 0 if compressed else int(img.header.get("vox_offset", 0) or 0)
        _check_header(img.shape, img.get_data_dtype().itemsize, max(size - offset, 0), compressed, source,
                      "NIfTI file")
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
        header = nrrd.read_header(source)
    except Exception as exc:
        raise CovidMTLError(f"{source}: not a readable NRRD file ({type(exc).__name__}: {exc})") from exc
    if "data file" in header or "datafile" in header:  # would make the reader open another file on the server
        raise CovidMTLError(f"{source}: NRRD with detached data ('data file') is not supported; send one .nrrd file")
    try:
        from nrrd.reader import _determine_datatype

        itemsize = _determine_datatype(header).itemsize
        sizes = tuple(int(s) for s in header.get("sizes", ()))
    except Exception as exc:
        raise CovidMTLError(f"{source}: not a readable NRRD file ({type(exc).__name__}: {exc})") from exc
    encoding = str(header.get("encoding", "raw")).lower()
    stored = path.stat().st_size if encoding in ("raw", "gzip", "gz") else None  # header bytes counted: lenient
    _check_header(sizes, itemsize, stored, encoding in ("gzip", "gz"), source, "NRRD file")
    try:
        data, header = nrrd.read(source)
    except Exception as exc:
        raise CovidMTLError(f"{source}: not a readable NRRD file ({type(exc).__name__}: {exc})") from exc
    return _from_xyz(data, _nrrd_affine(header), source, "nrrd")
