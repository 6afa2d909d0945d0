"""The mask as raw NRRD, the way OHIF's MONAI Label panel reads it: it ignores the header and copies the bytes into
its labelmap, whose voxels cornerstone3D orders x fastest, then rows, then the frames sorted ascending along the
row x column normal (``sortImageIdsAndGetSpacing``). So the bytes must follow the DICOM frames in that order, read
here with pydicom alone, independently of ``covid_mtl.io``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from covid_mtl.io import read_image, write_mask
from pacs.orthanc import dicom_files
from tests.pacs_site import SAMPLE_SERIES


def cornerstone_frames(folder: Path) -> np.ndarray:
    datasets = [pydicom.dcmread(p) for p in dicom_files(folder)]
    iop = np.array(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    reference = np.array(datasets[0].ImagePositionPatient, float)
    distance = [float(np.dot(reference - np.array(d.ImagePositionPatient, float), normal)) for d in datasets]
    order = np.argsort(distance)[::-1]  # cornerstone sorts by descending distance from the first frame
    return np.stack([datasets[i].pixel_array * float(datasets[i].RescaleSlope) + float(datasets[i].RescaleIntercept)
                     for i in order])


def test_nrrd_mask_bytes_follow_the_frames_as_ohif_stacks_them(tmp_path: Path) -> None:
    image = read_image(SAMPLE_SERIES)
    mask = (image.array > -500).astype(np.uint8)  # the body: different on every slice and not symmetric
    path = write_mask(mask, image, tmp_path / "mask.nrrd")
    data = path.read_bytes()
    header, raw = data.split(b"\n\n", 1)
    assert b"type: uint8" in header and b"encoding: raw" in header
    frames = cornerstone_frames(SAMPLE_SERIES)
    assert len(raw) == frames.size
    as_ohif = np.frombuffer(raw, np.uint8).reshape(frames.shape)
    np.testing.assert_array_equal(as_ohif, (frames > -500).astype(np.uint8))
