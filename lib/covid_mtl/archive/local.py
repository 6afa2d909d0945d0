"""Cases one after another in this process (the default of ``covid-mtl analyze``)."""
from __future__ import annotations

from typing import Any, Callable

from .cases import Case
from .worker import CaseWorker


def run_local(cases: list[Case], checkpoint: str, device: str, out_dir: str, dicom_seg: bool,
              on_row: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    worker = CaseWorker(checkpoint, device, out_dir, dicom_seg)
    rows = []
    for case in cases:
        rows.append(worker.analyze(case))
        on_row(rows[-1])
    return rows
