"""Evaluate a trained model on one split of a manifest: metrics.json, a printed table and the figures.

Two layers so each can be tested on its own:

* :func:`score_case` + :func:`compute_metrics` are pure: predictions and ground truth in, numbers out.
  Tests feed them hand-made prediction sets with known Dice / AUC / Youden threshold / confusion matrix.
* :func:`evaluate` is the loop: it reads each row with ``covid_mtl.io.read_image``, runs the one
  ``Predictor`` and hands the results to the pure layer. Whole masks are never kept: each case is reduced
  to its Dice counts at once (a 512 x 512 x 300 CT mask is 75 MB) plus, for a few cases, one 2D slice to
  draw.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from . import metrics
from . import plots
from ..errors import CovidMTLError
from ..image import CLASSES, Image
from ..io import read_image, read_mask
from ..io.manifest import ManifestRow, read_manifest
from ..io.normalize import normalize_array
from ..measure.analysis import analyze
from ..predict.predictor import Predictor

N_OVERLAYS = 6


@dataclass
class CaseResult:
    """One evaluated image, reduced to what the metrics need.

    ``probabilities``: (3,) in ``CLASSES`` order, None when the model has no classification head.
    ``mask``: Dice counts, None when the row has no ground-truth mask or the model no segmentation head.
    """

    name: str
    label: str | None
    probabilities: np.ndarray | None
    mask: metrics.MaskStats | None
    source: str | None = None
    group: str | None = None


def probability_vector(probabilities: Mapping[str, float] | Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """Class probabilities as a float (3,) array in ``CLASSES`` order (from a dict or a sequence)."""
    if probabilities is None:
        return None
    if isinstance(probabilities, Mapping):
        if "covid" not in probabilities:
            raise CovidMTLError(f"probabilities lack P(covid): {sorted(probabilities)}")
        # a COVID-vs-rest model reports only P(covid): its untrained outputs are NaN, never scored
        return np.array([float(probabilities.get(c, np.nan)) for c in CLASSES], dtype=float)
    arr = np.asarray(probabilities, dtype=float).reshape(-1)
    if arr.size != len(CLASSES):
        raise CovidMTLError(f"expected {len(CLASSES)} class probabilities, got {arr.size}")
    return arr


def score_case(name: str, label: str | None, probabilities: Any, pred_mask: np.ndarray | None,
               true_mask: np.ndarray | None) -> CaseResult:
    """Reduce one case's prediction and ground truth to a :class:`CaseResult`."""
    stats = None
    if pred_mask is not None and true_mask is not None:
        if np.shape(pred_mask) != np.shape(true_mask):
            raise CovidMTLError(f"{name}: predicted mask shape {np.shape(pred_mask)} differs from the "
                                f"ground-truth mask {np.shape(true_mask)}")
        stats = metrics.mask_stats(pred_mask, true_mask)
    return CaseResult(name=name, label=label, probabilities=probability_vector(probabilities), mask=stats)


def compute_metrics(cases: Sequence[CaseResult], threshold: float | None = None) -> dict[str, Any]:
    """All measures for a set of evaluated cases (conventions in :mod:`covid_mtl.evaluation.metrics`).

    Keys: ``n_cases``; ``segmentation`` (None without masks); ``covid_vs_rest`` (None without labelled
    cases with probabilities); ``three_class`` (None unless two or more of covid/normal/other are labelled);
    ``cases`` (per-case label, probabilities, Dice). The AUC's interval resamples the cases' ``group``s
    (patients; a case without one is its own group). ``threshold``: the served model's own P(covid) cut-off;
    ``covid_vs_rest.at_model_threshold`` gives accuracy / sensitivity / specificity there (the Youden cut-off of
    the evaluated set is an optimistic, in-sample choice). ``by_source``: the same per data set when the cases
    name their source.
    """
    seg = [c.mask for c in cases if c.mask is not None]
    cls = [c for c in cases if c.label is not None and c.probabilities is not None]
    binary = three = None
    if cls:
        labels = [c.label for c in cls]
        probs = np.stack([c.probabilities for c in cls])
        covid_scores = probs[:, CLASSES.index(metrics.POSITIVE)]
        groups = [c.group or f"case:{i}" for i, c in enumerate(cls)]
        binary = metrics.binary_metrics(labels, covid_scores, groups).as_dict()
        if threshold is not None:
            binary["at_model_threshold"] = {"threshold": threshold, **metrics.threshold_metrics(
                metrics.is_positive(labels), covid_scores, threshold)}
        three = None if np.isnan(probs).any() else metrics.multiclass_metrics(labels, probs)
    sources = sorted({c.source for c in cases if c.source})
    by_source = {s: {k: v for k, v in compute_metrics([c for c in cases if c.source == s], threshold).items()
                     if k != "cases"} for s in sources} if len(sources) > 1 else None
    return {
        "n_cases": len(cases),
        "by_source": by_source,
        "segmentation": metrics.dice_summary(seg) if seg else None,
        "covid_vs_rest": binary,
        "three_class": three,
        "cases": [
            {
                "name": c.name,
                "label": c.label,
                "source": c.source,
                "probabilities": None if c.probabilities is None
                else {k: float(p) for k, p in zip(CLASSES, c.probabilities) if not np.isnan(p)},
                "dice": None if c.mask is None else c.mask.dice,
                "true_voxels": None if c.mask is None else c.mask.true_voxels,
                "pred_voxels": None if c.mask is None else c.mask.pred_voxels,
            }
            for c in cases
        ],
    }


