"""The one analysis of a scan: canonical layout -> lungs -> network on lung slices -> lesion inside the lungs ->
measures -> outputs mapped back once. ``covid-mtl analyze``, the MONAI Label infer task and the benchmarks call
:func:`analyze` (so do ``evaluate`` and the benchmarks), so a fix lands everywhere at once.

1. the read image is reordered into the canonical axial layout once (``covid_mtl.io.geometry.canonical``);
2. the lungs are found in 3D on that layout (``covid_mtl.lungs.mask``; not for images outside HU);
3. the predictor runs the network on the slices that hold enough lung, cut to the lungs' box (the model's recorded
   preprocessing, ``covid_mtl.nets.preprocessing``);
4. the lesion kept is what the network painted in the lungs, with the dense edge of lesions lying mostly in them
   (``covid_mtl.lungs.confine``);
   what it painted elsewhere is dropped and reported as ``lesion_outside_lung_ml``; kept lesion beside the air-based
   lung mask (dense consolidation) joins the nearest lung, so lung volume and percent involved count it;
5. measures, zones and the report views come from the canonical layout, so a scan stored RAS, LPS or sagittally
   gets the same numbers; the volume rule of ``covid_mtl.nets.decision`` turns the classifier's P(covid) and
   the lungs' involvement into the call;
6. the lesion mask and the lung labels go back to the input grid once (:meth:`Analysis.mask`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..image import Image
from ..io.geometry import Reoriented, canonical
from ..lungs.confine import confine, with_lesion
from ..lungs.mask import LungMask, lung_mask
from ..predict.predictor import Prediction, Predictor
from .quantify import quantify
from .summary import summarize


@dataclass
class Analysis:
    """One analysed scan. ``canonical``, ``lung`` and ``lesion`` share the canonical grid (what the report draws);
    ``image`` is the scan as read; ``result`` is the JSON-safe summary (``covid_mtl.measure.summary``)."""

    image: Image
    canonical: Image
    oriented: Reoriented
    prediction: Prediction
    lung: LungMask
    lesion: np.ndarray | None
    result: dict[str, Any]

    def mask(self) -> np.ndarray | None:
        """The lesion mask that is written and sent, uint8 on the input grid."""
        return None if self.lesion is None else self.oriented.back(self.lesion)

    def lung_labels(self) -> np.ndarray | None:
        """The lung labelmap (1 right, 2 left) on the input grid, or None."""
        return None if self.lung.labels is None else self.oriented.back(self.lung.labels)


def analyze(image: Image, predictor: Predictor, lobes: np.ndarray | None = None) -> Analysis:
    """Classify, segment and measure ``image`` (see the module docstring). ``lobes``: a lobe labelmap on the
    input grid (TotalSegmentator v2 values), for Pan's lobe score."""
    start = time.perf_counter()
    canon, oriented = canonical(image)
    lung = lung_mask(canon)
    t_lung = time.perf_counter()
    prediction = predictor.predict(canon, lung=lung)
    lesion, dropped = prediction.mask, None
    if lesion is not None and lung.available and lung.labels is not None:
        kept = confine(lesion, lung.labels, canon.spacing, superior_at_high_z=lung.superior_at_high_z)
        lesion, dropped = kept.lesion, kept.dropped_voxels
        labels, added = with_lesion(lung.labels, lesion)
        if added:  # consolidation beside the air-based mask is lung too (volume, percent involved, report)
            lung = replace(lung, labels=labels, flags=lung.flags + ["lesion_added"])
    measures = None
    if lesion is not None:
        measures = quantify(lesion, lung, canon.spacing, lobes=None if lobes is None else oriented.forward(lobes),
                            hu=canon.array if canon.is_hu else None, dropped_voxels=dropped)
        measures["lung_mask"] = lung.summary()
    involved = _involvement(canon, lung, measures)
    if prediction.probabilities is not None and involved is not None:
        label = prediction.decision.decide(prediction.probabilities, involved)[1]
        prediction = replace(prediction, label=label, involved_percent=involved)
    # the reply names the file's own orientation, not the canonical one the predictor was handed
    geometry = dict(prediction.geometry, input_orientation=oriented.input_codes, resliced=oriented.resliced)
    if oriented.resliced:
        geometry["warning"] = (f"the file stores the scan as {oriented.input_codes}, not as axial slices: the "
                               f"network ran on axial slices re-cut from it ({oriented.codes})")
    prediction = replace(prediction, geometry=geometry,
                         lesion_voxels=int(lesion.sum()) if lesion is not None else 0)
    timings = dict(prediction.timings, lung_mask_s=t_lung - start)
    prediction = replace(prediction, timings=timings)
    result = summarize(prediction, image, predictor, measures)
    if "cls" in predictor.heads and prediction.probabilities is None:  # a HU volume in which no lung was found
        result["statement"] = "no lung found in this scan: the network was not run and there is nothing to classify"
    result["timings"]["analysis_s"] = round(time.perf_counter() - start, 4)
    return Analysis(image, canon, oriented, prediction, lung, lesion, result)


def _involvement(canon: Image, lung: LungMask, measures: dict[str, Any] | None) -> float | None:
    """Percent of the lungs holding lesion, for the volume rule: only for volumes with a non-empty lung mask."""
    if measures is None or canon.array.shape[0] < 2 or not lung.available or not lung.voxel_count():
        return None
    return measures.get("percent_involved")
