"""Loading a case into the logic's scene: an image of the server's datastore, or a local NIfTI file / DICOM folder.

The server side goes through the logic itself (``CovidMTLLogic.load_server_image``, what Next case uses too); local
files go through trame-slicer's volume reader, which also assembles DICOM series (Slicer's archetype reader alone
would not).
"""
from __future__ import annotations

from pathlib import Path

from CovidMTLLib.client import CovidMTLLogicError
from CovidMTLLib.logic import CovidMTLLogic

# 2D pictures (the sample PNG slices) are not CT volumes: Slicer loads them as colour images, which the logic
# rightly refuses, so the case list leaves them out.
NOT_CT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def datastore_images(logic: CovidMTLLogic) -> list[dict]:
    """[{id, labelled, title}] of the server's datastore, CT volumes only, sorted by id; ``title`` names a PACS
    series by its patient and description too."""
    what = "datastore listing"
    listing = logic.client.json(logic.client.request("GET", "/datastore/", what, params={"output": "all"}), what)
    cases = []
    for image_id, entry in sorted((listing.get("objects") or {}).items()):
        ext = str(((entry.get("image") or {}).get("ext")) or "").lower()
        if ext.endswith(NOT_CT_SUFFIXES):
            continue
        info = (entry.get("image") or {}).get("info") or {}
        # a PACS series id is a bare UID: the patient and the series description say which scan it is
        described = " · ".join(str(info[k]) for k in ("PatientID", "SeriesDescription") if info.get(k))
        cases.append({"id": image_id, "labelled": "final" in (entry.get("labels") or {}),
                      "title": f"{described} · {image_id}" if described else image_id})
    return cases


def load_local(io_manager, path: str):
    """A NIfTI/NRRD file or a DICOM folder on the machine running the web app (the first series of a folder)."""
    source = Path(path.strip()).expanduser()
    if not source.exists():
        raise CovidMTLLogicError(f"No such file or folder on the web app's machine: {source}")
    files = sorted(str(p) for p in source.rglob("*") if p.is_file()) if source.is_dir() else [str(source)]
    if not files:
        raise CovidMTLLogicError(f"The folder {source} holds no files")
    nodes = [node for node in io_manager.load_volumes(files) if node is not None]
    if not nodes:
        raise CovidMTLLogicError(f"Slicer found no readable volume in {source}")
    return nodes[0]
