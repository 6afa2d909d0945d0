"""Pure evaluation metrics: lesion Dice and COVID / 3-class classification measures.

No model here: every function takes predictions and ground truth and returns numbers, so the
evaluation loop, the experiment table and the tests share one definition of each measure.

Conventions (documented once, used everywhere):

* **Dice, empty vs empty**: an image whose ground-truth mask *and* predicted mask are both empty scores
  Dice = 1.0 (nothing to find, nothing found); an empty ground truth with a non-empty prediction scores
  0.0. This is MONAI's ``compute_dice(..., ignore_empty=False)``. Normal / other-infection CTs therefore
  count, and false-positive lesions on them are penalised. ``dice_mean_nonempty`` excludes the images with
  an empty ground truth, which is the set the paper's segmentation Dice (0.88) is measured on.
* **Global Dice**: 2 * sum(intersection) / (sum(pred) + sum(truth)) over every voxel of every image.
* **COVID vs rest**: score = P(covid); label ``covid`` is positive, ``normal``, ``other`` *and*
  ``non-covid`` are negative. The operating threshold is Youden's J optimum (max TPR - FPR over the ROC;
  ties go to the highest threshold) and a case is called positive when ``score >= threshold`` (the
  convention of ``sklearn.metrics.roc_curve``). The threshold is chosen on the data being scored, which
  is optimistic; ``at_0_5`` gives the same measures at the fixed threshold 0.5 for an honest comparison.
* **AUC confidence interval**: a percentile bootstrap that resamples whole patient groups (slices of one
  patient are not independent: 100 slices from 33 patients are closer to 33 observations than to 100), 2000
  resamples, seed 0; resamples holding one class only are redrawn. Without groups each case is its own group.
* **Three classes**: only rows labelled ``covid``, ``normal`` or ``other`` (``non-covid`` is excluded);
  the predicted class is the argmax of the three sigmoid outputs; per-class sensitivity / specificity
  are one-vs-rest from the confusion matrix; per-class AUC is one-vs-rest on that class's probability.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice
from sklearn.metrics import confusion_matrix, roc_auc_score

from ..nets.decision import most_probable, youden_threshold  # one rule each for training, prediction, evaluation
from ..errors import CovidMTLError
from ..image import CLASSES, LABELS

POSITIVE = "covid"


# ----------------------------------------------------------------------------------------------- Dice
@dataclass
class MaskStats:
    """What one image contributes to the Dice measures (small, so masks need not be kept)."""

    dice: float
    intersection: int
    pred_voxels: int
    true_voxels: int


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks of the same shape via MONAI; both empty -> 1.0, truth empty only -> 0.0."""
    pred, truth = _binary_pair(pred, truth)
    # MONAI wants (batch, channel, spatial...); one foreground channel, so background is not involved.
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    t = torch.from_numpy(truth[None, None].astype(np.float32))
    return float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0])


def mask_stats(pred: np.ndarray, truth: np.ndarray) -> MaskStats:
    """Per-image Dice plus the voxel counts that global Dice sums."""
    pred, truth = _binary_pair(pred, truth)
    return MaskStats(
        dice=dice_score(pred, truth),
        intersection=int(np.count_nonzero(pred & truth)),
        pred_voxels=int(np.count_nonzero(pred)),
        true_voxels=int(np.count_nonzero(truth)),
    )


def global_dice(stats: Sequence[MaskStats]) -> float | None:
    """Dice over all voxels of all images; None when there are no images, 1.0 when all are empty."""
    if not stats:
        return None
    denom = sum(s.pred_voxels + s.true_voxels for s in stats)
    if denom == 0:
        return 1.0
    return 2.0 * sum(s.intersection for s in stats) / denom


