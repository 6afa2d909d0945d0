"""The mask infer returns has the input file's shape: a 2D NIfTI gets a 2D mask, an (x, y, z, 1) one an
(x, y, z, 1) mask (the readers hand the predictor (z, y, x) volumes; ``meta["stored_shape"]`` keeps the file's)."""
from __future__ import annotations

import gzip

import numpy as np

from covid_mtl.atomic import atomic_write
from covid_mtl.image import Image
from covid_mtl.io import write_mask


def write_result_mask(mask: np.ndarray, image: Image, path: str) -> None:
    write_mask(mask, image, path)
    stored = image.meta.get("stored_shape")
    if not stored or not path.endswith((".nii", ".nii.gz")) or tuple(stored) == tuple(reversed(mask.shape)):
        return
    import nibabel as nib

    written = nib.load(path)
    data = np.asarray(written.dataobj, dtype=np.uint8).reshape(stored)  # same voxels, the file's own shape
    out = nib.Nifti1Image(data, written.affine, header=written.header)
    out.set_qform(written.affine, code=1)
    out.set_sform(written.affine, code=1)
    payload = out.to_bytes()
    atomic_write(path, gzip.compress(payload, mtime=0) if path.endswith(".gz") else payload)
