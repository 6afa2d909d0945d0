"""The manifest every command reads: a CSV with ``image``, ``mask``, ``label``, ``split`` columns, and optionally
``source`` (which collection an image comes from: validation keeps some of each) and ``group`` (which patient or
scan it belongs to: a group never straddles the training/validation split).

Paths are relative to the CSV's folder or absolute; empty cells mean unknown. Any non-zero mask voxel is
lesion (the three MedSeg lesion labels merge into one).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CovidMTLError
from ..image import LABELS

SPLITS = ("train", "val", "test")
COLUMNS = ("image", "mask", "label", "split", "source", "group")


@dataclass(frozen=True)
class ManifestRow:
    image: str
    mask: str | None
    label: str | None
    split: str | None
    row: int  # line number in the CSV (header is line 1), for messages
    source: str | None = None
    group: str | None = None


def _resolve(value: str, base: Path, what: str, where: str) -> str:
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise CovidMTLError(f"{where}: {what} {value!r} not found ({path})")
    return str(path)


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Rows of a manifest with absolute, existing paths; raises naming the row for anything wrong."""
    csv_path = Path(path)
    if not csv_path.is_file():
        raise CovidMTLError(f"{csv_path}: manifest not found")
    base = csv_path.resolve().parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "image" not in header:
            raise CovidMTLError(f"{csv_path}: manifest needs an 'image' column; header is {header}")
        unknown = set(header) - set(COLUMNS)
        if unknown:
            raise CovidMTLError(f"{csv_path}: unknown manifest columns {sorted(unknown)}; allowed {list(COLUMNS)}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            cells = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            where = f"{csv_path} row {line}"
            if not cells.get("image"):
                raise CovidMTLError(f"{where}: empty image path")
            label = cells.get("label", "").lower() or None
            if label is not None and label not in LABELS:
                raise CovidMTLError(f"{where}: unknown label {label!r}; expected one of {list(LABELS)} or empty")
            split = cells.get("split", "").lower() or None
            if split is not None and split not in SPLITS:
                raise CovidMTLError(f"{where}: unknown split {split!r}; expected one of {list(SPLITS)} or empty")
            mask = _resolve(cells["mask"], base, "mask", where) if cells.get("mask") else None
            rows.append(ManifestRow(_resolve(cells["image"], base, "image", where), mask, label, split, line,
                                    cells.get("source") or None, cells.get("group") or None))
    if not rows:
        raise CovidMTLError(f"{csv_path}: manifest has no rows")
    return rows
