"""``covid_mtl.evaluation.evaluate``: known metrics from a hand-made prediction set, and the real loop + CLI."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from covid_mtl.evaluation import evaluate as ev
from covid_mtl.errors import CovidMTLError
from covid_mtl.demo.phantom import make_phantom

PHANTOM_SHAPE = (4, 64, 64)


def write_phantom_manifest(folder: Path, per_split: dict[str, int], shape=PHANTOM_SHAPE) -> Path:
    """NIfTI phantoms (HU image + lesion mask) of all three kinds and a manifest.csv listing them.

    Each split gets ``n`` phantoms of every kind; seeds differ across rows. Also used by test_experiment.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows, seed = [], 0
    for split, n in per_split.items():
        for _ in range(n):
            for kind in ("covid", "normal", "other"):
                ph = make_phantom(kind, seed, shape=shape)
                img, msk = folder / f"{kind}_{seed}.nii.gz", folder / f"{kind}_{seed}_mask.nii.gz"
                nib.save(nib.Nifti1Image(ph.hu.transpose(2, 1, 0), ph.affine), img)
                nib.save(nib.Nifti1Image(ph.lesion.transpose(2, 1, 0), ph.affine), msk)
                rows.append({"image": img.name, "mask": msk.name, "label": kind, "split": split})
                seed += 1
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "mask", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest

# label, probabilities (covid, normal, other); the same set test_metrics works out by hand.
CASES = [
    ("covid", {"covid": 0.9, "normal": 0.1, "other": 0.2}),
    ("covid", [0.8, 0.3, 0.1]),
    ("normal", [0.7, 0.6, 0.1]),
    ("covid", [0.6, 0.1, 0.7]),
    ("other", [0.55, 0.2, 0.9]),
    ("non-covid", [0.4, 0.5, 0.3]),
    ("normal", [0.2, 0.9, 0.1]),
    ("other", [0.1, 0.3, 0.8]),
]


