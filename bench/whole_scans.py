"""The whole-scan table, and the check that the classifier did not learn "a Hounsfield scan is not COVID-19".

1. **Whole scans.** The six whole chest CT series in ``../shared/data/real_ct/full_chest`` through the one analysis
   (``covid_mtl.measure.analysis.analyze``): lung and lesion volumes, percent of the lungs involved, P(COVID-19)
   and the call. Five have no known pneumonia (they must stay under ``MAX_CLEAN_ML`` of lesion and not be called
   COVID-19); ricord0082 is a COVID-19 patient (it must be called COVID-19, with lesion where its README describes
   ground glass: the upper and middle zones, per zone below). The column "trained on" says which scans the model
   learnt as negatives (the ``hu_scan`` rows of ``--manifest``).
2. **Windowed HU vs 8-bit exports.** The slices each scan sends to the network, cut to the same lung box, are also
   exported as 8-bit crops, as the public COVID-19 slice collections were (at W 1500 / L -600, the window the
   model uses, and at two narrower lung windows), and classified as such 2D images. A classifier that learnt
   the look of a Hounsfield scan as "non-COVID" answers lower P(COVID-19) for the HU slices than for their
   exports. Printed: mean P per path and the mean absolute per-slice difference; ``SHORTCUT_TOLERANCE`` (0.10)
   is the stated limit.

Usage::

    python -m bench.whole_scans [--checkpoint PATH] [--compare PATH] [--manifest PATH] [--slices N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.common import REAL_CT, ROOT, save

FULL_CHEST = REAL_CT / "full_chest"
SCANS = ("lidc0001", "lidc0002", "lidc0003", "lungdx_a0001", "lungdx_a0002", "ricord0082")
COVID_SCANS = ("ricord0082",)
MAX_CLEAN_ML = 30.0
EXPORTS = {"W1500/L-600": (1500.0, -600.0), "W1200/L-600": (1200.0, -600.0), "W1000/L-700": (1000.0, -700.0)}
SHORTCUT_TOLERANCE = 0.10
MANIFEST = ROOT / "out" / "packaged-model" / "data" / "manifest.csv"


def trained_scans(manifest: Path) -> set[str]:
    """Names of the scans a manifest teaches as negatives (its ``hu_scan`` rows)."""
    if not manifest.exists():
        return set()
    from covid_mtl.io.manifest import read_manifest

    return {Path(r.image).name.split(".")[0] for r in read_manifest(manifest) if r.source == "hu_scan"}


def measure_scan(predictor, name: str, n_slices: int) -> dict:
    from covid_mtl.image import Image
    from covid_mtl.io import read_image
    from covid_mtl.io.normalize import lung_window_u8
    from covid_mtl.measure.analysis import analyze

    analysis = analyze(read_image(FULL_CHEST / name), predictor)
    q = analysis.result["quantification"]
    p = analysis.result["probabilities"]["covid"]
    zones = {zone: round(float(v.get("percent_involved", 0.0)), 1) for zone, v in (q.get("zones") or {}).items()
             if isinstance(v, dict)}
    canon, pred = analysis.canonical, analysis.prediction
    ran = np.flatnonzero(pred.lung_slices)
    chosen = ran[np.linspace(0, len(ran) - 1, min(n_slices, len(ran))).round().astype(int)] if len(ran) else ran
    y0, y1, x0, x1 = pred.geometry["lung_box_yx"]  # the box the network saw (the lung labels may have grown since)
    p_hu = pred.slice_probabilities[chosen, 0]
    p_export = {}
    for window, (width, level) in EXPORTS.items():
        values = []
        for z in chosen:
            crop = lung_window_u8(canon.array[z, y0:y1, x0:x1], (level - width / 2, level + width / 2))
            export = Image(crop[None].astype(np.float32), None, None, False, f"{name}-{z}.png", bit_depth=8)
            values.append(predictor.predict(export).probabilities["covid"])
        p_export[window] = np.asarray(values, float)
    return {
        "scan": name, "lung_ml": q["lung_ml"], "lesion_ml": q["lesion_ml"],
        "percent_involved": q["percent_involved"], "p_covid": p, "call": analysis.result["label"],
        "zones": zones, "slices_compared": len(chosen), "p_hu_mean": float(np.mean(p_hu)) if len(p_hu) else None,
        "p_export_mean": {w: float(v.mean()) for w, v in p_export.items() if v.size},
        "abs_difference": {w: float(np.abs(v - p_hu).mean()) for w, v in p_export.items() if v.size},
    }


def measure(checkpoint: str | None, n_slices: int) -> list[dict]:
    from covid_mtl.nets.packaged import packaged_model_path
    from covid_mtl.predict.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint or packaged_model_path())
    return [measure_scan(predictor, name, n_slices) for name in SCANS if (FULL_CHEST / name).exists()]


def print_tables(label: str, rows: list[dict], trained: set[str]) -> None:
    print(f"\n{label}")
    print(f"{'scan':<14}{'pneumonia':>10}{'trained on':>11}{'lung mL':>9}{'lesion mL':>10}{'% lungs':>8}"
          f"{'P(covid)':>9}  call")
    for r in rows:
        covid = r["scan"] in COVID_SCANS
        flag = ("" if covid or r["lesion_ml"] < MAX_CLEAN_ML else f"  <- over {MAX_CLEAN_ML:g} mL") + (
            "  <- wrong call" if (r["call"] == "covid") != covid else "")
        print(f"{r['scan']:<14}{'COVID-19' if covid else 'none known':>10}{'yes' if r['scan'] in trained else 'no':>11}"
              f"{r['lung_ml']:>9,.0f}{r['lesion_ml']:>10.1f}{r['percent_involved']:>8.2f}{r['p_covid']:>9.2f}"
              f"  {r['call']}{flag}")
    for r in rows:
        if r["scan"] in COVID_SCANS and r["zones"]:
            print(f"{r['scan']} percent involved per zone: " + ", ".join(f"{z} {v}" for z, v in r["zones"].items()))
    print(f"\nP(COVID-19) of the same slices, windowed HU vs 8-bit exports (tolerance: mean |difference| <= "
          f"{SHORTCUT_TOLERANCE:.2f})")
    print(f"{'scan':<14}{'slices':>7}{'HU':>7}" + "".join(f"{w:>14}{'|diff|':>8}" for w in EXPORTS))
    worst = 0.0
    for r in rows:
        cells = "".join(f"{r['p_export_mean'].get(w, float('nan')):>14.3f}{r['abs_difference'].get(w, float('nan')):>8.3f}"
                        for w in EXPORTS)
        worst = max([worst, *r["abs_difference"].values()])
        print(f"{r['scan']:<14}{r['slices_compared']:>7}{r['p_hu_mean'] or float('nan'):>7.3f}{cells}")
    print(f"largest mean |difference|: {worst:.3f} ({'within' if worst <= SHORTCUT_TOLERANCE else 'OVER'} the "
          f"tolerance)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.whole_scans", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="model file (default: the packaged model)")
    parser.add_argument("--compare", help="a second model file, measured the same way")
    parser.add_argument("--manifest", default=str(MANIFEST), help="the model's training manifest (its hu_scan rows)")
    parser.add_argument("--slices", type=int, default=16, help="slices per scan for the HU-vs-export check")
    args = parser.parse_args(argv)
    if not FULL_CHEST.is_dir():
        print(f"bench.whole_scans: skipped (no scans at {FULL_CHEST})")
        return 0
    trained = trained_scans(Path(args.manifest))
    results = {"model": measure(args.checkpoint, args.slices)}
    print_tables(f"model: {args.checkpoint or 'packaged'}", results["model"], trained)
    if args.compare:
        results["compare"] = measure(args.compare, args.slices)
        print_tables(f"compare: {args.compare} (trained on no scan)", results["compare"], set())
    save("whole_scans", {"results": results, "trained_on": sorted(trained)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
