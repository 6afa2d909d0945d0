"""Synthetic sample data in the layout a MONAI Label ``LocalDatastore`` serves directly.

```
<out>/<kind>_NNN.nii.gz            int16 HU volumes (top level: the datastore's images)
<out>/<kind>_slice_001.png         8-bit lung-window axial slices (non-HU images)
<out>/labels/final/<id>.<ext>      lesion masks (0/1) for part of the images only
<out>/dicom/covid_dicom_001/       one DICOM CT series (the datastore ignores sub-folders)
<out>/dicom/covid_dicom_001_lesion.nii.gz   its lesion mask on the same grid
<out>/manifest.csv                 image,mask,label,split for every image above
<out>/README.md
```
Every file is byte-for-byte reproducible from the arguments (gzip mtime 0, derived DICOM UIDs, fixed dates).
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
from PIL import Image as PILImage
from tqdm import tqdm

from ..errors import CovidMTLError
from ..io.normalize import lung_window_u8
from ..image import CLASSES
from .phantom import DEFAULT_SHAPE, DEFAULT_SPACING, Phantom, check_grid, check_seed, make_phantom

DICOM_CASE = "covid_dicom_001"
_FORMS = ("volume", "slice", "dicom")
# names this module writes; used to clear a previous generation without touching anything else
_GENERATED = re.compile(r"^(covid|normal|other)_((slice|dicom)_)?\d{3}(_lesion)?(\.nii\.gz|\.png)?$")


@dataclass(frozen=True)
class SampleCase:
    id: str
    kind: str
    form: str  # "volume", "slice" or "dicom"
    seed: int
    labelled: bool
    split: str

    @property
    def image(self) -> str:
        return {"volume": f"{self.id}.nii.gz", "slice": f"{self.id}.png", "dicom": f"dicom/{self.id}"}[self.form]

    @property
    def mask(self) -> str:
        if not self.labelled:
            return ""
        if self.form == "dicom":
            return f"dicom/{self.id}_lesion.nii.gz"
        return f"labels/final/{self.image}"


def case_seed(seed: int, kind: str, index: int, form: str) -> int:
    """Phantom seed of one case, derived so that no two cases of a data set share anatomy."""
    entropy = [int(seed), CLASSES.index(kind), int(index), _FORMS.index(form)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _splits(seed: int, kind: str, n: int) -> list[str]:
    """Seeded per-class split: about 20 % test and 20 % val, at least one test case from two cases on."""
    n_test = max(1, round(0.2 * n)) if n >= 2 else 0
    n_val = max(1, round(0.2 * n)) if n >= 3 else 0
    order = np.random.default_rng([int(seed), 7, CLASSES.index(kind)]).permutation(n)
    splits = ["train"] * n
    for rank, index in enumerate(order):
        splits[index] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def plan_cases(seed: int = 0, n_per_class: int = 2, n_labelled: int = 1) -> list[SampleCase]:
    """All cases of a sample set, in manifest order: volumes by class, one PNG slice per class, the DICOM."""
    cases = []
    for kind in CLASSES:
        for i, split in enumerate(_splits(seed, kind, n_per_class)):
            cases.append(SampleCase(f"{kind}_{i + 1:03d}", kind, "volume", case_seed(seed, kind, i, "volume"),
                                    i < n_labelled, split))
    for kind in CLASSES:
        cases.append(SampleCase(f"{kind}_slice_001", kind, "slice", case_seed(seed, kind, 0, "slice"), True, "train"))
    cases.append(SampleCase(DICOM_CASE, "covid", "dicom", case_seed(seed, "covid", 0, "dicom"), True, "test"))
    return cases


def nifti_bytes(array_zyx: np.ndarray, affine: np.ndarray, description: str = "") -> bytes:
    """A gzipped NIfTI-1 of a (z, y, x) array with qform = sform = ``affine``; gzip mtime 0 keeps it reproducible."""
    img = nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), affine)
    img.header.set_data_dtype(array_zyx.dtype)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = description[:79].encode("ascii")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def _png_bytes(array_yx: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array_yx), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _shown_slice(phantom: Phantom) -> int:
    """Axial slice with the most lesion (or, for a normal chest, the most lung)."""
    mask = phantom.lesion if phantom.lesion.any() else phantom.lung
    return int(np.argmax(mask.sum(axis=(1, 2))))


def _write_case(out: Path, case: SampleCase, shape: tuple[int, int, int], spacing, dicom_slices: int) -> None:
    if case.form == "dicom":
        grid = (min(dicom_slices, shape[0]), shape[1], shape[2])
        phantom = make_phantom(case.kind, case.seed, grid, spacing)
        write_ct_series(out / case.image, phantom, case.id)
        if case.labelled:
            _write(out / case.mask, nifti_bytes(phantom.lesion, phantom.affine, f"lesion mask {case.id}"))
        return
    phantom = make_phantom(case.kind, case.seed, shape, spacing)
    if case.form == "slice":
        z = _shown_slice(phantom)
        _write(out / case.image, _png_bytes(lung_window_u8(phantom.hu[z])))
        if case.labelled:
            _write(out / case.mask, _png_bytes(phantom.lesion[z]))
        return
    desc = f"covid-mtl synthetic {case.kind} phantom seed {case.seed}"
    _write(out / case.image, nifti_bytes(phantom.hu, phantom.affine, desc))
    if case.labelled:
        _write(out / case.mask, nifti_bytes(phantom.lesion, phantom.affine, f"lesion mask {case.id}"))


def write_ct_series(folder: Path, phantom: Phantom, case_id: str) -> list[Path]:
    """One CT Image Storage file per slice; UIDs derive from the case, so rewriting gives identical bytes.

    Instance 1 is the most superior slice, as scanners number a head-first axial series, so readers have to
    order slices by position rather than by file name or instance number.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    def uid(*parts: str) -> str:
        return generate_uid(entropy_srcs=["covid-mtl", case_id, str(phantom.seed), *parts])

    study, series, frame = uid("study"), uid("series"), uid("frame")
    nz, ny, nx = phantom.hu.shape
    sz, sy, sx = phantom.spacing
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ phantom.affine  # voxel (x, y, z) -> patient LPS
    stored = (phantom.hu.astype(np.int32) + 1024).astype(np.uint16)  # hu >= -1024 by construction
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for instance, z in enumerate(range(nz - 1, -1, -1), start=1):
        sop = uid("image", str(z))
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = folder / f"IM{instance:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = "20200401"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120000"
        ds.AccessionNumber, ds.Modality, ds.Manufacturer = "", "CT", "covid-mtl synthetic phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Synthetic chest CT"
        ds.SeriesDescription = f"covid-mtl phantom {case_id} ({phantom.kind})"
        ds.PatientName, ds.PatientID = "Phantom^Covid", f"PHANTOM-{case_id}"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.BodyPartExamined, ds.KVP, ds.PatientPosition = "CHEST", "120", "HFS"
        ds.SliceThickness = f"{sz:g}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = "1", 1, 1, instance
        position = lps[:3, :3] @ np.array([0.0, 0.0, z]) + lps[:3, 3]
        ds.ImagePositionPatient = [f"{v:g}" for v in position]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{position[2]:g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]  # row spacing (y), column spacing (x)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        ds.PixelData = np.ascontiguousarray(stored[z]).tobytes()
        pydicom.dcmwrite(path, ds, write_like_original=False)
        paths.append(path)
    return paths


