"""Archive throughput of ``covid-mtl analyze``: one process vs a local Ray cluster of 1 and 2 workers.

The archive: the sample data (10 cases) plus the real scans in ``../shared/data/real_ct`` when that folder exists
(9 more: three whole-chest LIDC series, the TotalSegmentator example as NIfTI and DICOM, small DICOM series; each
series in a folder of its own, since a folder holding DICOM files is one series). Each
run starts from an empty output folder; the Ray runs include starting the local cluster and loading the model in
each worker, as an admin's run does. Prints cases per minute, the speed-up over one process and the scaling per
worker (speed-up / workers), and checks every run wrote the same summary.
Run: ``.venv/bin/python -m bench.archive``.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REAL_CT, ROOT, save, table

REAL = ("full_chest/lidc0001", "full_chest/lidc0002", "full_chest/lidc0003", "lungmask_testdata",
        "pydicom_ct_small", "totalsegmentator_example/example_ct.nii.gz",
        "totalsegmentator_example/example_ct_sm.nii.gz", "totalsegmentator_example/pulmonary_report_ct_cropped.nii.gz",
        "totalsegmentator_example/example_ct_dicom")


def build_archive(folder: Path) -> int:
    """Links to the cases in ``folder``; returns how many."""
    folder.mkdir(parents=True)
    sample = ROOT / "sample_data"
    for path in sorted(sample.glob("*.nii.gz")) + sorted(sample.glob("*.png")) + [sample / "dicom" / "covid_dicom_001"]:
        (folder / path.name).symlink_to(path)
    for rel in REAL:
        if (REAL_CT / rel).exists():
            (folder / Path(rel).name).symlink_to(REAL_CT / rel)
    return len(list(folder.iterdir()))


def run(archive: Path, out: Path, ray_workers: int | None) -> float:
    args = [sys.executable, "-m", "covid_mtl.cli", "analyze", str(archive), "--out", str(out), "--no-progress"]
    if ray_workers:
        args += ["--ray", "--workers", str(ray_workers)]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"analyze failed:\n{done.stderr[-3000:]}")
    return seconds


def summary(out: Path) -> list[dict]:
    with open(out / "summary.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("bench.archive: Ray is not installed (pip install -e '.[ray]'); skipped")
        return 0
    work = Path(tempfile.mkdtemp(prefix="covid_mtl_archive_"))
    try:
        n = build_archive(work / "cases")
        rows, results = [], {}
        for label, workers in (("one process", None), ("Ray, 1 worker", 1), ("Ray, 2 workers", 2)):
            out = work / f"out_{workers or 0}"
            seconds = run(work / "cases", out, workers)
            results[label] = summary(out)
            ok = sum(r["status"] == "ok" for r in results[label])
            rows.append({"run": label, "cases": len(results[label]), "ok": ok, "seconds": round(seconds, 1),
                         "cases_per_min": round(60 * n / seconds, 2)})
        base = rows[1]["cases_per_min"]  # scaling is measured against Ray with one worker
        for row, workers in zip(rows, (None, 1, 2)):
            row["speed_up_vs_1_worker"] = round(row["cases_per_min"] / base, 2) if workers else ""
            row["scaling_per_worker"] = round(row["cases_per_min"] / base / workers, 2) if workers else ""
        same = all(r == results["one process"] for r in results.values())
        print(table(f"Archive analysis, {n} cases (sample data + real CT), 2 CPU cores", rows))
        print(f"same summary.csv in every run (seconds aside): {same}")
        save("archive", {"cases": n, "rows": rows, "same_summary": same})
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
