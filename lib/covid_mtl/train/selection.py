"""Choosing the best model: the one validation split and the one selection score.

``covid-mtl train`` and the MONAI Label train task both call these, so from the same images they validate on the
same ones and keep the same checkpoint.

**Split** (``split_validation``): rows whose ``split`` is ``val`` validate and ``test`` rows are left out. When no
row says ``val``, a seeded ``val_fraction`` of the *labelled groups of each source* validates: a group is a
patient or scan (the manifest's ``group``, else the image itself) and is never split; a source is the data set
(the manifest's ``source``; all one source without it); only groups with a mask or a class can validate (an
unlabelled image scores nothing), and a source with fewer than two labelled groups keeps them all for training.
A ``val_fraction`` of 0 holds nothing back (a fine-tuning round of the annotation loop).
So every data set with enough labels has validation images, and no patient is on both sides.

**Selection score** (``selection_score``): the mean of the validation numbers that exist among lesion Dice
(global, over annotated slices) and COVID-vs-rest AUC (over slices whose P(covid) is supervised); with neither,
minus the validation loss. Higher is better; a later epoch replaces the best only when strictly better
(``is_better``), as ignite's key-metric bookkeeping does. Early stopping watches the same score.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)


def split_validation(items: Sequence[Any], val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """``(train, val)`` of manifest rows, records or dicts (keys image/mask/label, optional split/source/group)."""
    items = [i for i in items if _get(i, "split") != "test"]
    if any(_get(i, "split") == "val" for i in items):
        return [i for i in items if _get(i, "split") != "val"], [i for i in items if _get(i, "split") == "val"]
    if val_fraction <= 0:  # nothing held back: a fine-tuning round on a handful of corrections learns them all
        return items, []
    groups: dict[str, dict[str, bool]] = {}
    for item in items:
        source, group = _group_key(item)
        labelled = bool(_get(item, "mask") or _get(item, "label"))
        groups.setdefault(source, {})
        groups[source][group] = groups[source].get(group, False) or labelled
    rng = np.random.default_rng(seed)
    val_groups: set[tuple[str, str]] = set()
    for source in sorted(groups):
        candidates = sorted(g for g, labelled in groups[source].items() if labelled)
        if len(candidates) < 2:
            continue
        n_val = min(len(candidates) - 1, max(1, round(val_fraction * len(candidates))))
        val_groups.update((source, candidates[i]) for i in rng.permutation(len(candidates))[:n_val])
    return [i for i in items if _group_key(i) not in val_groups], [i for i in items if _group_key(i) in val_groups]


def _group_key(item: Any) -> tuple[str, str]:
    """(source, group) of an item; an item without a group is its own group."""
    return str(_get(item, "source") or ""), str(_get(item, "group") or _get(item, "image"))


def selection_score(metrics: Mapping[str, Any]) -> float:
    """The score above from ``dice``, ``covid_auc`` and ``loss``."""
    parts = [float(metrics[k]) for k in ("dice", "covid_auc") if metrics.get(k) is not None]
    if parts:
        return float(np.mean(parts))
    loss = metrics.get("loss")
    return -float(loss) if loss is not None else float("-inf")


def is_better(score: float, best: float | None) -> bool:
    """Whether ``score`` replaces ``best`` (strictly higher; the first score always does)."""
    return best is None or score > best


def best_epoch(scores: Sequence[float]) -> int:
    """1-based epoch the rule keeps from a sequence of per-epoch scores."""
    best, kept = None, 0
    for epoch, score in enumerate(scores, start=1):
        if is_better(score, best):
            best, kept = score, epoch
    return kept
