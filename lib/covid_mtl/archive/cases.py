"""Which cases the inputs of ``covid-mtl analyze`` hold: image files, DICOM series folders, folders of cases."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NOT_IMAGES = {".txt", ".md", ".csv", ".json", ".py", ".pdf", ".html", ".log", ".yaml", ".yml", ".xml", ".zip"}


@dataclass(frozen=True)
class Case:
    case_id: str
    path: Path
    is_dicom_folder: bool = False


def _is_dicom_file(path: Path) -> bool:
    from ..io.dicom import is_dicom_file

    return path.suffix.lower() == ".dcm" or is_dicom_file(path)


def _holds_dicom(folder: Path) -> bool:
    return any(p.is_file() and _is_dicom_file(p) for p in folder.iterdir())


def _is_image_file(path: Path) -> bool:
    from ..io import SUPPORTED_SUFFIXES, image_suffix

    return image_suffix(path) in SUPPORTED_SUFFIXES or _is_dicom_file(path)


def case_id(path: Path) -> str:
    """A file-name-safe id: the file name without its image suffix (the reader's suffixes: io owns them)."""
    from ..io import SUPPORTED_SUFFIXES, image_suffix

    name, suffix = path.name, image_suffix(path)
    if suffix in SUPPORTED_SUFFIXES:
        name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "case"


def find_cases(inputs: list[str]) -> tuple[list[Case], list[str]]:
    """Expand INPUT arguments into cases; returns (cases, skipped file notes). Missing inputs become cases
    too, so they fail visibly in summary.csv rather than vanish. Ids are unique and stable for the same inputs,
    so a rerun finds the outputs of the cases already done."""
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
        base = case_id(path)
        unique, n = base, 2
        while unique in used:  # same file name in two folders: keep both
            unique, n = f"{base}_{n}", n + 1
        used.add(unique)
        cases.append(Case(unique, path, is_dicom))
    return cases, skipped
