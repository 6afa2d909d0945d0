"""The short texts a viewer shows of a stored result before anyone opens it: series descriptions and the segment
label of the AI's SEG and SR.

OHIF shows no report text for a volumetric SR, so these are where a radiologist reads the call and the key measures
in OHIF: the study browser lists each series by its description, and the segmentation panel names the loaded SEG by
its series description (full text under its info icon) and the segment by its label. DICOM limits both (LO) to 64
characters; every text here fits. A number that a measure check put in doubt is followed by "check report", as the
report marks it with ``<!``.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..nets.decision import NAMES
from .checks import doubting
from .dicom_seg import SEGMENT_LABEL

MAX_LO = 64


def _fit(text: str) -> str:
    return text if len(text) <= MAX_LO else text[:MAX_LO - 3] + "..."


def call_title(result: Mapping[str, Any]) -> str:
    """``COVID-19, P 0.42 (cut-off 0.37)``: the call and P(COVID-19), as the model was trained to say it."""
    called = NAMES.get(str(result.get("label")), str(result.get("label") or "no call"))
    p = (result.get("probabilities") or {}).get("covid")
    threshold = (result.get("decision") or {}).get("threshold")
    if p is None:
        return called
    cut = f" (cut-off {threshold:.2f})" if threshold is not None else ""
    return f"{called}, P {p:.2f}{cut}"


def seg_series_description(result: Mapping[str, Any]) -> str:
    return _fit(f"covid-mtl AI: {call_title(result)}")


def sr_series_description(result: Mapping[str, Any]) -> str:
    return _fit(f"covid-mtl report: {call_title(result)}")


def segment_label(result: Mapping[str, Any]) -> str:
    """``COVID-19 lesion 37.3 mL, 2.1 % of lungs``; ``- check report`` where a check doubts either number."""
    q = result.get("quantification") or {}
    parts = []
    if q.get("lesion_ml") is not None:
        parts.append(f"{q['lesion_ml']:.1f} mL")
    if q.get("percent_involved") is not None:
        parts.append(f"{q['percent_involved']:.1f} % of lungs")
    if not parts:
        return SEGMENT_LABEL
    doubted = doubting(q.get("warnings"), "lesion_ml") + doubting(q.get("warnings"), "percent_involved")
    doubt = " - check report" if doubted else ""
    return _fit(f"{SEGMENT_LABEL} {', '.join(parts)}{doubt}")