# ------------------------------------------------------------------------------------------ reporting
def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _operating_point(title: str, m: Mapping[str, Any]) -> str:
    return f"  {title} Acc {_fmt(m['accuracy'])}  Sens {_fmt(m['sensitivity'])}  Spec {_fmt(m['specificity'])}"


def format_table(result: Mapping[str, Any]) -> str:
    """Human-readable summary of :func:`compute_metrics` output."""
    lines = [f"cases: {result['n_cases']}"]
    seg = result.get("segmentation")
    if seg:
        lines.append(f"Dice  mean per image {_fmt(seg['dice_mean'])} (sd {_fmt(seg['dice_std'])}, n={seg['n_images']})"
                     f"  | images with lesions {_fmt(seg['dice_mean_nonempty'])} (n={seg['n_nonempty']})"
                     f"  | global {_fmt(seg['dice_global'])}")
    else:
        lines.append("Dice  n/a (no ground-truth masks or no segmentation head)")
    b = result.get("covid_vs_rest")
    if b:
        lines.append(f"COVID vs rest (n={b['n']}, {b['n_positive']} COVID):")
        ci = b.get("auc_ci95")
        interval = (f" (95% CI {_fmt(ci[0], 2)}-{_fmt(ci[1], 2)}, bootstrap over {b['n_groups']} patient groups)"
                    if ci else "")
        lines.append(_operating_point(f"at Youden threshold {_fmt(b['threshold'])}:", b) + f"  AUC {_fmt(b['auc'])}"
                     + interval)
        lines.append(_operating_point("at threshold 0.5:      ", b["at_0_5"]))
        if b.get("at_model_threshold"):
            m = b["at_model_threshold"]
            lines.append(_operating_point(f"at the model's cut-off {_fmt(m['threshold'])}:", m))
    else:
        lines.append("COVID vs rest  n/a (no labelled cases or no classification head)")
    t = result.get("three_class")
    if t:
        lines.append(f"Three classes (n={t['n']}): argmax accuracy {_fmt(t['accuracy'])}")
        lines.append(f"  {'class':<8}{'n':>5}{'AUC':>8}{'Sens':>8}{'Spec':>8}")
        for name, m in t["per_class"].items():
            lines.append(f"  {name:<8}{m['n']:>5}{_fmt(m['auc']):>8}{_fmt(m['sensitivity']):>8}"
                         f"{_fmt(m['specificity']):>8}")
        lines.append("  confusion matrix (rows true, columns predicted: " + ", ".join(t["classes"]) + ")")
        for name, row in zip(t["classes"], t["confusion_matrix"]):
            lines.append(f"  {name:<8}" + "".join(f"{v:>6}" for v in row))
    for source, sub in (result.get("by_source") or {}).items():
        lines.append(f"--- source {source} ---")
        lines.extend("  " + line for line in format_table({**sub, "by_source": None}).splitlines())
    return "\n".join(lines)


