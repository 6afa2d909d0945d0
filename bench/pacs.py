"""Infer on a series served from a PACS (Orthanc over DICOMweb) against the same series as a local file.

For each series: a real Orthanc on loopback holds it; a covid-mtl server serving the PACS infers it by id twice the
first time (empty cache: QIDO, WADO-RS retrieval, decode, NIfTI cache) and then cached; a covid-mtl server on a local
studies folder infers the same series stored as ``.nii.gz`` (what a user keeps on disk). Where the PACS time goes is
measured in-process with the same code the server runs (retrieval, DICOM decode, NIfTI write, NIfTI read).

Series: a 300 x 512 x 512 HU phantom written as an uncompressed DICOM series, and lidc0002 (261 real slices, JPEG
2000) from ``../shared/data/real_ct/full_chest`` when present.
Run: ``.venv/bin/python -m bench.pacs [--repeats N]``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import OUT, REAL_CT, save, table, timed

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (300, 512, 512)
SPACING = (1.0, 0.7, 0.7)
TIMEOUT = 900


def phantom_series() -> Path:
    """The 300-slice phantom as a DICOM series, written once and cached."""
    from covid_mtl.demo.phantom import make_phantom
    from covid_mtl.demo.sample_data import write_ct_series

    folder = OUT / "phantom_300_dicom"
    if not (folder.is_dir() and len(list(folder.iterdir())) == SHAPE[0]):
        shutil.rmtree(folder, ignore_errors=True)
        write_ct_series(folder, make_phantom("covid", seed=7, shape=SHAPE, spacing=SPACING), "bench_pacs")
    return folder


def series_list() -> list[tuple[str, Path]]:
    found = [("phantom 300x512x512 (uncompressed)", phantom_series())]
    lidc = REAL_CT / "full_chest" / "lidc0002"
    if lidc.is_dir():
        found.append(("lidc0002 261 slices (JPEG 2000)", lidc))
    else:
        print(f"bench.pacs: {lidc} absent: the real-CT row is skipped")
    return found


def infer(url: str, image: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    reply = requests.post(f"{url}/infer/covid_mtl", params={"image": image, "output": "json"}, timeout=TIMEOUT)
    reply.raise_for_status()
    return time.perf_counter() - start, reply.json()


def where_pacs_time_goes(orthanc, series_uid: str, study_uid: str, work: Path) -> dict[str, float]:
    """The steps of a first fetch, timed one by one with the server's own code."""
    sys.path.insert(0, str(ROOT / "apps" / "covid_mtl"))
    from lib.pacs_client import PacsClient  # noqa: E402  (the app's import root)

    from covid_mtl.io import read_image, write_volume

    client = PacsClient(orthanc.dicomweb, *orthanc.auth)
    steps: dict[str, float] = {}
    start = time.perf_counter()
    client.search_series({"SeriesInstanceUID": series_uid})
    steps["qido_s"] = time.perf_counter() - start
    start = time.perf_counter()
    client.retrieve_series(study_uid, series_uid, str(work / "fetched"))
    steps["wado_retrieve_s"] = time.perf_counter() - start
    start = time.perf_counter()
    image = read_image(work / "fetched")
    steps["dicom_decode_s"] = time.perf_counter() - start
    start = time.perf_counter()
    write_volume(image, work / "cache.nii")
    steps["nifti_write_s"] = time.perf_counter() - start
    start = time.perf_counter()
    read_image(work / "cache.nii")
    steps["nifti_read_s"] = time.perf_counter() - start
    return {k: round(v, 2) for k, v in steps.items()}


def bench_series(name: str, folder: Path, repeats: int) -> dict[str, Any]:
    import pydicom

    from covid_mtl.io import read_image, write_volume
    from pacs.orthanc import dicom_files, running
    from tests.pacs_site import SAMPLE_SERIES, server_env
    from tests.server import free_port, quiet_env, running_server

    work = Path(tempfile.mkdtemp(prefix="covid_mtl_bench_pacs_"))
    try:
        files = [p for p in dicom_files(folder) if p.suffix.lower() == ".dcm"]
        header = pydicom.dcmread(files[0], stop_before_pixels=True)
        series_uid, study_uid = str(header.SeriesInstanceUID), str(header.StudyInstanceUID)
        warm_uid = str(pydicom.dcmread(dicom_files(SAMPLE_SERIES)[0], stop_before_pixels=True).SeriesInstanceUID)
        row: dict[str, Any] = {"series": name, "slices": len(files)}
        with running(work / "orthanc", free_port()) as orthanc:
            orthanc.upload(files + dicom_files(SAMPLE_SERIES))
            env = server_env(work, *orthanc.auth, work / "cache")
            with running_server(orthanc.dicomweb, work / "pacs_server", conf={"preload": "true"}, env=env) as server:
                infer(server.url, warm_uid)  # one-time costs (model load, first torch call) on another series
                row["pacs_first_s"], first = infer(server.url, series_uid)
                row["pacs_cached_s"], _ = timed(lambda: infer(server.url, series_uid), repeats, warmup=0)
            row["where_pacs_first_s"] = where_pacs_time_goes(orthanc, series_uid, study_uid, work / "steps")
        studies = work / "studies"
        studies.mkdir()
        write_volume(read_image(folder), studies / "local.nii.gz")
        (work / "local_server").mkdir()
        with running_server(studies, work / "local_server", conf={"preload": "true"},
                            env=quiet_env(work / "local_server")) as server:
            _, reply = infer(server.url, "local")  # also the warm-up
            row["local_file_s"], _ = timed(lambda: infer(server.url, "local"), repeats, warmup=0)
        row["first_vs_local"] = row["pacs_first_s"] / row["local_file_s"]
        row["cached_vs_local"] = row["pacs_cached_s"] / row["local_file_s"]
        row["same_statement"] = first["statement"] == reply["statement"]
        row["where_local_s"] = {k: round(float(reply["timings"][k]), 2) for k in ("read_s", "analysis_s", "total_s")
                                if reply["timings"].get(k) is not None}
        row["where_pacs_infer_s"] = {k: round(float(first["timings"][k]), 2) for k in ("read_s", "analysis_s",
                                     "total_s") if first["timings"].get(k) is not None}
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from pacs.orthanc import orthanc_binary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if orthanc_binary() is None:
        print("bench.pacs: Orthanc with its DICOMweb plugin is not installed (make pacs installs it): skipped")
        return {}
    rows = [bench_series(name, folder, args.repeats) for name, folder in series_list()]
    shown = [{k: v for k, v in r.items() if not k.startswith("where")} for r in rows]
    print(table("pacs: infer by id from Orthanc over DICOMweb vs the same series as a local .nii.gz (seconds, "
                "HTTP round trip)", shown))
    for r in rows:
        print(f"  {r['series']}: first PACS infer {r['where_pacs_infer_s']}, its fetch steps "
              f"{r['where_pacs_first_s']}; local {r['where_local_s']}")
    payload = {"rows": rows, "repeats": args.repeats, "time": time.time()}
    print(f"saved {save('pacs', payload)}")
    return payload


if __name__ == "__main__":
    main()
