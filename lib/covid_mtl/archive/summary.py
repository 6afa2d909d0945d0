"""``summary.csv``: one row per case, the same whichever way the cases were run."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from .cases import Case

SUMMARY_COLUMNS = (
    "case", "input", "status", "label", "statement", "p_covid", "p_normal", "p_other", "lesion_ml", "lung_ml",
    "percent_involved", "zone_severity_score", "lesion_outside_lung_ml", "lung_mask", "warnings", "outputs", "seconds",
    "error",
)


def summary_row(case: Case, report: dict[str, Any] | None, error: str | None, seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {k: "" for k in SUMMARY_COLUMNS}
    row.update(case=case.case_id, input=str(case.path), seconds=f"{seconds:.2f}")
    if report is None:
        row.update(status="error", error=error or "unknown error")
        return row
    probs = report.get("probabilities") or {}
    measures = report.get("quantification") or {}
    lung = measures.get("lung_mask", {})
    row.update(
        status="ok",
        label=report.get("label") or "",
        statement=report.get("statement") or "",
        **{f"p_{k}": f"{float(v):.4f}" for k, v in probs.items() if f"p_{k}" in row},
        lung_mask="ok" if lung.get("available") else f"skipped: {lung.get('reason')}",
        warnings=";".join(str(w.get("name")) for w in report.get("warnings") or []),
        outputs=";".join(sorted(report.get("outputs", {}))),
        error=report.get("dicom_seg_error", ""),
    )
    for key in ("lesion_ml", "lung_ml", "percent_involved", "zone_severity_score", "lesion_outside_lung_ml"):
        value = measures.get(key)
        row[key] = "" if value is None else value
    return row


def write_summary(rows: list[dict[str, Any]], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(path), buffer.getvalue().encode())
    return Path(path)
