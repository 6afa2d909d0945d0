"""The committed sample set: reproducible byte for byte, a readable manifest, valid NIfTI/PNG/DICOM files."""
import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from covid_mtl.io.normalize import lung_window_u8
from covid_mtl.errors import CovidMTLError
from covid_mtl.io.manifest import read_manifest
from covid_mtl.demo.phantom import DEFAULT_SHAPE, make_phantom
from covid_mtl.demo.sample_data import DICOM_CASE, default_command, plan_cases, write_sample_data

COMMITTED = Path(__file__).resolve().parents[2] / "sample_data"
TINY = (4, 48, 48)
COMMITTED_WITH_ZLIB = "1.2.13"  # zlib that compressed the committed files


SERVER_FILES = {"datastore_v2.json"}


def _files(root: Path) -> dict[str, Path]:
    """Every generated file by relative path; what a MONAI Label server writes there (`make serve` serves
    sample_data/: datastore_v2.json, .lock) is not ours."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in SERVER_FILES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("regen") / "sample_data"
    write_sample_data(out, command=default_command("sample_data", 2, 0, DEFAULT_SHAPE, 1))
    return out


@pytest.fixture(scope="module")
def cases():
    return {c.id: c for c in plan_cases()}


def _same_content(a: Path, b: Path) -> bool:
    """Equal bytes; for zlib-compressed files (gzip, PNG), equal decompressed content.

    The compressed stream can differ between zlib builds, which is outside the generator's control; the
    strict byte test on one machine is test_generation_is_byte_for_byte_deterministic.
    """
    data_a, data_b = a.read_bytes(), b.read_bytes()
    if data_a == data_b:
        return True
    if a.name.endswith(".gz"):
        return data_a[:10] == data_b[:10] and gzip.decompress(data_a) == gzip.decompress(data_b)
    if a.suffix == ".png":
        image_a, image_b = PILImage.open(a), PILImage.open(b)
        return image_a.mode == image_b.mode and np.array_equal(np.asarray(image_a), np.asarray(image_b))
    return False


def test_regenerating_gives_the_committed_files(regenerated):
    committed, fresh = _files(COMMITTED), _files(regenerated)
    assert sorted(fresh) == sorted(committed)
    different = [name for name in fresh if not _same_content(fresh[name], committed[name])]
    assert different == []
    same_bytes = sum(fresh[name].read_bytes() == committed[name].read_bytes() for name in fresh)
    if zlib.ZLIB_RUNTIME_VERSION == COMMITTED_WITH_ZLIB:
        assert same_bytes == len(fresh)


def test_generation_is_byte_for_byte_deterministic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        write_sample_data(out, n_per_class=2, seed=9, shape=TINY, command="same")
    a, b = _files(first), _files(second)
    assert sorted(a) == sorted(b) and len(a) > 10
    assert [n for n in a if a[n].read_bytes() != b[n].read_bytes()] == []


def test_committed_set_is_small():
    assert sum(p.stat().st_size for p in _files(COMMITTED).values()) < 6_000_000


def test_manifest_lists_every_image_with_partial_labels():
    rows = read_manifest(COMMITTED / "manifest.csv")
    assert len(rows) == 10
    assert {r.label for r in rows} == {"covid", "normal", "other"}
    assert {r.split for r in rows} <= {"train", "val", "test"} and "test" in {r.split for r in rows}
    unlabelled = sorted(Path(r.image).name for r in rows if r.mask is None)
    assert unlabelled == ["covid_002.nii.gz", "normal_002.nii.gz", "other_002.nii.gz"]
    assert any(Path(r.image).is_dir() and Path(r.image).name == DICOM_CASE for r in rows)
    # MONAI Label's LocalDatastore finds a label by image id under labels/final
    for r in rows:
        if r.mask and not Path(r.image).is_dir():
            assert Path(r.mask) == COMMITTED / "labels" / "final" / Path(r.image).name


def test_nifti_volumes_hold_the_phantom_on_its_grid(cases):
    case = cases["covid_001"]
    phantom = make_phantom(case.kind, case.seed)
    img = nib.load(COMMITTED / "covid_001.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert np.allclose(img.affine, phantom.affine, atol=1e-5)
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), phantom.hu)
    mask = nib.load(COMMITTED / "labels" / "final" / "covid_001.nii.gz")
    assert mask.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(mask.dataobj).transpose(2, 1, 0), phantom.lesion)


def test_png_slices_are_lung_window_renderings_with_0_1_masks():
    for kind in ("covid", "normal", "other"):
        image = PILImage.open(COMMITTED / f"{kind}_slice_001.png")
        mask = np.asarray(PILImage.open(COMMITTED / "labels" / "final" / f"{kind}_slice_001.png"))
        assert image.mode == "L" and image.size == (160, 160)
        assert set(np.unique(mask)) <= {0, 1}
        assert mask.any() == (kind != "normal")
        pixels = np.asarray(image)
        # air (-1000 HU) where W 1500 / L -600 puts it, bone above the window's top
        assert pixels[0, 0] == lung_window_u8(np.array([-1000.0]))[0] and pixels.max() == 255


def test_dicom_series_geometry_and_values(cases):
    folder = COMMITTED / "dicom" / DICOM_CASE
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    assert len(datasets) == 24
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.CTImageStorage and first.Modality == "CT"
    assert str(first.PatientName) == "Phantom^Covid"
    assert len({d.SOPInstanceUID for d in datasets}) == 24
    for tag in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({d.data_element(tag).value for d in datasets}) == 1
    assert [d.InstanceNumber for d in datasets] == list(range(1, 25))
    for d in datasets:
        assert [float(v) for v in d.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in d.PixelSpacing] == [2.2, 2.2] and float(d.SliceThickness) == 5.0
    by_z = sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    assert np.allclose(np.diff([float(d.ImagePositionPatient[2]) for d in by_z]), 5.0)
    case = cases[DICOM_CASE]
    phantom = make_phantom(case.kind, case.seed, (24, 160, 160))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in by_z])
    assert np.array_equal(hu, phantom.hu)
    lps_origin = np.diag([-1, -1, 1]) @ phantom.affine[:3, 3]
    assert np.allclose([float(v) for v in by_z[0].ImagePositionPatient], lps_origin)


def test_refuses_a_non_empty_folder_and_overwrite_clears_only_its_own_files(tmp_path):
    out = tmp_path / "data"
    write_sample_data(out, n_per_class=1, shape=TINY)
    (out / "notes.txt").write_text("mine")
    (out / "covid_099.nii.gz").write_bytes(b"stale")
    with pytest.raises(CovidMTLError, match="not empty"):
        write_sample_data(out, n_per_class=1, shape=TINY)
    write_sample_data(out, n_per_class=1, shape=TINY, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "covid_099.nii.gz").exists()
    assert len(read_manifest(out / "manifest.csv")) == 3 + 3 + 1


def test_larger_sets_split_every_class_three_ways():
    cases = [c for c in plan_cases(seed=4, n_per_class=10, n_labelled=3) if c.form == "volume"]
    for kind in ("covid", "normal", "other"):
        splits = [c.split for c in cases if c.kind == kind]
        assert splits.count("test") == 2 and splits.count("val") == 2 and splits.count("train") == 6
        assert sum(c.labelled for c in cases if c.kind == kind) == 3
    assert len({c.seed for c in plan_cases(seed=4, n_per_class=10)}) == 34


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(CovidMTLError):
        write_sample_data(tmp_path / "a", n_per_class=0)
    with pytest.raises(CovidMTLError):
        write_sample_data(tmp_path / "b", shape=(4, 8, 8))


def test_every_sample_format_reads_through_read_image():
    from covid_mtl.io import read_image

    for row in read_manifest(COMMITTED / "manifest.csv"):
        image = read_image(row.image)
        name = Path(row.image).name
        if name.endswith(".png"):
            assert image.shape == (1, 160, 160) and not image.is_hu and image.bit_depth == 8
        else:
            assert image.is_hu and image.shape == ((24,) if name == DICOM_CASE else (32,)) + (160, 160)
            assert np.allclose(image.spacing, (5.0, 2.2, 2.2))
            assert image.array.min() >= -1024 and image.array.max() > 500
        if row.mask:
            mask = read_image(row.mask)
            assert mask.shape == image.shape and set(np.unique(mask.array)) <= {0.0, 1.0}
            if image.affine is not None and mask.affine is not None:
                assert np.allclose(mask.affine, image.affine, atol=1e-4)


def test_dicom_reads_in_slice_order_despite_reversed_instance_numbers(cases):
    from covid_mtl.io import read_image

    image = read_image(COMMITTED / "dicom" / DICOM_CASE)
    case = cases[DICOM_CASE]
    assert np.array_equal(image.array, make_phantom(case.kind, case.seed, (24, 160, 160)).hu)
    assert image.meta["series_uid"] == pydicom.dcmread(COMMITTED / "dicom" / DICOM_CASE / "IM0001.dcm").SeriesInstanceUID


def test_cli_writes_a_set_and_reports_bad_input(tmp_path, capsys):
    from covid_mtl.cli import main

    out = tmp_path / "cli"
    assert main(["sample-data", "--out", str(out), "--n-per-class", "1", "--shape", *map(str, TINY)]) == 0
    assert len(read_manifest(out / "manifest.csv")) == 7
    assert f"--out {out} --n-per-class 1 --shape 4 48 48" in (out / "README.md").read_text()
    assert main(["sample-data", "--out", str(out), "--n-per-class", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
