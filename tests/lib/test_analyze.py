"""``covid-mtl analyze`` on a folder of mixed inputs with a tiny untrained model: every output, bad case isolated."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from covid_mtl.cli import main
from covid_mtl.commands.analyze import find_cases
from covid_mtl.image import CLASSES
from covid_mtl.demo.phantom import make_phantom
from covid_mtl.demo.sample_data import nifti_bytes, write_ct_series
from covid_mtl.io.normalize import lung_window_u8

SHAPE, SPACING = (8, 64, 64), (5.0, 2.5, 2.5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from covid_mtl.nets.checkpoint import save_checkpoint
    from covid_mtl.nets.config import get_config
    from covid_mtl.nets.factory import build_model

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", build_model(get_config("tiny")))


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cases")
    ph = make_phantom("covid", 5, shape=SHAPE, spacing=SPACING)
    (folder / "chest.nii.gz").write_bytes(nifti_bytes(ph.hu, ph.affine))
    PILImage.fromarray(lung_window_u8(ph.hu[4])).save(folder / "slice.png")
    write_ct_series(folder / "series", make_phantom("normal", 6, shape=SHAPE, spacing=SPACING), "analyze_test")
    (folder / "broken.nii.gz").write_bytes(b"this is not a NIfTI file at all" * 10)
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty_dir").mkdir()
    return folder


def test_find_cases_expands_folders(cases: Path) -> None:
    found, skipped = find_cases([str(cases)])
    assert sorted(c.case_id for c in found) == ["broken", "chest", "series", "slice"]
    assert [c.is_dicom_folder for c in found if c.case_id == "series"] == [True]
    assert any("notes.txt" in s for s in skipped) and any("empty_dir" in s for s in skipped)
    again, _ = find_cases([str(cases / "chest.nii.gz"), str(cases / "chest.nii.gz")])
    assert [c.case_id for c in again] == ["chest", "chest_2"]  # duplicates never overwrite each other


def test_analyze_mixed_folder(cases: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["analyze", str(cases), "--out", str(out), "--checkpoint", str(checkpoint), "--no-progress"])
    assert rc == 1  # the broken case fails the run...
    with open(out / "summary.csv") as f:
        rows = {row["case"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"broken", "chest", "series", "slice"}
    assert rows["broken"]["status"] == "error" and "broken.nii.gz" in rows["broken"]["error"]
    assert "broken" in capsys.readouterr().err
    for case in ("chest", "series", "slice"):  # ...but not the others
        row = rows[case]
        assert row["status"] == "ok", row
        assert row["label"] in CLASSES
        case_dir = out / case
        for name in ("mask.nii.gz", "report.json", "report.png", "report.pdf"):
            assert (case_dir / name).stat().st_size > 0, (case, name)
        report = json.loads((case_dir / "report.json").read_text())
        assert report["model_version"].startswith("tiny-") and len(report["model_version"]) == len("tiny-") + 12
        assert set(report["probabilities"]) == set(CLASSES)
        assert report["quantification"]["lesion_voxels"] == report["lesion_voxels"]
        assert PILImage.open(case_dir / "report.png").size[0] > 800
        assert (case_dir / "report.pdf").read_bytes().startswith(b"%PDF")
    chest = json.loads((out / "chest" / "report.json").read_text())
    ph = make_phantom("covid", 5, shape=SHAPE, spacing=SPACING)
    true_lung_ml = (ph.lung > 0).sum() * np.prod(SPACING) / 1000  # a small chest: ~90 mL on this grid
    assert chest["quantification"]["lung_mask"]["available"]
    assert chest["quantification"]["lung_ml"] == pytest.approx(true_lung_ml, rel=0.1)
    assert nib.load(out / "chest" / "mask.nii.gz").shape == SHAPE[::-1]
    slice_report = json.loads((out / "slice" / "report.json").read_text())
    assert not slice_report["quantification"]["lung_mask"]["available"] and slice_report["quantification"]["lesion_ml"] is None
    assert rows["slice"]["lung_mask"].startswith("skipped")
    seg = pydicom.dcmread(out / "series" / "seg.dcm")
    assert seg.Modality == "SEG" and int(seg.NumberOfFrames) == SHAPE[0]
    assert not (out / "chest" / "seg.dcm").exists()


def test_analyze_clean_run_exits_zero(cases: Path, checkpoint: Path, tmp_path: Path) -> None:
    rc = main(["analyze", str(cases / "chest.nii.gz"), "--out", str(tmp_path), "--checkpoint", str(checkpoint),
               "--no-progress"])
    assert rc == 0 and (tmp_path / "chest" / "report.json").exists()


def test_analyze_refuses_a_missing_checkpoint(cases: Path, tmp_path: Path) -> None:
    rc = main(["analyze", str(cases), "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none.pt")])
    assert rc == 2 and not (tmp_path / "summary.csv").exists()


def test_report_key_slices_follow_the_lesion_and_show_where_the_lungs_end() -> None:
    from covid_mtl.measure.report import N_KEY_SLICES, axial_slices, key_slices

    lesion = np.zeros((40, 8, 8), np.uint8)
    lesion[30:40, :4, :4] = 1
    lesion[35, :, :] = 1  # the largest lesion slice comes first
    chosen = key_slices(lesion, None)
    assert len(chosen) == N_KEY_SLICES and 35 in chosen and all(30 <= z < 40 for z in chosen)
    lung = np.zeros_like(lesion)
    lung[10:30] = 1
    assert all(10 <= z < 30 for z in key_slices(np.zeros_like(lesion), lung))
    # head first: the highest lung slice (canonical layout: high z is the head), the lesion, the lowest lung slice
    lung[30:38] = 1
    views = axial_slices(lesion, lung)
    assert views[0] == (37, "highest lung slice") and views[-1] == (10, "lowest lung slice")
    assert [role for _, role in views[1:-1]] == ["lesion"] * N_KEY_SLICES


def test_warnings_reach_report_json_summary_and_page(cases: Path, checkpoint: Path, tmp_path: Path) -> None:
    """The self-checks travel with the case: report.json (top level and quantification), summary.csv, the page."""
    out = tmp_path / "out"
    assert main(["analyze", str(cases / "chest.nii.gz"), "--out", str(out), "--checkpoint", str(checkpoint),
                 "--no-progress"]) == 0
    report = json.loads((out / "chest" / "report.json").read_text())
    names = [w["name"] for w in report["warnings"]]
    # the 8x64x64 phantom holds ~90 mL of lung in a fully scanned chest: far below an adult's
    assert "lung_volume_implausible" in names
    assert report["quantification"]["warnings"] == report["warnings"]  # NIfTI: no reading warnings
    implausible = next(w for w in report["warnings"] if w["name"] == "lung_volume_implausible")
    assert "lung_ml" in implausible["affects"] and implausible["message"]
    with open(out / "summary.csv") as f:
        row = next(csv.DictReader(f))
    assert row["warnings"].split(";") == names
    assert report["lesion_volume_ml"] == report["quantification"]["lesion_ml"]  # quantify owns the number


def test_non_conformant_uids_are_reported_once_per_series_not_per_file(checkpoint: Path, tmp_path: Path,
                                                                       capfd) -> None:
    import warnings

    folder = tmp_path / "uuid_series"
    files = write_ct_series(folder, make_phantom("normal", 6, shape=SHAPE, spacing=SPACING), "uuid_test")
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on setting the bad value too
            ds.SOPInstanceUID = f"1b4e28ba-2fa1-11d2-883f-0016d3cca4{i:02d}"  # a UUID string: not a DICOM UID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(path)
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        assert main(["analyze", str(folder), "--out", str(out), "--checkpoint", str(checkpoint), "--no-progress",
                     "--no-dicom-seg"]) == 0
    assert not [w for w in escaped if "VR UI" in str(w.message)]
    assert "VR UI" not in capfd.readouterr().err  # no console line per file
    report = json.loads((out / "uuid_series" / "report.json").read_text())
    uid_warnings = [w for w in report["warnings"] if w["name"] == "dicom_nonconformant_uid"]
    assert len(uid_warnings) == 1 and uid_warnings[0]["value"] >= len(files)
    assert "1b4e28ba" in uid_warnings[0]["message"]


def test_report_page_has_the_coronal_view_and_warning_lines(tmp_path: Path, checkpoint: Path) -> None:
    from covid_mtl.image import Image
    from covid_mtl.measure.analysis import analyze
    from covid_mtl.measure.report import measure_lines, warning_lines, write_report
    from covid_mtl.measure.report_coronal import coronal_row
    from covid_mtl.predict.predictor import Predictor

    ph = make_phantom("covid", 5, shape=SHAPE, spacing=SPACING)
    image = Image(ph.hu.astype(np.float32), SPACING, ph.affine, True, "phantom")
    analysis = analyze(image, Predictor.from_checkpoint(checkpoint, device="cpu"))
    measures = analysis.result["quantification"]
    lines = measure_lines(measures)
    assert any(line.startswith("Lung volume") and "<! lung_volume_implausible" in line for line in lines)
    assert warning_lines(measures["warnings"])[0].startswith("! lung_volume_implausible:")
    lung = analysis.lung
    y = coronal_row(lung.labels, ph.lesion, SHAPE[1])
    assert y == round(np.argwhere(lung.labels > 0)[:, 1].mean()) and lung.labels[:, y, :].any()
    png, pdf = write_report(analysis, tmp_path / "report")
    assert pdf.read_bytes().startswith(b"%PDF") and PILImage.open(png).size[0] > 800
