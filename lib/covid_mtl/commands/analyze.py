"""``covid-mtl analyze``: per case a lesion mask, JSON report, PNG/PDF report (and DICOM SEG), plus summary.csv.

INPUT may be image files (NIfTI, NRRD, DICOM, PNG/JPG/TIFF), DICOM series folders, or folders of cases (their
image files and DICOM sub-folders). A case that fails is reported in summary.csv and on stderr; the others
still run, and the exit code is 1 when any case failed.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CovidMTLError

SUMMARY_COLUMNS = (
    "case", "input", "status", "label", "statement", "p_covid", "p_normal", "p_other", "lesion_ml", "lung_ml",
    "percent_involved", "zone_severity_score", "lesion_outside_lung_ml", "lung_mask", "warnings", "outputs", "seconds",
    "error",
)
_NOT_IMAGES = {".txt", ".md", ".csv", ".json", ".py", ".pdf", ".html", ".log", ".yaml", ".yml", ".xml", ".zip"}


@dataclass
class Case:
    case_id: str
    path: Path
    is_dicom_folder: bool = False


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("analyze", help="classify and segment CT cases, write masks, reports and measures",
                              description=__doc__)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, DICOM folders or folders of cases")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per case + summary.csv)")
    p.add_argument("--checkpoint", default=None,
                   help="model checkpoint (default: the packaged demo model, when this install has one)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--no-dicom-seg", action="store_true", help="skip the DICOM SEG for DICOM inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _is_dicom_file(path: Path) -> bool:
    from ..io.dicom import is_dicom_file

    return path.suffix.lower() == ".dcm" or is_dicom_file(path)


def _holds_dicom(folder: Path) -> bool:
    return any(p.is_file() and _is_dicom_file(p) for p in folder.iterdir())


def _is_image_file(path: Path) -> bool:
    from ..io import SUPPORTED_SUFFIXES, image_suffix

    return image_suffix(path) in SUPPORTED_SUFFIXES or _is_dicom_file(path)


def _case_id(path: Path) -> str:
    from ..io import SUPPORTED_SUFFIXES, image_suffix  # the reader's suffixes: io owns them

    name, suffix = path.name, image_suffix(path)
    if suffix in SUPPORTED_SUFFIXES:
        name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "case"


def find_cases(inputs: list[str]) -> tuple[list[Case], list[str]]:
    """Expand INPUT arguments into cases; returns (cases, skipped file notes). Missing inputs become cases
    too, so they fail visibly in summary.csv rather than vanish."""
    found: list[tuple[Path, bool]] = []
    skipped: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if not path.is_dir():
            found.append((path, False))
        elif _holds_dicom(path):
            found.append((path, True))
        else:
            for child in sorted(path.iterdir()):
                if child.name.startswith("."):
                    continue
                if child.is_dir():
                    if _holds_dicom(child):
                        found.append((child, True))
                    else:
                        skipped.append(f"{child} (folder without DICOM files)")
                elif child.suffix.lower() in _NOT_IMAGES or not _is_image_file(child):
                    skipped.append(f"{child} (not an image file)")
                else:
                    found.append((child, False))
    cases: list[Case] = []
    used: set[str] = set()
    for path, is_dicom in found:
        base = _case_id(path)
        case_id, n = base, 2
        while case_id in used:  # same file name in two folders: keep both
            case_id, n = f"{base}_{n}", n + 1
        used.add(case_id)
        cases.append(Case(case_id, path, is_dicom))
    return cases, skipped


def analyze_case(case: Case, predictor, version: str, out_dir: Path, dicom_seg: bool = True) -> dict[str, Any]:
    """Run one case end to end and write its outputs; returns the report dict (also saved as report.json)."""
    from ..io import read_image, write_mask
    from ..io.dicom_warnings import recorded
    from ..measure.analysis import analyze
    from ..measure.dicom_seg import write_dicom_seg
    from ..measure.report import write_report

    start = time.perf_counter()
    image = read_image(case.path)
    analysis = analyze(image, predictor)
    result = analysis.result
    mask = analysis.mask()
    case_dir = out_dir / case.case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    if mask is not None:
        outputs["mask"] = str(write_mask(mask, image, case_dir / "mask.nii.gz"))
        if not image.is_hu and image.is_2d:
            outputs["mask_png"] = str(write_mask(mask, image, case_dir / "mask.png"))
    report: dict[str, Any] = {
        "case": case.case_id,
        "input": str(case.path),
        "format": image.meta.get("format"),
        "shape_zyx": list(image.shape),
        "spacing_zyx_mm": list(image.spacing) if image.spacing is not None else None,
        "is_hu": image.is_hu,
        **result,
        "outputs": outputs,
    }
    png, pdf = write_report(analysis, case_dir / "report", version, title=f"covid-mtl report: {case.case_id}")
    outputs.update(report_png=str(png), report_pdf=str(pdf))
    if dicom_seg and image.meta.get("format") == "dicom" and mask is not None:
        try:
            with recorded():  # the reader already reported pydicom's per-file warnings once, in "warnings"
                outputs["dicom_seg"] = str(write_dicom_seg(mask, image, case_dir / "seg.dcm", model_version=version))
        except CovidMTLError as exc:  # the SEG is an extra; its absence must not lose the rest of the case
            report["dicom_seg_error"] = str(exc)
    report["seconds"] = round(time.perf_counter() - start, 3)
    (case_dir / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
    outputs["report_json"] = str(case_dir / "report.json")
    return report


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def summary_row(case: Case, report: dict[str, Any] | None, error: str | None, seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {k: "" for k in SUMMARY_COLUMNS}
    row.update(case=case.case_id, input=str(case.path), seconds=f"{seconds:.2f}")
    if report is None:
        row.update(status="error", error=error or "unknown error")
        return row
    probs = report.get("probabilities") or {}
    measures = report.get("quantification") or {}
    row.update(
        status="ok",
        label=report.get("label") or "",
        statement=report.get("statement") or "",
        **{f"p_{k}": f"{float(v):.4f}" for k, v in probs.items() if f"p_{k}" in row},
        lung_mask="ok" if measures.get("lung_mask", {}).get("available") else f"skipped: {measures.get('lung_mask', {}).get('reason')}",
        warnings=";".join(str(w.get("name")) for w in report.get("warnings") or []),
        outputs=";".join(sorted(report.get("outputs", {}))),
        error=report.get("dicom_seg_error", ""),
    )
    for key in ("lesion_ml", "lung_ml", "percent_involved", "zone_severity_score", "lesion_outside_lung_ml"):
        value = measures.get(key)
        row[key] = "" if value is None else value
    return row


def write_summary(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..nets.packaged import packaged_model_path
    from ..predict.predictor import Predictor
    from ..measure.summary import model_version

    checkpoint = args.checkpoint or packaged_model_path()
    if checkpoint is None:
        raise CovidMTLError("no --checkpoint given and this install has no packaged model")
    if not Path(checkpoint).is_file():
        raise CovidMTLError(f"{checkpoint}: checkpoint not found")
    cases, skipped = find_cases(args.inputs)
    for note in skipped:
        print(f"covid-mtl analyze: skipped {note}", file=sys.stderr)
    if not cases:
        raise CovidMTLError(f"no cases found in {', '.join(args.inputs)}")
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device)
    version = model_version(predictor)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    for case in tqdm(cases, desc="analyze", unit="case", disable=args.no_progress):
        start = time.perf_counter()
        report, error = None, None
        try:
            report = analyze_case(case, predictor, version, out_dir, dicom_seg=not args.no_dicom_seg)
        except CovidMTLError as exc:
            error = str(exc)
        except Exception as exc:  # one broken case must not stop a batch; the traceback goes to stderr
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        if error is not None:
            failed += 1
            tqdm.write(f"covid-mtl analyze: {case.case_id}: error: {error}", file=sys.stderr)
        rows.append(summary_row(case, report, error, time.perf_counter() - start))
    summary = write_summary(rows, out_dir / "summary.csv")
    print(f"{len(cases) - failed}/{len(cases)} cases analysed; summary: {summary}")
    return 1 if failed else 0
