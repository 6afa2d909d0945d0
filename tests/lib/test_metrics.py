"""Metrics against hand-computed values (worked out in the comments)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from covid_mtl.evaluation import metrics, plots
from covid_mtl.errors import CovidMTLError

# Eight cases: label, P(covid), and the three sigmoid outputs (covid, normal, other).
LABELS = ["covid", "covid", "normal", "covid", "other", "non-covid", "normal", "other"]
PROBS = np.array([
    [0.9, 0.1, 0.2],   # covid  -> argmax covid
    [0.8, 0.3, 0.1],   # covid  -> covid
    [0.7, 0.6, 0.1],   # normal -> covid   (wrong)
    [0.6, 0.1, 0.7],   # covid  -> other   (wrong)
    [0.55, 0.2, 0.9],  # other  -> other
    [0.4, 0.5, 0.3],   # non-covid: negative for COVID-vs-rest, excluded from 3-class
    [0.2, 0.9, 0.1],   # normal -> normal
    [0.1, 0.3, 0.8],   # other  -> other
])


def test_dice_hand_values_and_empty_convention():
    pred = np.array([[1, 1, 0, 0]])
    truth = np.array([[1, 0, 1, 0]])
    assert metrics.dice_score(pred, truth) == pytest.approx(0.5)  # 2*1 / (2+2)
    empty = np.zeros((2, 3, 4))
    assert metrics.dice_score(empty, empty) == 1.0  # both empty: nothing to find, nothing found
    one = empty.copy()
    one[0, 0, 0] = 1
    assert metrics.dice_score(one, empty) == 0.0  # false-positive lesion on a lesion-free image
    assert metrics.dice_score(empty, one) == 0.0


def test_global_dice_and_summary():
    a = metrics.mask_stats(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))  # inter 1, pred 2, true 2
    b = metrics.mask_stats(np.zeros(4), np.zeros(4))                        # empty / empty
    c = metrics.mask_stats(np.array([1, 1, 1, 0]), np.zeros(4))             # pred 3, true 0
    assert (a.intersection, a.pred_voxels, a.true_voxels) == (1, 2, 2)
    assert metrics.global_dice([a, b, c]) == pytest.approx(2 / 7)  # 2*1 / (2+2+3)
    s = metrics.dice_summary([a, b, c])
    assert s["dice_mean"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["dice_mean_nonempty"] == pytest.approx(0.5)
    assert (s["n_images"], s["n_nonempty"]) == (3, 1)
    assert metrics.global_dice([]) is None


def test_dice_shape_mismatch_is_an_error():
    with pytest.raises(CovidMTLError, match="shape"):
        metrics.dice_score(np.zeros((2, 2)), np.zeros((2, 3)))


def test_binary_metrics_hand_computed():
    b = metrics.binary_metrics(LABELS, PROBS[:, 0])
    # Positives 0.9, 0.8, 0.6; negatives 0.7, 0.55, 0.4, 0.2, 0.1.
    # Pairs ranked correctly: 5 + 5 + 4 = 14 of 15.
    assert b.auc == pytest.approx(14 / 15)
    # J per threshold: 0.9 -> 1/3, 0.8 -> 2/3, 0.7 -> 2/3-1/5, 0.6 -> 1-1/5 = 0.8 (max), 0.55 -> 0.6 ...
    assert b.threshold == pytest.approx(0.6)
    assert b.counts == {"tp": 3, "fn": 0, "tn": 4, "fp": 1}
    assert b.accuracy == pytest.approx(7 / 8)
    assert b.sensitivity == pytest.approx(1.0)
    assert b.specificity == pytest.approx(0.8)
    # At 0.5 the 0.55 "other" is also called COVID.
    assert b.at_0_5["counts"] == {"tp": 3, "fn": 0, "tn": 3, "fp": 2}
    assert b.at_0_5["specificity"] == pytest.approx(0.6)
    assert (b.n, b.n_positive) == (8, 3)
    d = b.as_dict()
    assert d["thresholds"][0] is None  # roc_curve's +inf, JSON-safe
    assert "fpr" not in b.as_dict(with_curve=False)


def test_youden_ties_pick_highest_threshold():
    # J = 0.5 at both 0.9 and 0.7; the stricter threshold wins.
    b = metrics.binary_metrics(["covid", "normal", "covid", "normal"], [0.9, 0.8, 0.7, 0.1])
    assert b.threshold == pytest.approx(0.9)
    assert b.auc == pytest.approx(0.75)


def test_binary_metrics_single_class_has_no_roc():
    b = metrics.binary_metrics(["normal", "other"], [0.2, 0.7])
    assert b.auc is None and b.threshold is None
    assert b.at_0_5["specificity"] == pytest.approx(0.5)


def test_bad_classification_input():
    with pytest.raises(CovidMTLError, match="unknown class label"):
        metrics.binary_metrics(["covid", "flu"], [0.5, 0.5])
    with pytest.raises(CovidMTLError, match="NaN"):
        metrics.binary_metrics(["covid", "normal"], [np.nan, 0.5])
    with pytest.raises(CovidMTLError, match="scores"):
        metrics.binary_metrics(["covid", "normal"], [0.5])
    with pytest.raises(CovidMTLError, match="shape"):
        metrics.multiclass_metrics(["covid", "normal"], np.zeros((2, 2)))


def test_multiclass_metrics_hand_computed():
    m = metrics.multiclass_metrics(LABELS, PROBS)
    assert m["n"] == 7  # non-covid excluded
    assert m["confusion_matrix"] == [[2, 0, 1], [1, 1, 0], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    pc = m["per_class"]
    assert pc["covid"]["sensitivity"] == pytest.approx(2 / 3)
    assert pc["covid"]["specificity"] == pytest.approx(3 / 4)
    assert pc["normal"]["sensitivity"] == pytest.approx(0.5)
    assert pc["normal"]["specificity"] == pytest.approx(1.0)
    assert pc["other"]["sensitivity"] == pytest.approx(1.0)
    assert pc["other"]["specificity"] == pytest.approx(0.8)
    # covid column over the 7 rows: positives 0.9, 0.8, 0.6 vs 0.7, 0.55, 0.2, 0.1 -> 11/12.
    assert pc["covid"]["auc"] == pytest.approx(11 / 12)
    assert pc["normal"]["auc"] == pytest.approx(1.0)
    assert pc["other"]["auc"] == pytest.approx(1.0)


def test_multiclass_needs_two_classes():
    assert metrics.multiclass_metrics(["covid", "non-covid"], PROBS[:2]) is None


def _png_pixels(path) -> np.ndarray:
    with PILImage.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(int)


def test_plots_write_pngs_with_content(tmp_path):
    b = metrics.binary_metrics(LABELS, PROBS[:, 0])
    i = b.thresholds.index(b.threshold)
    roc = plots.plot_roc(b.fpr, b.tpr, tmp_path / "roc.png", auc=b.auc, youden=(b.fpr[i], b.tpr[i], b.threshold))
    assert _png_pixels(roc).shape[:2] == (500, 500)
    m = metrics.multiclass_metrics(LABELS, PROBS)
    cm = plots.plot_confusion_matrix(m["confusion_matrix"], m["classes"], tmp_path / "cm.png")
    assert _png_pixels(cm).std() > 0

    img = np.random.default_rng(0).normal(size=(32, 32))
    truth = np.zeros((32, 32))
    truth[8:16, 8:16] = 1
    pred = np.zeros((32, 32))
    pred[18:28, 18:28] = 1
    cases = [plots.OverlayCase("a", img, truth, pred), plots.OverlayCase("empty", img, None, np.zeros((32, 32)))]
    px = _png_pixels(plots.plot_overlays(cases, tmp_path / "sub" / "overlays.png"))
    red = (px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] < 60)
    green = (px[..., 1] > 200) & (px[..., 0] < 60) & (px[..., 2] < 60)
    assert red.sum() > 20 and green.sum() > 20  # both contours were drawn


def test_auc_interval_resamples_patients_not_slices():
    rng = np.random.default_rng(1)
    truth = np.repeat([True] * 6 + [False] * 6, 10)  # 12 patients, 10 near-identical slices each
    patient_score = np.r_[rng.uniform(0.3, 1.0, 6), rng.uniform(0.0, 0.7, 6)]
    scores = np.repeat(patient_score, 10) + rng.normal(0, 1e-3, truth.size)
    groups = np.repeat(np.arange(12), 10)
    by_patient = metrics.grouped_bootstrap_auc(truth, scores, groups)
    by_slice = metrics.grouped_bootstrap_auc(truth, scores)  # pretends 120 independent cases
    auc = metrics.binary_metrics(["covid" if t else "non-covid" for t in truth], scores, groups).auc
    assert by_patient[0] <= auc <= by_patient[1]
    # 12 observations, not 120: the honest interval is clearly wider
    assert (by_patient[1] - by_patient[0]) > 1.8 * (by_slice[1] - by_slice[0])
    assert metrics.grouped_bootstrap_auc(truth, scores, groups) == by_patient  # seeded


def test_auc_interval_needs_two_patients_per_class():
    truth = np.array([True, True, False, False])
    assert metrics.grouped_bootstrap_auc(truth, np.array([0.9, 0.8, 0.2, 0.1]), ["a", "a", "b", "c"]) is None
    assert metrics.grouped_bootstrap_auc(truth, np.array([0.9, 0.8, 0.2, 0.1]), ["a", "d", "b", "c"]) == [1.0, 1.0]


def test_auc_interval_counts_ties_half():
    truth = np.array([True, True, False, False, True, False])
    assert metrics.grouped_bootstrap_auc(truth, np.full(6, 0.3)) == [0.5, 0.5]
