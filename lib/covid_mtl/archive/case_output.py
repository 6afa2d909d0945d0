"""One case analysed into its own folder, complete or not at all.

Everything is written into a staging folder under ``OUT/.partial/`` and renamed to ``OUT/<case>/`` only after
``report.json``, the last file, is written. So ``OUT/<case>/report.json`` exists exactly when the case is done: a
rerun skips it, and a process killed half-way leaves only a staging folder, which the next run removes.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import CovidMTLError
from .cases import Case

PARTIAL = ".partial"
REPORT = "report.json"


def completed_report(out_dir: Path, case: Case) -> dict[str, Any] | None:
    """The report of ``case`` when an earlier run finished it (same input), else None."""
    path = Path(out_dir) / case.case_id / REPORT
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if report.get("input") == str(case.path) else None


def clear_partials(out_dir: Path) -> int:
    """Remove the staging folders of cases a killed run left half-written; returns how many there were."""
    partial = Path(out_dir) / PARTIAL
    count = len(list(partial.iterdir())) if partial.is_dir() else 0
    shutil.rmtree(partial, ignore_errors=True)
    return count


def analyze_case(case: Case, predictor, version: str, out_dir: Path, dicom_seg: bool = True) -> dict[str, Any]:
    """Run one case end to end, write its outputs to ``out_dir/<case>``; returns the report (also report.json)."""
    out_dir = Path(out_dir)
    (out_dir / PARTIAL).mkdir(parents=True, exist_ok=True)
    # the process id in the name says which worker was writing a case a killed run left behind
    staging = Path(tempfile.mkdtemp(prefix=f"{case.case_id}.{os.getpid()}.", dir=out_dir / PARTIAL))
    try:
        report = _write_case(case, predictor, version, staging, out_dir / case.case_id, dicom_seg)
        _publish(staging, out_dir / case.case_id)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_case(case: Case, predictor, version: str, staging: Path, final: Path, dicom_seg: bool) -> dict[str, Any]:
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
    outputs: dict[str, str] = {}
    if mask is not None:
        write_mask(mask, image, staging / "mask.nii.gz")
        outputs["mask"] = str(final / "mask.nii.gz")
        if not image.is_hu and image.is_2d:
            write_mask(mask, image, staging / "mask.png")
            outputs["mask_png"] = str(final / "mask.png")
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
    png, pdf = write_report(analysis, staging / "report", version, title=f"covid-mtl report: {case.case_id}")
    outputs.update(report_png=str(final / Path(png).name), report_pdf=str(final / Path(pdf).name))
    if dicom_seg and image.meta.get("format") == "dicom" and mask is not None:
        try:
            with recorded():  # the reader already reported pydicom's per-file warnings once, in "warnings"
                write_dicom_seg(mask, image, staging / "seg.dcm", model_version=version)
            outputs["dicom_seg"] = str(final / "seg.dcm")
        except CovidMTLError as exc:  # the SEG is an extra; its absence must not lose the rest of the case
            report["dicom_seg_error"] = str(exc)
    report["seconds"] = round(time.perf_counter() - start, 3)
    outputs["report_json"] = str(final / REPORT)
    (staging / REPORT).write_text(json.dumps(report, indent=2, default=_json_default))  # last: marks completion
    return report


def _publish(staging: Path, final: Path) -> None:
    """``staging`` becomes ``final`` in one rename; an older folder of the case (incomplete, or from other input)
    is removed first."""
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
