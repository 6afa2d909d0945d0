"""``covid-mtl analyze``: per case a lesion mask, JSON report, PNG/PDF report (and DICOM SEG), plus summary.csv.

INPUT may be image files (NIfTI, NRRD, DICOM, PNG/JPG/TIFF), DICOM series folders, or folders of cases (their
image files and DICOM sub-folders). A case that fails is reported in summary.csv and on stderr; the others
still run, and the exit code is 1 when any case failed. Each case's folder appears complete or not at all, so a
rerun into the same --out skips the cases already done. ``--ray`` spreads the cases over a Ray cluster.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..archive.cases import find_cases
from ..errors import CovidMTLError

__all__ = ["register", "run", "find_cases"]


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
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="spread the cases over a Ray cluster: an existing one at ADDRESS (HOST:PORT, ray://HOST:PORT "
                   "or auto), or without ADDRESS a local one started for this run; needs pip install "
                   "'covid-mtl[ray]'")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers, each holding the model once (default: the cluster's CPUs; locally: all cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..archive.case_output import clear_partials, completed_report
    from ..archive.summary import summary_row, write_summary
    from ..nets.packaged import packaged_model_path

    checkpoint = args.checkpoint or packaged_model_path()
    if checkpoint is None:
        raise CovidMTLError("no --checkpoint given and this install has no packaged model")
    if not Path(checkpoint).is_file():
        raise CovidMTLError(f"{checkpoint}: checkpoint not found")
    if args.workers is not None and args.workers < 1:
        raise CovidMTLError(f"--workers {args.workers}: need at least 1")
    cases, skipped = find_cases(args.inputs)
    for note in skipped:
        print(f"covid-mtl analyze: skipped {note}", file=sys.stderr)
    if not cases:
        raise CovidMTLError(f"no cases found in {', '.join(args.inputs)}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if clear_partials(out_dir):
        print("covid-mtl analyze: removed the half-written cases of an interrupted run", file=sys.stderr)
    rows: dict[str, dict[str, Any]] = {}
    for case in cases:
        report = completed_report(out_dir, case)
        if report is not None:
            rows[case.case_id] = summary_row(case, report, None, float(report.get("seconds") or 0.0))
    todo = [c for c in cases if c.case_id not in rows]
    if rows:
        print(f"covid-mtl analyze: {len(rows)} of {len(cases)} cases already complete in {out_dir}: skipped",
              file=sys.stderr)
    bar = tqdm(total=len(cases), initial=len(rows), desc="analyze", unit="case", disable=args.no_progress)

    def on_row(row: dict[str, Any]) -> None:
        bar.update(1)
        if row["status"] == "error":
            tqdm.write(f"covid-mtl analyze: {row['case']}: error: {row['error']}", file=sys.stderr)

    try:
        if todo and args.ray is not None:
            from ..archive.on_ray import run_on_ray

            done = run_on_ray(todo, str(checkpoint), args.device, str(out_dir), not args.no_dicom_seg,
                              args.ray or None, args.workers, on_row)
        elif todo:
            from ..archive.local import run_local

            done = run_local(todo, str(checkpoint), args.device, str(out_dir), not args.no_dicom_seg, on_row)
        else:
            done = []
    finally:
        bar.close()
    rows.update({row["case"]: row for row in done})
    clear_partials(out_dir)
    ordered = [rows[c.case_id] for c in cases]
    summary = write_summary(ordered, out_dir / "summary.csv")
    failed = sum(row["status"] == "error" for row in ordered)
    print(f"{len(cases) - failed}/{len(cases)} cases analysed ({len(cases) - len(todo)} already complete); "
          f"summary: {summary}")
    return 1 if failed else 0
