"""The measures of one analysis as a DICOM SR measurement report (TID 1500, highdicom), referencing the CT series
and the SEG of its lesion mask.

One volumetric measurement group for the segment "COVID-19 lesion" of the SEG, with:
- lesion volume, lung volume and percent of the lungs involved, for both lungs and for each lung (finding site
  right / left lung);
- the zone severity score (6 zones, adapted from Pan et al. 2020);
- P(COVID-19) and the cut-off it was compared with;
- the call, as a qualitative evaluation (COVID-19, or the class called), which with P(COVID-19) and its cut-off
  is the class statement.
Standard codes where they exist (SNOMED CT, DICOM, UCUM); the rest use this project's private scheme ``99COVIDMTL``.
Viewers: Slicer reads it with the QuantitativeReporting extension. OHIF 3 (MONAI Label's) lists it with the study but
reads only planar measurements from an SR: opening this one fails in OHIF's SR loader (a TypeError in its console),
so the call and key measures are also in the series descriptions and the segment label
(``covid_mtl.measure.dicom_titles``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import CovidMTLError
from ..image import Image
from .dicom_seg import ALGORITHM_NAME, MANUFACTURER, _package_version, _source_datasets

SCHEME = "99COVIDMTL"
DEFAULT_SERIES_NUMBER = 9402


def _code(value: str, meaning: str, scheme: str = SCHEME):
    import highdicom as hd

    return hd.sr.CodedConcept(value, scheme, meaning)


def _measurement(name, value: float, unit: tuple[str, str], site=None):
    import highdicom as hd

    return hd.sr.Measurement(name=name, value=float(value), unit=hd.sr.CodedConcept(unit[0], "UCUM", unit[1]),
                             finding_sites=[hd.sr.FindingSite(site)] if site is not None else None)


def write_dicom_sr(result: Mapping[str, Any], source: Image, seg, out_path: str | os.PathLike,
                   model_version: str = "unknown", series_number: int = DEFAULT_SERIES_NUMBER,
                   series_description: str = "COVID-19 analysis (covid-mtl)") -> Path:
    """Write the measurement report of ``result`` (an analysis result: ``quantification``, ``statement``,
    ``label``, ``probabilities``, ``decision``) for ``source`` (read from DICOM) and ``seg`` (its SEG dataset)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    out = Path(out_path)
    datasets = _source_datasets(source)
    q = result.get("quantification") or {}
    if not q:
        raise CovidMTLError(f"{source.source}: no measures to report")
    volume, ml, percent = codes.SCT.Volume, ("ml", "milliliter"), ("%", "percent")
    lung = _code("39607008", "Lung", "SCT")
    sides = {"right": _code("3341006", "Right lung", "SCT"), "left": _code("44029006", "Left lung", "SCT")}
    lung_volume = _code("LUNGVOL", "Lung volume")
    involved = _code("INVOLVED", "Percent of lung volume with lesion")
    measurements = []
    if q.get("lesion_ml") is not None:
        measurements.append(_measurement(volume, q["lesion_ml"], ml, lung))
    if q.get("lung_ml") is not None:
        measurements.append(_measurement(lung_volume, q["lung_ml"], ml, lung))
    if q.get("percent_involved") is not None:
        measurements.append(_measurement(involved, q["percent_involved"], percent, lung))
    for side, site in sides.items():
        one = (q.get("lungs") or {}).get(side) or {}
        for key, name, unit in (("lesion_ml", volume, ml), ("lung_ml", lung_volume, ml),
                                ("percent_involved", involved, percent)):
            if one.get(key) is not None:
                measurements.append(_measurement(name, one[key], unit, site))
    if q.get("zone_severity_score") is not None:
        measurements.append(_measurement(_code("ZONESCORE", "Zone severity score (of 30)"), q["zone_severity_score"],
                                         ("{score}", "score")))
    p_covid = (result.get("probabilities") or {}).get("covid")
    if p_covid is not None:
        measurements.append(_measurement(_code("PCOVID", "Probability of COVID-19"), p_covid, ("1", "no units")))
    threshold = (result.get("decision") or {}).get("threshold")
    if threshold is not None:
        measurements.append(_measurement(_code("PCOVIDCUT", "Cut-off for probability of COVID-19"), threshold,
                                         ("1", "no units")))
    called = result.get("label")
    evaluations = []
    if called:
        value = _code("840539006", "COVID-19", "SCT") if called == "covid" else _code(f"NOT{called.upper()}",
                                                                                        str(called))
        evaluations.append(hd.sr.QualitativeEvaluation(_code("CLASS", "covid-mtl classification"), value))
    segment = hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                      segment_number=1, source_series=hd.sr.SourceSeriesForSegmentation(
                                          str(datasets[0].SeriesInstanceUID)))
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="COVID-19 lesion"),
        referenced_segment=segment,
        finding_type=_code("52988006", "Lesion", "SCT"),
        algorithm_id=hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=str(model_version)),
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=_code("241540006", "CT of chest", "SCT"),
        imaging_measurements=[group],
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*datasets, seg],
        content=report,
        series_number=int(series_number),
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=series_description,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SoftwareVersions = [_package_version(), str(model_version)]
    out.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(str(out))
    return out

