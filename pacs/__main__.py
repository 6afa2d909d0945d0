"""``python -m pacs`` (``make pacs``): a loopback Orthanc PACS loaded with the sample DICOM series and, when
present, the full-chest scans; runs until Ctrl-C."""
from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from pacs.orthanc import dicom_files, monailabel_env, running

ROOT = Path(__file__).resolve().parents[1]
SERIES = [ROOT / "sample_data" / "dicom", ROOT.parent / "shared" / "data" / "real_ct" / "full_chest"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="make pacs", description=__doc__)
    parser.add_argument("--port", type=int, default=8042)
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "pacs", help="storage, credentials and log")
    parser.add_argument("series", nargs="*", type=Path, help="DICOM folders to load (default: the sample series "
                        "and ../shared/data/real_ct/full_chest when present)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # stop Orthanc with us
    with running(args.data, args.port) as orthanc:
        for folder in args.series or [f for f in SERIES if f.is_dir()]:
            files = dicom_files(folder)
            print(f"covid-mtl PACS: loading {folder} ({len(files)} files) ...", flush=True)
            stored = orthanc.upload(files)
            print(f"covid-mtl PACS: {stored} of {len(files)} files stored (the rest are not DICOM)", flush=True)
        env = monailabel_env(orthanc, args.data)
        series = orthanc.get("/series").json()
        print(f"\ncovid-mtl PACS: Orthanc on {orthanc.url} (loopback only), {len(series)} series, storage in "
              f"{args.data}\n  DICOMweb: {orthanc.dicomweb}\n  user {orthanc.auth[0]}, password in "
              f"{args.data / 'credentials.json'}\n  serve it: make serve STUDIES={orthanc.dicomweb}  (reads {env})\n"
              f"  Ctrl-C stops the PACS; its storage stays.", flush=True)
        try:
            while orthanc.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
