"""pydicom's per-file warnings (e.g. UUID strings in UI elements) gathered into one named warning per series.

A real series with non-conformant UIDs made pydicom print one warning per file during ``analyze`` (hundreds
of console lines per series). The reader records them instead and the case reports each kind once, in its
``warnings`` (``Image.meta["warnings"]``), with how many files it concerned.
"""
from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

_UID = re.compile(r"Invalid value for VR UI")


@contextmanager
def recorded() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning raised inside (none reaches the console); yields the list being filled.

    ``warnings.catch_warnings`` swaps a process-wide filter: two threads reading at once may see each other's
    warnings in their list, which only moves a console line into a report.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def summarize(caught: list[warnings.WarningMessage], n_files: int) -> list[dict[str, Any]]:
    """One named warning per kind: ``dicom_nonconformant_uid`` for invalid UI values, ``dicom_reader`` for the
    rest (grouped by message text up to its first quote, so per-file values do not split a kind)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for w in caught:
        text = str(w.message).strip()
        if _UID.search(text):
            key = ("dicom_nonconformant_uid", "")
        else:
            key = ("dicom_reader", text.split("'")[0][:120])
        groups.setdefault(key, []).append(text)
    out = []
    for (name, head), texts in groups.items():
        if name == "dicom_nonconformant_uid":
            example = re.search(r"'([^']*)'", texts[0])
            message = (f"{len(texts)} non-conformant UID values (DICOM UI elements) in this series of {n_files} "
                       f"files, e.g. {example.group(1) if example else texts[0]!r}; read anyway (pydicom)")
        else:
            message = f"pydicom warned {len(texts)} times reading this series of {n_files} files: {texts[0][:300]}"
        out.append({"name": name, "message": message, "value": len(texts), "limit": None, "affects": []})
    return out