def dice_summary(stats: Sequence[MaskStats]) -> dict[str, Any]:
    """Mean per-image Dice (all images / images with lesions), its spread, and global Dice."""
    dices = np.array([s.dice for s in stats], dtype=float)
    nonempty = np.array([s.dice for s in stats if s.true_voxels > 0], dtype=float)
    return {
        "n_images": int(dices.size),
        "n_nonempty": int(nonempty.size),
        "dice_mean": _mean(dices),
        "dice_std": float(dices.std()) if dices.size else None,
        "dice_mean_nonempty": _mean(nonempty),
        "dice_global": global_dice(stats),
    }


def _binary_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise CovidMTLError(f"Dice: prediction shape {pred.shape} differs from ground truth {truth.shape}")
    return pred > 0, truth > 0


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


# ------------------------------------------------------------------------------ COVID vs rest (binary)
@dataclass
class BinaryMetrics:
    """COVID-vs-rest measures at the Youden-optimal threshold, plus the ROC they came from."""

    n: int
    n_positive: int
    auc: float | None
    threshold: float | None
    accuracy: float | None
    sensitivity: float | None
    specificity: float | None
    counts: dict[str, int]
    at_0_5: dict[str, Any]
    auc_ci95: list[float] | None = None
    n_groups: int | None = None
    fpr: list[float] = field(default_factory=list)
    tpr: list[float] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)

    def as_dict(self, with_curve: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_curve:
            for key in ("fpr", "tpr", "thresholds"):
                d.pop(key)
        return d


def is_positive(labels: Sequence[str]) -> np.ndarray:
    """COVID-vs-rest truth: True for ``covid``; every other known label (incl. ``non-covid``) is False."""
    for lab in labels:
        if lab not in LABELS:
            raise CovidMTLError(f"unknown class label {lab!r}; expected one of {LABELS}")
    return np.array([lab == POSITIVE for lab in labels], dtype=bool)


def threshold_metrics(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity and counts when ``score >= threshold`` is called positive."""
    truth = np.asarray(truth, dtype=bool)
    called = np.asarray(scores, dtype=float) >= threshold
    tp = int(np.sum(called & truth))
    fn = int(np.sum(~called & truth))
    tn = int(np.sum(~called & ~truth))
    fp = int(np.sum(called & ~truth))
    n = tp + fn + tn + fp
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / n if n else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "counts": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
    }


def group_index(groups: Sequence[Any] | None, n: int) -> np.ndarray:
    """0..G-1 per case: which of the G distinct ``groups`` (compared as text) it belongs to; without groups each
    of the ``n`` cases is its own."""
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise CovidMTLError(f"{len(groups)} patient groups for {n} cases")
    return np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]


def grouped_bootstrap_auc(truth: np.ndarray, scores: np.ndarray, groups: Sequence[Any] | None = None,
                          n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile ``level`` interval of the AUC when whole ``groups`` (patients) are resampled with replacement.

    None when fewer than two groups hold each class (no interval can be drawn). A resample is a count per group,
    so each case weighs as often as its group was drawn, and the AUC of every resample is one weighted sum over
    the (positive, negative) pairs (ties count half, as in ``roc_auc_score``): no per-resample sorting.
    """
    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    keys = group_index(groups, truth.size)
    n_groups = int(keys.max()) + 1
    if np.unique(keys[truth]).size < 2 or np.unique(keys[~truth]).size < 2:
        return None
    pos, neg = scores[truth][:, None], scores[~truth][None, :]
    pairs = (pos > neg) + 0.5 * (pos == neg)
    rng = np.random.default_rng(seed)
    aucs = np.empty(0)
    while aucs.size < n_resamples:
        counts = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=n_resamples).astype(float)
        w_pos, w_neg = counts[:, keys[truth]], counts[:, keys[~truth]]
        norm = w_pos.sum(1) * w_neg.sum(1)
        valid = norm > 0  # a resample holding one class only has no AUC: drawn again
        aucs = np.r_[aucs, np.einsum("bi,ij,bj->b", w_pos[valid], pairs, w_neg[valid]) / norm[valid]]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(aucs[:n_resamples], tail)), float(np.percentile(aucs[:n_resamples], 100 - tail))]


