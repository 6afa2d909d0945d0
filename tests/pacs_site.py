"""A real Orthanc PACS on a free loopback port (``pacs.orthanc``, the same launcher as ``make pacs``) loaded with the
sample CT series and a non-CT copy of it, and a real covid-mtl MONAI Label server serving it over DICOMweb.

Skips, saying why, where Orthanc and its DICOMweb plugin are not installed (``make test`` installs them).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pydicom
import pytest
from pydicom.uid import generate_uid

from pacs.orthanc import Orthanc, dicom_files, orthanc_binary, running
from tests.server import ROOT, Server, free_port, quiet_env, running_server

SAMPLE_SERIES = ROOT / "sample_data" / "dicom" / "covid_dicom_001"


def require_orthanc() -> None:
    if orthanc_binary() is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (make test installs the Debian packages "
                    "orthanc and orthanc-dicomweb)")


def as_other_modality(source: Path, dest: Path, modality: str = "MR") -> str:
    """A copy of the series in ``source`` as another modality (new UIDs); its SeriesInstanceUID."""
    dest.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for n, path in enumerate(dicom_files(source)):
        ds = pydicom.dcmread(path)
        ds.Modality = modality
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(dest / f"{n:03d}.dcm")
    return series


@dataclass
class PacsSite:
    orthanc: Orthanc
    server: Optional[Server]
    ct_series: str
    other_series: str
    cache: Path

    def segs(self) -> list[dict]:
        """The SEG series Orthanc holds, with their instances (Orthanc's REST API, not DICOMweb)."""
        series = self.orthanc.get("/series", params={"expand": ""}).json()
        return [s for s in series if s["MainDicomTags"].get("Modality") == "SEG"]

    def seg_instances(self) -> list[str]:
        return sorted(i for s in self.segs() for i in s["Instances"])

    def seg_file(self, orthanc_instance_id: str):
        import io

        return pydicom.dcmread(io.BytesIO(self.orthanc.get(f"/instances/{orthanc_instance_id}/file").content))


def server_env(work: Path, user: str, password: str, cache: Path) -> dict:
    return quiet_env(work, MONAI_LABEL_DICOMWEB_USERNAME=user, MONAI_LABEL_DICOMWEB_PASSWORD=password,
                     MONAI_LABEL_DATASTORE_CACHE_PATH=str(cache))


@contextlib.contextmanager
def pacs_site(work: Path, serve: bool = True) -> Iterator[PacsSite]:
    """Orthanc (sample CT series + an MR copy) and, with ``serve``, a MONAI Label server on its DICOMweb root."""
    require_orthanc()
    other = work / "mr_series"
    other_series = as_other_modality(SAMPLE_SERIES, other)
    ct_series = str(pydicom.dcmread(dicom_files(SAMPLE_SERIES)[0], stop_before_pixels=True).SeriesInstanceUID)
    with running(work / "orthanc", free_port()) as orthanc:
        assert orthanc.upload(dicom_files(SAMPLE_SERIES) + dicom_files(other)) == 2 * len(dicom_files(SAMPLE_SERIES))
        cache = work / "cache"
        if not serve:
            yield PacsSite(orthanc, None, ct_series, other_series, cache)
            return
        env = server_env(work, *orthanc.auth, cache)
        with running_server(orthanc.dicomweb, work, conf={"preload": "true"}, env=env) as server:
            yield PacsSite(orthanc, server, ct_series, other_series, cache)
