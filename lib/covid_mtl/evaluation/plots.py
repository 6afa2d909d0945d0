"""Evaluation figures as PNG: ROC with the Youden point, confusion matrix, mask overlays.

Built on ``matplotlib.figure.Figure`` (Agg canvas) rather than pyplot so that plotting never touches a
global backend or leaks open figures in long-running processes (the MONAI Label server, tests).
Learning curves are drawn by the training code, not here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

TRUTH_COLOUR = "lime"
PRED_COLOUR = "red"


@dataclass
class OverlayCase:
    """One 2D slice to show: the image (any range) with its ground-truth and predicted lesion masks."""

    title: str
    image: np.ndarray
    truth: np.ndarray | None
    pred: np.ndarray


def plot_roc(fpr: Sequence[float], tpr: Sequence[float], path: str | Path, auc: float | None = None,
             youden: tuple[float, float, float] | None = None, title: str = "COVID vs rest") -> Path:
    """ROC curve; ``youden`` = (fpr, tpr, threshold) of the operating point, marked on the curve."""
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    label = f"ROC (AUC = {auc:.3f})" if auc is not None else "ROC"
    ax.plot(fpr, tpr, color="tab:blue", lw=2, label=label)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
    if youden is not None:
        x, y, thr = youden
        ax.plot([x], [y], "o", color="tab:red", ms=8, label=f"Youden point (threshold {thr:.3f})")
        ax.vlines(x, x, y, color="tab:red", lw=1, ls=":")  # J = TPR - FPR is this vertical gap
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 - specificity (FPR)",
           ylabel="sensitivity (TPR)", title=title, aspect="equal")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_confusion_matrix(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Counts with rows = true class, columns = predicted class."""
    cm = np.asarray(cm, dtype=int)
    fig = Figure(figsize=(4.5, 4), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, ticks=MaxNLocator(integer=True))
    ticks = range(len(classes))
    ax.set(xticks=list(ticks), yticks=list(ticks), xticklabels=list(classes), yticklabels=list(classes),
           xlabel="predicted", ylabel="true", title=title)
    half = cm.max() / 2 if cm.size and cm.max() > 0 else 0.5
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > half else "black")
    return _save(fig, path)


def plot_overlays(cases: Sequence[OverlayCase], path: str | Path, columns: int = 3) -> Path:
    """Grid of slices with ground-truth (green) and predicted (red) lesion contours."""
    n = max(1, len(cases))
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows), dpi=100, layout="constrained")
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.axis("off")
        if k >= len(cases):
            if not cases:
                ax.text(0.5, 0.5, "no images", ha="center", va="center")
            continue
        case = cases[k]
        ax.imshow(case.image, cmap="gray", interpolation="nearest")
        # contour() warns on a constant mask, so only draw masks that have foreground.
        if case.truth is not None and np.any(case.truth):
            ax.contour(np.asarray(case.truth, dtype=float), levels=[0.5], colors=TRUTH_COLOUR, linewidths=1)
        if np.any(case.pred):
            ax.contour(np.asarray(case.pred, dtype=float), levels=[0.5], colors=PRED_COLOUR, linewidths=1)
        ax.set_title(case.title, fontsize=8)
    fig.suptitle("ground truth (green) vs prediction (red)", fontsize=9)
    return _save(fig, path, tight=False)  # constrained layout already fits titles and suptitle


def _save(fig: Figure, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_robustness(tables: dict[str, Sequence[dict]], path: str | Path, key: str = "dice",
                    tolerance: float | None = 0.03) -> Path:
    """Grouped bars of ``key`` (e.g. Dice) per display re-map, one bar per model (``tables``: model name -> rows
    of ``evaluation.robustness.table_rows``); a dashed line marks plain minus ``tolerance`` for each model."""
    names = [row["remap"] for row in next(iter(tables.values()))]
    fig = Figure(figsize=(max(6.0, 0.9 * len(names) + 2), 4), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(tables))
    for i, (model, rows) in enumerate(tables.items()):
        values = [np.nan if r[key] is None else r[key] for r in rows]
        bars = ax.bar(np.arange(len(names)) + (i - (len(tables) - 1) / 2) * width, values, width, label=model)
        if tolerance is not None and rows and rows[0][key] is not None:
            ax.axhline(rows[0][key] - tolerance, color=bars.patches[0].get_facecolor(), ls="--", lw=1)
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(key)
    lows = [r[key] for rows in tables.values() for r in rows if r[key] is not None]
    if lows:
        ax.set_ylim(max(0.0, min(lows) - 0.1), min(1.0, max(lows) + 0.05))
    ax.set_title(f"validation {key} per display re-map (dashed: plain - {tolerance})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
