"""Readers: every real scan in shared/, each format, and every kind of bad input."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from covid_mtl.errors import CovidMTLError
from covid_mtl.io import read_image, write_mask
from covid_mtl.io.normalize import LUNG_WINDOW, normalize, normalize_array

REAL_CASES = {
    # relative path: (shape zyx, spacing zyx, has lung-like air inside the body)
    "totalsegmentator_example/example_ct.nii.gz": ((112, 101, 122), (3.0, 3.0, 3.0)),
    "totalsegmentator_example/example_ct_sm.nii.gz": ((30, 101, 122), (3.0, 3.0, 3.0)),
    "totalsegmentator_example/pulmonary_report_ct_cropped.nii.gz": ((112, 102, 122), (1.5, 1.5, 1.5)),
    "totalsegmentator_example/example_ct_dicom": ((20, 512, 512), (None, None, None)),
    "lungmask_testdata": ((2, 512, 512), (1.0, 0.625, 0.625)),
    "lungmask_testdata/0.dcm": ((1, 512, 512), (None, 0.625, 0.625)),
    "pydicom_ct_small/CT_small.dcm": ((1, 128, 128), (None, None, None)),
}


@pytest.mark.parametrize("relative", sorted(REAL_CASES))
def test_real_ct_reads_in_hu(real_ct: Path, relative: str) -> None:
    image = read_image(real_ct / relative)
    shape, spacing = REAL_CASES[relative]
    assert image.shape == shape
    assert image.array.dtype == np.float32
    assert image.is_hu
    for got, want in zip(image.spacing, spacing):
        assert got > 0
        if want is not None:
            assert got == pytest.approx(want, rel=1e-4)
    # Real CT in HU: lung or air at -850 or below (-2048 pads outside the field of view), bone above +300.
    assert image.array.min() <= -850
    assert image.array.max() >= 300
    assert image.affine is not None and image.affine.shape == (4, 4)


def test_real_dicom_series_is_sorted_and_geometric(real_ct: Path) -> None:
    folder = real_ct / "totalsegmentator_example/example_ct_dicom"
    image = read_image(folder)
    assert image.meta["modality"] == "CT"
    assert len(image.meta["files"]) == 20  # this anonymised export carries no UIDs: none are invented
    positions = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in image.meta["files"]]
    assert positions == sorted(positions)
    # The affine reproduces each slice's position (LPS -> RAS flips x and y).
    for k, f in enumerate(image.meta["files"]):
        ipp = np.array(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient, float)
        ras = image.affine @ np.array([0, 0, k, 1.0])
        np.testing.assert_allclose(ras[:3], ipp * [-1, -1, 1], atol=1e-3)
    # JPEG 2000 decoded to real anatomy: a 512x512 abdomen slice has soft tissue around 0..100 HU.
    soft = ((image.array > 0) & (image.array < 100)).mean()
    assert soft > 0.1


def test_nifti_round_trip_and_mask_writer(tmp_path: Path) -> None:
    hu = np.full((10, 40, 50), -1000, np.int16)
    hu[:, 10:30, 10:40] = 40
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), affine), tmp_path / "ct.nii.gz")
    image = read_image(tmp_path / "ct.nii.gz")
    assert image.shape == (10, 40, 50) and image.is_hu
    assert image.spacing == pytest.approx((2.5, 0.7, 0.8))
    np.testing.assert_array_equal(image.array, hu.astype(np.float32))
    mask = (image.array > 0).astype(np.uint8)
    write_mask(mask, image, tmp_path / "mask.nii.gz")
    back = nib.load(tmp_path / "mask.nii.gz")
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj).transpose(2, 1, 0), mask)
    again = read_image(tmp_path / "mask.nii.gz")
    assert not again.is_hu  # a 0/1 mask has no air: not mistaken for HU


@pytest.mark.parametrize("stored", [(40, 30), (40, 30, 5, 1)])
def test_mask_keeps_the_nifti_files_own_shape(tmp_path: Path, stored) -> None:
    data = np.zeros(stored, np.int16)
    data[5:20, 10:15] = 1
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.5, 1.0])), tmp_path / "in.nii.gz")
    image = read_image(tmp_path / "in.nii.gz")
    assert image.array.ndim == 3  # the reader hands out (z, y, x)
    write_mask((image.array > 0).astype(np.uint8), image, tmp_path / "mask.nii.gz")
    back = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj)
    assert back.shape == stored
    np.testing.assert_array_equal(back, data > 0)


def test_nrrd_reads_lps_geometry(tmp_path: Path) -> None:
    import nrrd

    data = np.full((30, 20, 6), -1000, np.int16)  # (x, y, z)
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.5, 0.6, 3.0]),
              "space origin": np.array([10.0, 20.0, 30.0])}
    nrrd.write(str(tmp_path / "ct.nrrd"), data, header)
    image = read_image(tmp_path / "ct.nrrd")
    assert image.shape == (6, 20, 30)
    assert image.spacing == pytest.approx((3.0, 0.6, 0.5))
    np.testing.assert_allclose(image.affine[:3, 3], [-10.0, -20.0, 30.0])


@pytest.mark.parametrize("mode,dtype,depth", [("L", np.uint8, 8), ("I;16", np.uint16, 16), ("RGB", np.uint8, 8),
                                              ("RGBA", np.uint8, 8)])
def test_png_gray_and_bit_depth(tmp_path: Path, mode: str, dtype, depth: int) -> None:
    gray = (np.arange(64 * 48).reshape(48, 64) % 200).astype(dtype)
    if mode in ("RGB", "RGBA"):
        pixels = np.stack([gray] * (3 if mode == "RGB" else 4), axis=-1)
        if mode == "RGBA":
            pixels[..., 3] = 255
        PILImage.fromarray(pixels, mode).save(tmp_path / "s.png")
    else:
        PILImage.fromarray(gray).save(tmp_path / "s.png")
    image = read_image(tmp_path / "s.png")
    assert image.shape == (1, 48, 64) and not image.is_hu and image.bit_depth == depth
    np.testing.assert_allclose(image.array[0], gray, atol=1)
    scaled = normalize(image)
    assert scaled.max() <= 1.0 and scaled.max() == pytest.approx(199 / (2**depth - 1), abs=1e-2)


def test_hu_window() -> None:
    values = np.array([-2000, -1350, -600, 150, 1500], np.float32)
    out = normalize_array(values, is_hu=True)
    assert out.tolist() == pytest.approx([0.0, 0.0, 750 / 1500, 1.0, 1.0])
    assert LUNG_WINDOW == (-1350.0, 150.0)  # W 1500 / L -600


def _ct_slice(path: Path, z: float, series_uid: str, modality: str = "CT", rows: int = 32) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, series_uid, "1.2.3"
    ds.Rows, ds.Columns, ds.PixelSpacing = rows, 32, [0.7, 0.7]
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, z]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.full((rows, 32), 1024 + 40, np.uint16).tobytes()
    ds.save_as(str(path), write_like_original=False)


def test_dicom_series_rescale_and_mixed_series(tmp_path: Path) -> None:
    for k in range(3):
        _ct_slice(tmp_path / f"a{k}.dcm", 2.0 * k, "1.2.3.4")
    image = read_image(tmp_path)
    assert image.shape == (3, 32, 32) and image.spacing == pytest.approx((2.0, 0.7, 0.7))
    assert float(image.array.mean()) == pytest.approx(40.0)
    _ct_slice(tmp_path / "b0.dcm", 0.0, "1.2.3.5")
    with pytest.raises(CovidMTLError, match=r"2 series.*1\.2\.3\.4.*1\.2\.3\.5"):
        read_image(tmp_path)
    assert read_image(tmp_path, series_uid="1.2.3.5").shape == (1, 32, 32)


def _bad_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp / "nope.nii.gz", "no such file")
    (tmp / "empty_dir").mkdir()
    cases["empty folder"] = (tmp / "empty_dir", "empty")
    (tmp / "zero.nii.gz").write_bytes(b"")
    cases["zero bytes"] = (tmp / "zero.nii.gz", "empty")
    (tmp / "text.nii.gz").write_text("hello, not an image")
    cases["text as nifti"] = (tmp / "text.nii.gz", "not a readable NIfTI")
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 20), np.int16), np.eye(4)), tmp / "full.nii.gz")
    raw = gzip.decompress((tmp / "full.nii.gz").read_bytes())
    (tmp / "trunc.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    cases["truncated nifti"] = (tmp / "trunc.nii.gz", "not a readable NIfTI")
    nan = np.zeros((20, 20, 4), np.float32)
    nan[3, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp / "nan.nii.gz")
    cases["nan"] = (tmp / "nan.nii.gz", "NaN")
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 4, 3), np.int16), np.eye(4)), tmp / "4d.nii.gz")
    cases["4d"] = (tmp / "4d.nii.gz", "4D")
    PILImage.fromarray(np.zeros((1, 1), np.uint8)).save(tmp / "one.png")
    cases["1 pixel"] = (tmp / "one.png", "too small")
    PILImage.new("L", (20000, 20000)).save(tmp / "bomb.png", optimize=True)
    cases["absurd size"] = (tmp / "bomb.png", "too large")
    (tmp / "notes.txt").write_text("x")
    cases["non-image"] = (tmp / "notes.txt", "unsupported file type")
    mr = tmp / "mr"
    mr.mkdir()
    _ct_slice(mr / "m.dcm", 0.0, "9.9", modality="MR")
    cases["mr series"] = (mr, "MR series")
    _ct_slice(tmp / "ok.dcm", 0.0, "7.7")
    data = (tmp / "ok.dcm").read_bytes()
    (tmp / "cut.dcm").write_bytes(data[: len(data) - 900])
    cases["truncated dicom"] = (tmp / "cut.dcm", "cannot decode pixel data|not a readable DICOM")
    gap = tmp / "gap"
    gap.mkdir()
    for k, z in enumerate([0.0, 2.0, 4.0, 10.0]):
        _ct_slice(gap / f"g{k}.dcm", z, "8.8")
    cases["inconsistent spacing"] = (gap, "inconsistent slice spacing")
    return cases


def test_bad_inputs_raise_project_error(tmp_path: Path) -> None:
    for name, (path, message) in _bad_cases(tmp_path).items():
        with pytest.raises(CovidMTLError, match=message) as info:
            read_image(path)
        assert path.name in str(info.value), name


def test_package_entry_points_resolve_to_the_rooms():
    import covid_mtl
    from covid_mtl.io import read_image as room_reader
    from covid_mtl.predict.predictor import Predictor as room_predictor

    assert covid_mtl.read_image is room_reader and covid_mtl.Predictor is room_predictor
    assert all(getattr(covid_mtl, name) is not None for name in covid_mtl.__all__)
    with pytest.raises(AttributeError):
        covid_mtl.no_such_entry_point


def test_write_volume_round_trips_a_dicom_series_on_its_grid(tmp_path):
    """A DICOM series served as NIfTI (the PACS datastore's cache): same voxels, same grid, HU kept as int16."""
    from covid_mtl.demo.phantom import make_phantom
    from covid_mtl.demo.sample_data import write_ct_series
    from covid_mtl.io import read_image, write_volume

    write_ct_series(tmp_path / "series", make_phantom("covid", 2, shape=(6, 40, 48), spacing=(3.0, 0.8, 0.7)), "rt")
    dicom = read_image(tmp_path / "series")
    for name in ("v.nii", "v.nii.gz"):
        back = read_image(write_volume(dicom, tmp_path / name))
        np.testing.assert_array_equal(back.array, dicom.array)
        np.testing.assert_allclose(back.affine, dicom.affine, atol=1e-5)
        assert back.is_hu
    import nibabel as nib

    assert nib.load(tmp_path / "v.nii").get_data_dtype() == np.int16
