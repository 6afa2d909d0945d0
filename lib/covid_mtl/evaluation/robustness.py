"""How much a change in how a scan *looks* costs: validation Dice and AUC under a fixed set of display re-maps.

A radiologist calls a slice shown at another window, a noisier dose or a softer kernel the same image; a model
that learnt its training crops' grey levels does not. :data:`REMAPS` is the fixed set that the robustness table
(``python -m bench.robustness``) and the packaged model's acceptance rule use. Each re-map acts on the displayed
grey levels in [0, 1] and the result is stored back at the image's own bit depth, as an export at another setting
would be:

* ``gamma 0.7`` / ``gamma 1.4``: another display curve (the issue's measured drop was at gamma 1.4);
* ``contrast x0.8`` / ``contrast x1.25``: a wider or narrower window about mid-grey;
* ``noise 45 HU``: Gaussian noise of 0.03 of the grey range, i.e. 45 HU at W 1500, a low-dose scan's level
  (the staged standard-kernel scans measure 19-31 HU, their sharp-kernel twins 41-69 HU);
* ``blur 1 px`` / ``sharpen``: a smooth and a sharp reconstruction kernel (Gaussian sigma 1 px; unsharp mask,
  amount 1 at sigma 1 px).

Noise is seeded per image, so the table is the same on every run.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from ..image import Image
from ..io.manifest import ManifestRow
from ..io import read_image
from ..predict.predictor import Predictor
from .evaluate import CaseResult, compute_metrics, evaluate_rows

Remap = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _per_slice(fn: Callable[[np.ndarray], np.ndarray]) -> Remap:
    return lambda grey, rng: np.stack([fn(s) for s in grey])


REMAPS: dict[str, Remap | None] = {
    "plain": None,
    "gamma 0.7": lambda grey, rng: grey ** 0.7,
    "gamma 1.4": lambda grey, rng: grey ** 1.4,
    "contrast x0.8": lambda grey, rng: 0.5 + 0.8 * (grey - 0.5),
    "contrast x1.25": lambda grey, rng: 0.5 + 1.25 * (grey - 0.5),
    "noise 45 HU": lambda grey, rng: grey + rng.normal(0.0, 0.03, grey.shape),
    "blur 1 px": _per_slice(lambda s: ndimage.gaussian_filter(s, 1.0)),
    "sharpen": _per_slice(lambda s: s + 1.0 * (s - ndimage.gaussian_filter(s, 1.0))),
}
"""Name -> re-map of grey levels in [0, 1] (``None``: the image as stored)."""


def remapped(image: Image, name: str, seed: int = 0) -> Image:
    """``image`` as the re-map ``name`` would show it, stored back at its bit depth (8-bit crops: 0..255).

    Only exports with a bit depth are re-mapped: they are what the table is measured on."""
    remap = REMAPS[name]
    if remap is None:
        return image
    if image.is_hu or not image.bit_depth:
        raise ValueError(f"{image.source}: the display re-maps act on exported grey levels, not on HU")
    top = float(2 ** image.bit_depth - 1)
    grey = np.clip(np.asarray(image.array, np.float64) / top, 0.0, 1.0)
    out = np.clip(remap(grey, np.random.default_rng(seed)), 0.0, 1.0)
    return replace(image, array=np.round(out * top).astype(np.float32))


def robustness(predictor: Predictor, rows: Sequence[ManifestRow], names: Sequence[str] = tuple(REMAPS),
               progress: bool = False) -> dict[str, dict]:
    """Per re-map: :func:`compute_metrics` of ``rows`` seen through it (keys of :data:`REMAPS`)."""
    images = [read_image(r.image) for r in rows]
    results = {}
    for name in names:
        seen = [remapped(image, name, seed=i) for i, image in enumerate(images)]
        cases: list[CaseResult] = evaluate_rows(predictor, rows, n_overlays=0, progress=progress,
                                                images=seen)[0]
        threshold = predictor.decision.threshold if predictor.decision.binary else None
        results[name] = compute_metrics(cases, threshold)
    return results


def table_rows(results: dict[str, dict], source_seg: str = "medseg", source_cls: str = "covid_ct") -> list[dict]:
    """One row per re-map: Dice (mean per slice and global) of ``source_seg``, AUC of ``source_cls``, and the
    change from ``plain``."""
    def pick(result: dict, source: str) -> dict:
        return (result.get("by_source") or {}).get(source) or result

    rows = []
    for name, result in results.items():
        seg = pick(result, source_seg).get("segmentation") or {}
        cls = pick(result, source_cls).get("covid_vs_rest") or {}
        rows.append({"remap": name, "dice": seg.get("dice_mean"), "dice_global": seg.get("dice_global"),
                     "auc": cls.get("auc")})
    plain = rows[0] if rows and rows[0]["remap"] == "plain" else None
    for row in rows:
        for key in ("dice", "auc"):
            row[f"{key}_change"] = (None if plain is None or row[key] is None or plain[key] is None
                                    else row[key] - plain[key])
    return rows