def _masks(case: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(pred, truth) for the first three cases; the rest have no ground-truth mask."""
    pred, truth = np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool)
    if case == 0:    # truth 4 voxels, prediction 2 of them + 2 elsewhere: Dice 2*2/8 = 0.5
        truth[0, 0, :4] = True
        pred[0, 0, :2] = pred[1, 3, :2] = True
    elif case == 1:  # perfect, 3 voxels: Dice 1
        truth[1, 1, :3] = pred[1, 1, :3] = True
    elif case == 2:  # normal CT with a 1-voxel false positive: Dice 0
        pred[0, 2, 2] = True
    else:
        return pred, None
    return pred, truth


def hand_made_result() -> dict:
    cases = [ev.score_case(f"case{i}", label, probs, *_masks(i)) for i, (label, probs) in enumerate(CASES)]
    return ev.compute_metrics(cases)


def test_compute_metrics_reproduces_hand_computed_values():
    r = hand_made_result()
    seg = r["segmentation"]
    assert seg["n_images"] == 3
    assert seg["dice_mean"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert seg["dice_mean_nonempty"] == pytest.approx(0.75)
    assert seg["dice_global"] == pytest.approx(2 * (2 + 3) / (4 + 4 + 3 + 3 + 1))
    b = r["covid_vs_rest"]
    assert b["auc"] == pytest.approx(14 / 15)
    assert b["threshold"] == pytest.approx(0.6)
    assert (b["accuracy"], b["sensitivity"], b["specificity"]) == pytest.approx((7 / 8, 1.0, 0.8))
    t = r["three_class"]
    assert t["confusion_matrix"] == [[2, 0, 1], [1, 1, 0], [0, 0, 2]]
    assert t["accuracy"] == pytest.approx(5 / 7)
    assert r["cases"][0]["probabilities"] == {"covid": 0.9, "normal": 0.1, "other": 0.2}
    assert r["cases"][3]["dice"] is None


def test_table_and_report_files(tmp_path):
    r = hand_made_result()
    table = ev.format_table(r)
    assert "Youden threshold 0.600" in table and "AUC 0.933" in table
    ci = r["covid_vs_rest"]["auc_ci95"]
    assert ci[0] < 14 / 15 <= ci[1] and f"(95% CI {ci[0]:.2f}-{ci[1]:.2f}, bootstrap over 8 patient groups)" in table
    assert "global 0.667" in table
    assert re.search(r"covid\s+3\s+0\.917\s+0\.667\s+0\.750\n", table)  # per-class: n, AUC, Sens, Spec
    assert re.search(r"normal\s+1\s+1\s+0\n", table)  # confusion-matrix row
    written = ev.write_evaluation(r, tmp_path)
    assert set(written) == {"metrics", "roc", "confusion_matrix"}  # no overlays passed
    back = json.loads((tmp_path / "metrics.json").read_text())
    assert back["covid_vs_rest"]["threshold"] == pytest.approx(0.6)
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_heads_missing_give_none():
    seg_only = [ev.score_case("a", "covid", None, *_masks(0))]
    r = ev.compute_metrics(seg_only)
    assert r["covid_vs_rest"] is None and r["three_class"] is None
    assert r["segmentation"]["dice_mean"] == pytest.approx(0.5)
    cls_only = [ev.score_case("a", "covid", [0.9, 0.1, 0.1], None, np.zeros((2, 2))),
                ev.score_case("b", "normal", [0.2, 0.9, 0.1], None, None)]
    r = ev.compute_metrics(cls_only)
    assert r["segmentation"] is None
    assert r["covid_vs_rest"]["auc"] == pytest.approx(1.0)
    assert "n/a" in ev.format_table(r)


def test_bad_inputs():
    with pytest.raises(CovidMTLError, match="differs"):
        ev.score_case("x", None, None, np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(CovidMTLError, match="lack P\\(covid\\)"):
        ev.probability_vector({"normal": 0.5, "other": 0.1})
    # a COVID-vs-rest model reports P(covid) only: its untrained outputs become NaN and are never scored
    vector = ev.probability_vector({"covid": 0.5})
    assert vector[0] == 0.5 and np.isnan(vector[1:]).all()
    result = ev.compute_metrics([ev.score_case("a", "covid", {"covid": 0.9}, None, None),
                                 ev.score_case("b", "non-covid", {"covid": 0.2}, None, None)], threshold=0.5)
    assert result["three_class"] is None and result["covid_vs_rest"]["auc"] == 1.0
    assert result["covid_vs_rest"]["at_model_threshold"]["accuracy"] == 1.0
    assert result["cases"][0]["probabilities"] == {"covid": 0.9}
    with pytest.raises(CovidMTLError, match="3 class probabilities"):
        ev.probability_vector([0.5, 0.5])


def _untrained_checkpoint(path: Path, config: str, tasks=None) -> Path:
    from covid_mtl.nets.checkpoint import save_checkpoint
    from covid_mtl.nets.config import get_config
    from covid_mtl.nets.factory import build_model

    return save_checkpoint(path, build_model(get_config(config), tasks))


def test_cli_evaluate_end_to_end(tmp_path, capsys):
    """The real loop: read_image, Predictor, metrics, figures; an untrained model still gives a full report."""
    from covid_mtl.cli import main

    manifest = write_phantom_manifest(tmp_path / "data", {"train": 1, "test": 1})
    ckpt = _untrained_checkpoint(tmp_path / "run" / "model.pt", "tiny")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(ckpt), "--split", "test",
               "--out", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "cases: 3" in printed and "Youden threshold" in printed and "confusion matrix" in printed
    result = json.loads((out / "metrics.json").read_text())
    assert result["n_cases"] == 3 and result["split"] == "test"
    assert result["segmentation"]["n_images"] == 3
    assert 0.0 <= result["segmentation"]["dice_global"] <= 1.0
    assert 0.0 <= result["covid_vs_rest"]["auc"] <= 1.0
    assert sum(map(sum, result["three_class"]["confusion_matrix"])) == 3
    for name in ("roc.png", "confusion_matrix.png", "overlays.png"):
        assert (out / name).stat().st_size > 1000, name


def test_cli_evaluate_bad_input(tmp_path, capsys):
    from covid_mtl.cli import main

    manifest = write_phantom_manifest(tmp_path / "data", {"train": 1})
    ckpt = _untrained_checkpoint(tmp_path / "model.pt", "tiny")
    rc = main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no rows in split 'test'" in capsys.readouterr().err
    # a mask on another grid than its image is refused, naming the file
    other = tmp_path / "data" / "covid_0_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), np.eye(4)), other)
    rc = main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(ckpt), "--split", "train",
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "covid_0_mask.nii.gz: mask shape" in capsys.readouterr().err
