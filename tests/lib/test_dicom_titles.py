"""The texts OHIF shows of a stored result without opening it (series descriptions, segment label): the call and
the key measures as the model says them, doubts marked, always within DICOM's 64 characters (LO)."""
from __future__ import annotations

from covid_mtl.measure import dicom_titles as titles


def result(label="covid", p=0.42, lesion_ml=37.29, percent=2.13, warnings=()):
    return {"label": label, "probabilities": {"covid": p}, "decision": {"threshold": 0.3653},
            "quantification": {"lesion_ml": lesion_ml, "percent_involved": percent, "warnings": list(warnings)}}


def test_the_call_and_p_covid_are_in_both_series_descriptions():
    assert titles.seg_series_description(result()) == "covid-mtl AI: COVID-19, P 0.42 (cut-off 0.37)"
    assert titles.sr_series_description(result("non-covid", 0.21)) == \
        "covid-mtl report: non-COVID, P 0.21 (cut-off 0.37)"
    # a three-class model's call keeps its own name; P(COVID-19) is still the number shown
    assert titles.seg_series_description(result("other", 0.05)).startswith("covid-mtl AI: other infection, P 0.05")


def test_the_segment_label_carries_the_measures_and_their_doubts():
    assert titles.segment_label(result()) == "COVID-19 lesion 37.3 mL, 2.1 % of lungs"
    doubted = result(warnings=[{"name": "lung_volume_implausible", "affects": ["lung_ml", "percent_involved"]}])
    assert titles.segment_label(doubted) == "COVID-19 lesion 37.3 mL, 2.1 % of lungs - check report"
    unrelated = result(warnings=[{"name": "other", "affects": ["zones"]}])
    assert not titles.segment_label(unrelated).endswith("check report")
    assert titles.segment_label({"label": "covid"}) == "COVID-19 lesion"  # no measures: the plain name


def test_every_text_fits_dicom_lo():
    huge = result("other infection with a very long invented class name" * 2, 0.999, 123456.7, 99.9,
                  [{"name": "x", "affects": ["lesion_ml"]}])
    for text in (titles.seg_series_description(huge), titles.sr_series_description(huge), titles.segment_label(huge)):
        assert len(text) <= 64, text
