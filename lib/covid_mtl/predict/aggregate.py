"""From slice probabilities to one volume-level classification.

Rule (``top_k_mean``): over the slices the network ran on (those holding enough lung, ``covid_mtl.nets.preprocessing``;
every slice for non-HU images), with ``k = max(1, ceil(top_fraction * n))``:

* P(covid) = mean of the k highest slice P(covid),
* P(other) = mean of the k highest slice P(other),
* P(normal) = mean of the k *lowest* slice P(normal),

and the served model's decision (``covid_mtl.nets.decision``) names a class from them. Why: COVID-19 and other infections are focal,
so a volume is abnormal when some of its slices are (a plain mean over 300 slices would drown a few lesion
slices); a volume is normal only when all of it is, hence its least normal slices decide. Averaging k slices
rather than taking the single maximum keeps one noisy slice from flipping the call. A 2D image (one slice) gets
its slice's probabilities unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InternalError
from ..image import CLASSES

TOP_FRACTION = 0.1
"""Share of the lung-containing slices averaged for each class (at least one slice)."""


@dataclass
class Aggregation:
    probabilities: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


def top_k(n: int, top_fraction: float = TOP_FRACTION) -> int:
    return max(1, math.ceil(top_fraction * n))


def aggregate(slice_probabilities: np.ndarray, lung: np.ndarray, top_fraction: float = TOP_FRACTION) -> Aggregation:
    """Volume probabilities from ``slice_probabilities`` (z, 3) and the lung-slice flags ``lung`` (z,).

    Rows that are NaN (slices the network did not run on) are never used."""
    probs = np.asarray(slice_probabilities, dtype=np.float64)
    lung = np.asarray(lung, dtype=bool)
    if probs.ndim != 2 or probs.shape[1] != len(CLASSES) or lung.shape != (probs.shape[0],):
        raise InternalError(f"aggregate: expected (z, {len(CLASSES)}) probabilities and (z,) lung flags, "
                            f"got {probs.shape} and {lung.shape}")
    valid = ~np.isnan(probs).any(axis=1)
    used = lung & valid
    fallback = not used.any()
    if fallback:
        used = valid
    if not used.any():
        raise InternalError("aggregate: no slice has probabilities")
    z_used = np.flatnonzero(used)
    k = top_k(z_used.size, top_fraction)
    chosen: dict[str, list[int]] = {}
    volume: dict[str, float] = {}
    for c, name in enumerate(CLASSES):
        values = probs[z_used, c]
        # normal: the k least normal slices; covid/other: the k most abnormal ones
        order = np.argsort(values, kind="stable") if name == "normal" else np.argsort(-values, kind="stable")
        picked = order[:k]
        volume[name] = float(values[picked].mean())
        chosen[name] = [int(z) for z in z_used[picked]]
    details = {
        "rule": "top_k_mean",
        "description": "covid/other: mean of the k highest slice probabilities; normal: mean of the k lowest; "
                       "over lung-containing slices",
        "top_fraction": top_fraction,
        "k": k,
        "slices_used": int(z_used.size),
        "slices_total": int(probs.shape[0]),
        "fallback_all_slices": bool(fallback),
        "slices_chosen": chosen,
    }
    return Aggregation(probabilities=volume, details=details)
