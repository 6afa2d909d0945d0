"""One-page case report (PNG and PDF): class and probabilities, axial slices with the lung outline and the lesion
overlay (the highest lung slice, the slices with the most lesion, the lowest lung slice: where the lungs end is
visible, so a mask that stops early or runs into the neck or abdomen shows), a coronal view of lung mask and
lesions, the measures with their warnings.

Built on ``matplotlib.figure.Figure`` (Agg canvas), never pyplot, so a long-running server leaks no figures.
Everything is drawn from the analysis's canonical layout (``covid_mtl.io.geometry``: x towards the patient's
left, y towards the back, z towards the head), which is how radiologists read axial slices (patient's right on
the viewer's left, anterior up) whatever layout the file stored; images without an affine are shown as stored.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from matplotlib.figure import Figure

from ..image import Image
from .checks import doubting
from .report_coronal import coronal_view
from .report_style import LESION_RGBA, LUNG_COLOUR, display_range

if TYPE_CHECKING:
    from .analysis import Analysis

N_KEY_SLICES = 2
N_AXIAL = N_KEY_SLICES + 2  # the highest lung slice, the key slices, the lowest lung slice
SLOT = 0.9 / (N_AXIAL + 1)  # page width of one image: the axial slices, then the coronal view
DISCLAIMER = "Research software, not a medical device: every finding must be confirmed by a radiologist."


def key_slices(lesion: np.ndarray | None, lung: np.ndarray | None, n: int = N_KEY_SLICES) -> list[int]:
    """Up to ``n`` slices: the most lesion first, spread over the lesion's z range; else spread over the lungs."""
    depth = lesion.shape[0] if lesion is not None else (lung.shape[0] if lung is not None else 1)
    if depth <= n:
        return list(range(depth))
    if lesion is not None and lesion.any():
        area = lesion.reshape(depth, -1).sum(axis=1)
        hit = np.flatnonzero(area)
        gap = max(1, (int(hit[-1] - hit[0]) + 1) // (n + 1))
        chosen: list[int] = []
        ranked = [int(z) for z in np.argsort(area, kind="stable")[::-1] if area[z] > 0]
        for z in ranked:  # well-separated slices first, then whatever lesion slices remain
            if len(chosen) < n and all(abs(z - c) >= gap for c in chosen):
                chosen.append(z)
        for z in ranked:
            if len(chosen) < n and z not in chosen:
                chosen.append(z)
        return sorted(chosen)
    zs = np.flatnonzero(lung.reshape(depth, -1).any(axis=1)) if lung is not None and lung.any() else np.arange(depth)
    picks = np.quantile(zs, np.linspace(0.25, 0.75, n)).round().astype(int)
    return sorted(set(int(z) for z in picks))


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _marks(measures: Mapping[str, Any], key: str) -> str:
    """`` <! name, ...>`` for the warnings that put ``key``'s number in doubt, next to that number."""
    names = doubting(measures.get("warnings"), key)
    return f"  <! {', '.join(names)}>" if names else ""


def measure_lines(measures: Mapping[str, Any]) -> list[str]:
    """Human-readable lines of the quantify() dict, in report order; warnings marked next to what they affect."""
    lines = [
        f"Lesion volume: {_fmt(measures.get('lesion_ml'), ' mL')}   "
        f"(painted outside the lungs, left out: {_fmt(measures.get('lesion_outside_lung_ml'), ' mL')})",
        f"Lung volume: {_fmt(measures.get('lung_ml'), ' mL')}{_marks(measures, 'lung_ml')}",
        f"Involved: {_fmt(measures.get('percent_involved'), ' %')}{_marks(measures, 'percent_involved')}",
    ]
    lungs = measures.get("lungs") or {}
    for side in ("right", "left"):
        if side in lungs:
            r = lungs[side]
            lines.append(f"  {side} lung: {_fmt(r['lung_ml'], ' mL')}, involved {_fmt(r['percent_involved'], ' %')}"
                         f"{_marks(measures, 'lungs')}")
    if measures.get("zone_severity_score") is not None:
        lines.append(f"Zone severity score (6 zones, adapted from Pan et al. 2020): "
                     f"{measures['zone_severity_score']} / {measures.get('zone_severity_max', 30)}"
                     f"{_marks(measures, 'zone_severity_score')}")
        zones = measures.get("zones") or {}
        cells = [f"{name.replace('_', ' ')} {_fmt(r['percent_involved'], '%')} ({r['points']})"
                 for name, r in zones.items()]
        for i in range(0, len(cells), 3):
            lines.append("  " + ";  ".join(cells[i:i + 3]))
    if measures.get("lobe_severity_score") is not None:
        lines.append(f"Lobe severity score (Pan et al. 2020): {measures['lobe_severity_score']} / "
                     f"{measures.get('lobe_severity_max', 25)}")
    if measures.get("flags"):
        lines.append("Notes: " + ", ".join(str(f) for f in measures["flags"]))
    return lines


def warning_lines(warnings: list[Mapping[str, Any]] | None, width: int = 110) -> list[str]:
    """``! name: message`` per warning, wrapped for the page."""
    lines: list[str] = []
    for w in warnings or []:
        lines += textwrap.wrap(f"! {w.get('name')}: {w.get('message')}", width, subsequent_indent="    ")
    return lines


def lung_ends(lung: np.ndarray | None) -> list[int]:
    """The highest and the lowest slice holding lung (canonical layout: high z is the head), or []."""
    if lung is None or not np.any(lung):
        return []
    zs = np.flatnonzero(np.asarray(lung).reshape(lung.shape[0], -1).any(axis=1))
    return [int(zs[-1]), int(zs[0])] if zs[-1] != zs[0] else [int(zs[0])]


def axial_slices(lesion: np.ndarray | None, lung: np.ndarray | None) -> list[tuple[int, str]]:
    """``(z, role)`` of the axial views, head first: the highest lung slice, the key lesion slices, the lowest."""
    ends = lung_ends(lung)
    keys = [z for z in key_slices(lesion, lung) if z not in ends]
    chosen = [(ends[0], "highest lung slice")] if ends else []
    chosen += [(z, "lesion" if lesion is not None and np.any(lesion[z]) else "lung") for z in sorted(keys, reverse=True)]
    if len(ends) == 2:
        chosen.append((ends[1], "lowest lung slice"))
    return chosen[:N_AXIAL]


def write_report(analysis: "Analysis", out_stem: str | os.PathLike, model_version: str | None = None,
                 title: str | None = None) -> list[Path]:
    """Write ``<out_stem>.png`` and ``<out_stem>.pdf`` of one analysis (``covid_mtl.measure.analysis``); returns
    both paths. Every view is drawn from the analysis's canonical layout."""
    image, lung, mask = analysis.canonical, analysis.lung, analysis.lesion
    result = analysis.result
    measures = result.get("quantification")
    warnings = result.get("warnings")
    prediction = {"label": result.get("label"), "probabilities": result.get("probabilities"),
                  "statement": result.get("statement"), "model_version": model_version or result.get("model_version")}
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8.27, 11.69), dpi=110)  # A4 portrait
    fig.text(0.05, 0.965, title or f"covid-mtl report: {Path(image.source).name}", fontsize=15, weight="bold")
    fig.text(0.05, 0.945, f"source: {image.source}", fontsize=7, color="dimgray")
    fig.text(0.05, 0.93, f"model: {prediction.get('model_version') or 'unknown'}", fontsize=7, color="dimgray")
    fig.text(0.05, 0.02, DISCLAIMER, fontsize=7, color="dimgray")
    _classification(fig, prediction)
    lung_labels = lung.labels if lung is not None and lung.available else None
    _slices(fig, image, mask, lung_labels)
    if image.array.shape[0] > 2:
        coronal_view(fig, (0.05 + N_AXIAL * SLOT, 0.52, SLOT - 0.01, 0.3), image, mask, lung_labels)
    text = measure_lines(measures) if measures is not None else []
    if warnings:
        text += ["", "Warnings (check before reading the numbers marked <! ...>):"] + warning_lines(warnings)
    if text:
        fig.text(0.05, 0.49, "Measures", fontsize=12, weight="bold")
        fig.text(0.05, 0.475, "\n".join(text), fontsize=8 if len(text) <= 18 else 7, va="top", family="monospace")
    if lung_labels is not None and mask is not None and lung_labels.shape[0] > 2:
        _profile(fig, mask, lung_labels)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, format="png")
    fig.savefig(pdf, format="pdf")
    return [png, pdf]


