"""Bad (and two tricky but valid) input files, written from the sample data: deterministic and small on disk.

``write_corpus(dest)`` writes every file or DICOM folder below and returns ``dest``; names are what the tests
upload. Folders (``session_*``) are DICOM series that go to ``PUT /session/`` as several files.
"""
from __future__ import annotations

import gzip
import io
import random
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Dict

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"
SERIES = SAMPLE / "dicom" / "covid_dicom_001"
SLICE_PNG = SAMPLE / "covid_slice_001.png"
VOLUME = SAMPLE / "covid_001.nii.gz"


def _dicom(index: int = 1):
    import pydicom

    return pydicom.dcmread(str(SERIES / f"IM{index:04d}.dcm"))


def _dicom_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()


def _nifti(data: np.ndarray, compress: bool = True) -> bytes:
    raw = nib.Nifti1Image(data, np.diag([2.0, 2.0, 5.0, 1.0])).to_bytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # mode from the dtype/shape: L, I;16, RGBA
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit side x side PNG (about 50 MB of pixels, 400 MB once decoded to 8 bits) in ~50 KB."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor, parts = zlib.compressobj(9), []
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def _slice_hu() -> np.ndarray:
    return np.asarray(nib.load(str(VOLUME)).dataobj)[:, :, 16].T.astype(np.int32)


def _rgba() -> bytes:
    from PIL import Image

    gray = np.asarray(Image.open(SLICE_PNG).convert("L"))
    alpha = np.full_like(gray, 255)
    alpha[:8, :8] = 0  # a transparent corner: the reader must not choke on real alpha
    return _png(np.dstack([gray, gray, gray, alpha]))


def _png16() -> bytes:
    return _png(np.clip(_slice_hu() + 1024, 0, 65535).astype(np.uint16))


def _sr() -> bytes:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["covid-mtl sr"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = "SR", "Phantom^SR"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["covid-mtl sr series"])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.is_little_endian, ds.is_implicit_VR = True, False
    return _dicom_bytes(ds)


def _no_pixels() -> bytes:
    ds = _dicom()
    del ds.PixelData
    return _dicom_bytes(ds)


def _mr() -> bytes:
    ds = _dicom()
    ds.Modality = "MR"
    return _dicom_bytes(ds)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(VOLUME, VOLUME.name)
    return buffer.getvalue()


def _half(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def _volume_with(value: float) -> bytes:
    data = np.asarray(nib.load(str(VOLUME)).dataobj).astype(np.float32)
    data[40:60, 40:60, 10] = value
    return _nifti(data)


def _header_only() -> bytes:
    # the 348-byte header and a few bytes of the 64 KB of voxels it announces
    return _nifti(np.zeros((64, 64, 8), np.int16), compress=False)[:400]


FILES: Dict[str, Callable[[], bytes]] = {
    "dicom_corrupt.dcm": lambda: b"DICM" + random.Random(0).randbytes(8192),
    "dicom_truncated.dcm": lambda: _half(SERIES / "IM0001.dcm"),
    "dicom_no_pixels.dcm": _no_pixels,
    "dicom_mr.dcm": _mr,
    "dicom_sr.dcm": _sr,
    "nifti_truncated.nii.gz": lambda: _half(VOLUME),
    "nifti_zero_bytes.nii.gz": lambda: b"",
    "nifti_header_only.nii": _header_only,
    "nifti_nan.nii.gz": lambda: _volume_with(np.nan),
    "nifti_inf.nii.gz": lambda: _volume_with(np.inf),
    "nifti_4d.nii.gz": lambda: _nifti(np.zeros((64, 64, 8, 3), np.int16)),
    "png_rgba.png": _rgba,
    "png_16bit.png": _png16,
    "png_1x1.png": lambda: _png(np.zeros((1, 1), np.uint8)),
    "png_bomb.png": png_bomb,
    "png_truncated.png": lambda: _half(SLICE_PNG),
    "text_named.nii.gz": lambda: b"this is a radiology report, not an image\n",
    "scan_archive.zip": _zip,
    "garbage.nrrd": lambda: b"NRRD0004\ntype: what\n\n",
}


def _series(dest: Path, edit: Callable[[list], list]) -> None:
    """A copy of the sample series where ``edit`` changes the list of (name, dataset)."""
    import pydicom

    dest.mkdir()
    datasets = [(p.name, pydicom.dcmread(str(p))) for p in sorted(SERIES.glob("*.dcm"))]
    for name, ds in edit(datasets):
        (dest / name).write_bytes(_dicom_bytes(ds))


def _mixed(datasets: list) -> list:
    from pydicom.uid import generate_uid

    other = generate_uid(entropy_srcs=["covid-mtl mixed"])
    for _, ds in datasets[::2]:
        ds.SeriesInstanceUID = other
    return datasets


def _duplicate(datasets: list) -> list:
    from pydicom.uid import generate_uid

    name, ds = datasets[5]
    copy = ds.copy()
    copy.SOPInstanceUID = generate_uid(entropy_srcs=["covid-mtl duplicate"])
    return datasets + [("IM9999.dcm", copy)]


SERIES_EDITS: Dict[str, Callable[[list], list]] = {
    "session_mixed_series": _mixed,
    "session_missing_slice": lambda d: d[:10] + d[11:],  # a 10 mm gap in a 5 mm series
    "session_duplicate_slice": _duplicate,
}


def write_corpus(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name, make in FILES.items():
        (dest / name).write_bytes(make())
    for name, edit in SERIES_EDITS.items():
        _series(dest / name, edit)
    return dest


if __name__ == "__main__":  # python -m tests.app.bad_corpus DEST: write the files to look at them
    import sys

    print(write_corpus(Path(sys.argv[1])))