def binary_metrics(labels: Sequence[str], covid_scores: Sequence[float],
                   groups: Sequence[Any] | None = None) -> BinaryMetrics:
    """COVID-vs-rest ROC, AUC (with its patient-bootstrap interval over ``groups``), Youden threshold and
    accuracy / sensitivity / specificity there."""
    truth = is_positive(labels)
    scores = _finite_scores(covid_scores, len(truth))
    fixed = threshold_metrics(truth, scores, 0.5)
    n_pos = int(truth.sum())
    if n_pos == 0 or n_pos == len(truth):
        # No ROC without both classes: report the fixed-threshold numbers only.
        return BinaryMetrics(n=len(truth), n_positive=n_pos, auc=None, threshold=None, accuracy=None,
                             sensitivity=None, specificity=None, counts={}, at_0_5=fixed)
    threshold, fpr, tpr, thr = youden_threshold(truth, scores)
    at = threshold_metrics(truth, scores, threshold)
    return BinaryMetrics(
        n=len(truth), n_positive=n_pos, auc=float(roc_auc_score(truth.astype(int), scores)),
        threshold=threshold, accuracy=at["accuracy"], sensitivity=at["sensitivity"],
        specificity=at["specificity"], counts=at["counts"], at_0_5=fixed,
        auc_ci95=grouped_bootstrap_auc(truth, scores, groups),
        n_groups=int(group_index(groups, len(truth)).max()) + 1,
        fpr=fpr.tolist(), tpr=tpr.tolist(),
        thresholds=[float(t) if np.isfinite(t) else None for t in thr],  # JSON has no +inf
    )


def _finite_scores(scores: Sequence[float], n: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=float).reshape(-1)
    if arr.size != n:
        raise CovidMTLError(f"{arr.size} scores for {n} labels")
    if not np.all(np.isfinite(arr)):
        raise CovidMTLError("classification scores contain NaN or infinity")
    return arr


# ---------------------------------------------------------------------------------------- three classes
def multiclass_metrics(labels: Sequence[str], probabilities: np.ndarray) -> dict[str, Any] | None:
    """Argmax accuracy, confusion matrix and per-class one-vs-rest AUC / sensitivity / specificity.

    ``probabilities`` is (n, 3) in ``CLASSES`` order. Rows labelled ``non-covid`` are dropped. Returns None
    when fewer than two of the three classes are labelled (no class comparison to make).
    """
    probs = np.asarray(probabilities, dtype=float)
    if probs.ndim != 2 or probs.shape != (len(labels), len(CLASSES)):
        raise CovidMTLError(f"probabilities shape {probs.shape}, expected ({len(labels)}, {len(CLASSES)})")
    is_positive(labels)  # validates every label
    keep = np.array([lab in CLASSES for lab in labels], dtype=bool)
    y_true = np.array([CLASSES.index(lab) for lab, k in zip(labels, keep) if k], dtype=int)
    probs = probs[keep]
    if len(set(y_true.tolist())) < 2:
        return None
    if not np.all(np.isfinite(probs)):
        raise CovidMTLError("class probabilities contain NaN or infinity")
    y_pred = np.array([CLASSES.index(most_probable(dict(zip(CLASSES, row)))) for row in probs], dtype=int)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(CLASSES))))
    per_class: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(CLASSES):
        tp = int(cm[k, k])
        fn = int(cm[k, :].sum() - tp)
        fp = int(cm[:, k].sum() - tp)
        tn = int(cm.sum() - tp - fn - fp)
        pos = y_true == k
        auc = float(roc_auc_score(pos.astype(int), probs[:, k])) if 0 < pos.sum() < len(pos) else None
        per_class[name] = {
            "n": int(pos.sum()),
            "auc": auc,
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
        }
    return {
        "n": int(len(y_true)),
        "classes": list(CLASSES),
        "accuracy": float(np.mean(y_true == y_pred)),
        "confusion_matrix": cm.tolist(),  # rows = true class, columns = predicted class
        "per_class": per_class,
    }