def _manifest_text(cases: list[SampleCase]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "mask", "label", "split"])
    for case in cases:
        writer.writerow([case.image, case.mask, case.kind, case.split])
    return buf.getvalue()


def _readme_text(cases: list[SampleCase], command: str) -> str:
    labelled = ", ".join(c.image for c in cases if c.labelled)
    unlabelled = ", ".join(c.image for c in cases if not c.labelled) or "none"
    return f"""# Sample data (synthetic)

Every file here is a **synthetic chest-CT phantom** made by `covid_mtl.demo.phantom.make_phantom`; no patient data.
Regenerate byte-for-byte with

    {command}

- `*_NNN.nii.gz`: 3D int16 HU volumes (RAS affine, qform = sform), classes covid / normal / other.
- `*_slice_001.png`: 8-bit lung-window (W 1500 / L -600: [-1350, 150] HU) axial slices, not HU.
- `dicom/{DICOM_CASE}/`: one CT series (CT Image Storage, explicit VR little endian, RescaleIntercept -1024);
  its lesion mask is `dicom/{DICOM_CASE}_lesion.nii.gz`.
- `labels/final/`: lesion masks (0/1) in the layout of a MONAI Label `LocalDatastore`, which serves this folder
  as it is (it reads only the top level; `dicom/` is ignored there).
- `manifest.csv`: `image,mask,label,split` for everything, paths relative to this folder.

Lesion masks mark COVID ground-glass/consolidation, and for `other` the non-COVID infection (lobar
consolidation, cavity or nodules), all inside the lungs.

Labelled: {labelled}.
Unlabelled (left for active learning): {unlabelled}.
"""


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CovidMTLError(f"{out}: output path exists and is not a folder")
    entries = [e for e in out.iterdir() if not e.name.startswith(".")] if out.exists() else []
    if entries and not overwrite:
        raise CovidMTLError(f"{out}: output folder is not empty; use overwrite (--overwrite) to regenerate")
    # clear only what an earlier generation wrote, so stale cases do not linger in the datastore
    for folder in (out, out / "labels" / "final", out / "dicom"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if _GENERATED.match(entry.name) or (folder == out and entry.name in ("manifest.csv", "README.md")):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def write_sample_data(
    out_dir: str | os.PathLike,
    n_per_class: int = 2,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    n_labelled: int = 1,
    dicom_slices: int = 24,
    overwrite: bool = False,
    progress: bool = False,
    command: str | None = None,
) -> Path:
    """Write the sample set into ``out_dir`` and return the path of its ``manifest.csv``.

    ``n_labelled`` volumes per class (the first ones) get masks in ``labels/final``; the PNG slices and the
    DICOM series are always labelled. ``command`` is the command line quoted in the README.
    """
    if n_per_class < 1 or not 0 <= n_labelled or dicom_slices < 2:
        raise CovidMTLError(f"sample data needs n_per_class >= 1, n_labelled >= 0 and dicom_slices >= 2; got "
                            f"{n_per_class}, {n_labelled}, {dicom_slices}")
    seed = check_seed(seed)
    shape, spacing = check_grid(shape, spacing)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    cases = plan_cases(seed, n_per_class, n_labelled)
    jobs: list[Callable[[], None]] = [
        (lambda c=case: _write_case(out, c, shape, spacing, dicom_slices)) for case in cases
    ]
    for job in tqdm(jobs, desc="sample-data", unit="case", disable=not progress):
        job()
    if command is None:
        command = default_command(out_dir, n_per_class, seed, shape, n_labelled)
    _write(out / "README.md", _readme_text(cases, command).encode("utf-8"))
    manifest = out / "manifest.csv"
    _write(manifest, _manifest_text(cases).encode("utf-8"))
    return manifest


def default_command(out_dir, n_per_class: int, seed: int, shape, n_labelled: int) -> str:
    """The CLI line that regenerates a set; options at their defaults are left out."""
    parts = [".venv/bin/covid-mtl sample-data", f"--out {out_dir}"]
    if n_per_class != 2:
        parts.append(f"--n-per-class {n_per_class}")
    if seed != 0:
        parts.append(f"--seed {seed}")
    if tuple(shape) != DEFAULT_SHAPE:
        parts.append("--shape " + " ".join(str(n) for n in shape))
    if n_labelled != 1:
        parts.append(f"--n-labelled {n_labelled}")
    return " ".join(parts)
