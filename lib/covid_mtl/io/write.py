"""Writing a mask on the grid of the image it was predicted from, and an image as NIfTI on its own grid."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import CovidMTLError
from ..image import Image


def mask_affine(like: Image) -> np.ndarray:
    if like.affine is not None:
        return like.affine
    dz, dy, dx = like.spacing or (1.0, 1.0, 1.0)
    return np.diag([dx, dy, dz, 1.0])


def write_mask(mask: np.ndarray, like: Image, path: str | os.PathLike) -> Path:
    """Write a (z, y, x) mask as uint8 on ``like``'s grid: NIfTI (``.nii``/``.nii.gz``, in the shape the image's
    file stored when it was a NIfTI), raw NRRD (``.nrrd``: what OHIF's MONAI Label panel reads) or PNG for 2D
    slices."""
    out = Path(path)
    if tuple(mask.shape) != tuple(like.array.shape):
        raise CovidMTLError(f"{out}: mask shape {mask.shape} differs from the image's {like.array.shape}")
    data = np.asarray(mask, dtype=np.uint8)
    name = out.name.lower()
    if name.endswith(".png"):
        import io

        from PIL import Image as PILImage

        if data.shape[0] != 1:
            raise CovidMTLError(f"{out}: a PNG holds one slice, the mask has {data.shape[0]}")
        buffer = io.BytesIO()
        PILImage.fromarray(data[0]).save(buffer, format="PNG")
        atomic_write(out, buffer.getvalue())
        return out
    if name.endswith(".nrrd"):
        return _write_nrrd(data, mask_affine(like), out)
    if not (name.endswith(".nii.gz") or name.endswith(".nii")):
        raise CovidMTLError(f"{out}: masks are written as .nii.gz, .nii, .nrrd or .png")
    xyz = data.transpose(2, 1, 0)
    stored = like.meta.get("stored_shape")  # the file's own shape: a 2D NIfTI gets a 2D mask, (x, y, z, 1) stays 4D
    if stored and int(np.prod(stored)) == xyz.size:
        xyz = xyz.reshape(stored)
    return _write_nifti(xyz, mask_affine(like), out, compresslevel=9)


def _write_nrrd(zyx: np.ndarray, affine: np.ndarray, out: Path) -> Path:
    """Raw uint8 NRRD, x fastest, in RAS space. For a DICOM series read by ``covid_mtl.io.dicom`` the bytes are in
    the order a DICOM viewer stacks the frames (slices ascending along the row x column normal, rows top to
    bottom): OHIF's panel copies them into its labelmap as they come, reading nothing of the header but the data."""
    z, y, x = zyx.shape
    vector = lambda v: "(" + ",".join(f"{float(c):.10g}" for c in v) + ")"  # noqa: E731
    header = ("NRRD0004\ntype: uint8\ndimension: 3\nspace: right-anterior-superior\n"
              f"sizes: {x} {y} {z}\nspace directions: {' '.join(vector(affine[:3, i]) for i in range(3))}\n"
              f"kinds: domain domain domain\nendian: little\nencoding: raw\nspace origin: {vector(affine[:3, 3])}\n\n")
    atomic_write(out, header.encode("ascii") + np.ascontiguousarray(zyx, dtype=np.uint8).tobytes())
    return out


def _write_nifti(xyz: np.ndarray, affine: np.ndarray, out: Path, compresslevel: int) -> Path:
    """``xyz`` with ``affine`` as its qform and sform, gzipped when ``out`` ends in ``.gz``, written atomically."""
    import nibabel as nib

    img = nib.Nifti1Image(xyz, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    payload = img.to_bytes()
    if out.name.lower().endswith(".gz"):
        import gzip

        payload = gzip.compress(payload, compresslevel=compresslevel, mtime=0)
    atomic_write(out, payload)
    return out


def write_volume(image: Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as NIfTI (``.nii`` or ``.nii.gz``) so that ``read_image`` gives back the same array (Hounsfield
    units stay int16 when they are whole numbers) on the same grid: a DICOM series served as a file keeps the voxel
    order its DICOM SEG frames are written in."""
    out = Path(path)
    name = out.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise CovidMTLError(f"{out}: volumes are written as .nii or .nii.gz")
    array = image.array
    whole = np.array_equal(array, np.round(array)) and array.min() >= -32768 and array.max() <= 32767
    data = (array.astype(np.int16) if whole else array.astype(np.float32)).transpose(2, 1, 0)
    return _write_nifti(data, mask_affine(image), out, compresslevel=1)