def _classification(fig: Figure, prediction: Mapping[str, Any]) -> None:
    label = str(prediction.get("label", "unknown"))
    probabilities = dict(prediction.get("probabilities") or {})
    fig.text(0.05, 0.895, f"Classification: {label.upper()}", fontsize=14, weight="bold",
             color="firebrick" if label == "covid" else "black")
    if prediction.get("statement"):  # the model's claim with only the classes it was trained on
        fig.text(0.05, 0.878, "\n".join(textwrap.wrap(str(prediction["statement"]), 78)), fontsize=7.5, va="top")
    if not probabilities:
        return
    ax = fig.add_axes((0.55, 0.86, 0.38, 0.07))
    names = list(probabilities)
    values = [float(probabilities[n]) for n in names]
    ax.barh(names, values, color=["firebrick" if n == label else "grey" for n in names])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.tick_params(labelsize=8)
    for i, v in enumerate(values):
        ax.text(min(v + 0.02, 0.85), i, f"{v:.2f}", va="center", fontsize=8)
    ax.set_title("probabilities", fontsize=8)


def _slices(fig: Figure, image: Image, mask: np.ndarray | None, lung: np.ndarray | None) -> None:
    views = axial_slices(mask, lung) if image.array.shape[0] > 1 else [(0, "slice")]
    dy, dx = (image.spacing[1], image.spacing[2]) if image.spacing is not None else (1.0, 1.0)
    width = SLOT  # fixed slots, so one slice is not blown up over the header
    left = 0.05 + (N_AXIAL - len(views)) * width / 2
    vmin, vmax = display_range(image)
    for i, (z, role) in enumerate(views):
        ax = fig.add_axes((left + i * width, 0.52, width - 0.01, 0.3))
        ax.imshow(image.array[z], cmap="gray", vmin=vmin, vmax=vmax, aspect=dy / dx, interpolation="nearest")
        if lung is not None and lung[z].any():
            ax.contour((lung[z] > 0).astype(float), levels=[0.5], colors=LUNG_COLOUR, linewidths=0.6)
        if mask is not None and mask[z].any():
            overlay = np.zeros(mask[z].shape + (4,), float)
            overlay[mask[z] > 0] = LESION_RGBA
            ax.imshow(overlay, aspect=dy / dx, interpolation="nearest")
        area = int((mask[z] > 0).sum()) if mask is not None else 0
        ax.set_title(f"{role}\nslice {z + 1}/{image.array.shape[0]}, lesion {area} px", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        if image.affine is not None:  # sides are only known with an affine
            ax.text(0.02, 0.02, "R", transform=ax.transAxes, color="yellow", fontsize=8)
            ax.text(0.90, 0.02, "L", transform=ax.transAxes, color="yellow", fontsize=8)


def _profile(fig: Figure, mask: np.ndarray, lung: np.ndarray) -> None:
    """Percent of each lung's slice area that is lesion, from base to apex: where the disease sits."""
    from ..lungs.shape import LEFT_LUNG, RIGHT_LUNG

    ax = fig.add_axes((0.1, 0.07, 0.83, 0.17))
    lesion = mask > 0
    z = np.arange(lung.shape[0])
    for side, name, colour in ((RIGHT_LUNG, "right lung", "tab:blue"), (LEFT_LUNG, "left lung", "tab:orange")):
        area = (lung == side).reshape(len(z), -1).sum(axis=1)
        hit = (lesion & (lung == side)).reshape(len(z), -1).sum(axis=1)
        percent = np.where(area > 0, 100.0 * hit / np.maximum(area, 1), np.nan)
        ax.plot(z + 1, percent, color=colour, label=name)
    ax.set_xlabel("slice  (head ->)", fontsize=8)
    ax.set_ylabel("% of slice's lung", fontsize=8)
    ax.set_ylim(0, 100)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("lesion along the lungs", fontsize=9)