def write_evaluation(result: Mapping[str, Any], out: str | os.PathLike,
                 overlays: Sequence[plots.OverlayCase] = ()) -> dict[str, Path]:
    """Write metrics.json and whichever figures the result supports; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"metrics": out / "metrics.json"}
    written["metrics"].write_text(json.dumps(result, indent=2) + "\n")
    b = result.get("covid_vs_rest")
    if b and b.get("auc") is not None:
        i = b["thresholds"].index(b["threshold"])
        written["roc"] = plots.plot_roc(b["fpr"], b["tpr"], out / "roc.png", auc=b["auc"],
                                        youden=(b["fpr"][i], b["tpr"][i], b["threshold"]))
    t = result.get("three_class")
    if t:
        written["confusion_matrix"] = plots.plot_confusion_matrix(t["confusion_matrix"], t["classes"],
                                                                  out / "confusion_matrix.png")
    elif b and b.get("at_model_threshold"):  # COVID vs non-COVID at the served model's cut-off
        c = b["at_model_threshold"]["counts"]
        written["confusion_matrix"] = plots.plot_confusion_matrix([[c["tp"], c["fn"]], [c["fp"], c["tn"]]],
                                                                  ["covid", "non-covid"], out / "confusion_matrix.png")
    if overlays:
        written["overlays"] = plots.plot_overlays(overlays, out / "overlays.png")
    return written


# ------------------------------------------------------------------------------------------ the loop
def overlay_case(title: str, image: Image, truth: np.ndarray | None, pred: np.ndarray) -> plots.OverlayCase:
    """The slice with the most ground-truth lesion (else predicted lesion, else the middle one)."""
    ref = truth if truth is not None and truth.any() else pred
    areas = ref.reshape(ref.shape[0], -1).sum(axis=1)
    z = int(areas.argmax()) if areas.any() else ref.shape[0] // 2
    shown = normalize_array(image.array[z], image.is_hu, image.bit_depth)  # one slice: display only
    return plots.OverlayCase(title=f"{title} (z={z})", image=shown, truth=None if truth is None else truth[z],
                             pred=np.asarray(pred[z]))


def select_rows(rows: Sequence[ManifestRow], split: str | None) -> list[ManifestRow]:
    """Rows of ``split`` (all rows when None) that have a label or a mask to score against."""
    chosen = [r for r in rows if split is None or r.split == split]
    if not chosen:
        raise CovidMTLError(f"manifest has no rows in split {split!r}")
    scorable = [r for r in chosen if r.label is not None or r.mask is not None]
    if not scorable:
        raise CovidMTLError(f"no row of split {split!r} has a label or a mask to evaluate against")
    return scorable


def evaluate_rows(predictor: Predictor, rows: Sequence[ManifestRow], n_overlays: int = N_OVERLAYS,
                  progress: bool = True, images: Sequence[Image] | None = None
                  ) -> tuple[list[CaseResult], list[plots.OverlayCase]]:
    """Run ``predictor`` over ``rows``: per-case results and up to ``n_overlays`` slices to draw.

    ``images``: the rows' images already read (and perhaps altered, as the robustness table does); by default
    each row is read here.

    Overlays come from rows with a ground-truth mask, those with a lesion first (then lesion-free ones,
    where a red contour is a false positive); at most ``n_overlays`` of each kind are kept while looping.
    """
    cases: list[CaseResult] = []
    with_lesion: list[plots.OverlayCase] = []
    without: list[plots.OverlayCase] = []
    for i, row in enumerate(tqdm(rows, desc="evaluate", unit="image", disable=not progress)):
        image = read_image(row.image) if images is None else images[i]
        analysis = analyze(image, predictor)  # the shipped path: a volume's lesion is kept inside its lungs
        mask = analysis.mask()
        truth = read_mask(row.mask, image).astype(bool) if row.mask else None
        name = Path(row.image).name
        case = score_case(name, row.label, analysis.prediction.probabilities, mask, truth)
        case.source, case.group = row.source, row.group
        cases.append(case)
        if mask is not None and truth is not None:
            keep = with_lesion if truth.any() else without
            if len(keep) < n_overlays:
                keep.append(overlay_case(f"{name} [{row.label or '?'}]", image, truth, mask))
    return cases, (with_lesion + without)[:n_overlays]


def evaluate(manifest: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike,
             split: str | None = "test", device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``split`` of ``manifest`` (None: every row); writes metrics.json and the
    figures to ``out`` and returns the metrics dict."""
    rows = select_rows(read_manifest(manifest), split)
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    cases, overlays = evaluate_rows(predictor, rows, progress=progress)
    result = compute_metrics(cases, predictor.decision.threshold if predictor.decision.binary else None)
    result["decision"] = predictor.decision.as_dict()
    result["manifest"] = str(manifest)
    result["checkpoint"] = str(checkpoint)
    result["split"] = split
    write_evaluation(result, out, overlays)
    return result
