"""The volume rule's evidence: how much of the lungs the model paints on scans with and without COVID-19.

A whole chest CT is called COVID-19 only when the classifier says so *and* the lesion kept inside the lungs
covers at least ``MIN_INVOLVED_PERCENT`` of the lung volume (``covid_mtl.nets.decision``). This runs the one
analysis (``covid_mtl.measure.analysis``) on

* the CT scans without known pneumonia: the three whole-chest LIDC series and the small real scans in
  ``../shared/data/real_ct`` (HU);
* the 20 COVID-19 CT scans of the Inf-Net training portion in ``../shared/data/train`` (``infnet_unlabeled``: a
  subset of each scan's slices as 8-bit lung-window crops, in slice-number order, resized to the scan's median
  size). They are not in HU, so no lung mask: their "lung" is the dark part of the crops (below the stack's Otsu
  threshold: aerated lung, which fills a lung crop), and the involvement is the predicted lesion over that plus
  the lesion. Their Semi-Inf-Net pseudo masks give the same figure as a reference (predicted masks, not ground
  truth),

prints per scan P(covid), the percent of lung the model's kept lesion covers and the call with and without the
rule, then for a range of cut-offs how many COVID-19 scans would still be called COVID-19 and how many scans
without pneumonia would be, and writes ``out/bench/volume_rule.json``. Usage::

    python -m bench.volume_rule [--checkpoint PATH]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.common import REAL_CT, ROOT, save

TRAIN = ROOT.parent / "shared" / "data" / "train"
INFNET = TRAIN / "infnet_unlabeled"
CLEAN_CASES = [
    "full_chest/lidc0001", "full_chest/lidc0002", "full_chest/lidc0003",
    "totalsegmentator_example/example_ct.nii.gz",
    "totalsegmentator_example/pulmonary_report_ct_cropped.nii.gz",
]
CUTOFFS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)


def infnet_volumes():
    """``(name, Image, pseudo_mask)`` per Inf-Net COVID-19 scan (8-bit slices stacked, see above)."""
    from PIL import Image as PILImage

    from covid_mtl.image import Image

    scans: dict[str, list] = defaultdict(list)
    for path in (INFNET / "Imgs").glob("*.jpg"):
        volume, number = path.stem.rsplit("_", 1)
        scans[volume].append((int(number), path))
    for volume, slices in sorted(scans.items()):
        slices.sort()
        images = [PILImage.open(p).convert("L") for _, p in slices]
        masks = [PILImage.open(INFNET / "PseudoGT_model_generated" / f"{p.stem}.png").convert("L") for _, p in slices]
        h = int(np.median([im.height for im in images]))
        w = int(np.median([im.width for im in images]))
        u8 = np.stack([np.asarray(im.resize((w, h), PILImage.BILINEAR), np.float32) for im in images])
        pseudo = np.stack([np.asarray(m.resize((w, h), PILImage.NEAREST)) > 127 for m in masks])
        yield volume.replace("Data-1_", ""), Image(u8, None, None, False, volume, bit_depth=8), pseudo


def involvement(lesion: np.ndarray, lung: np.ndarray) -> float | None:
    """Percent of (lung or lesion) voxels that are lesion."""
    lung = lung > 0
    whole = lung | (lesion > 0)
    return None if not whole.any() else 100.0 * float((lesion > 0)[whole].sum()) / float(whole.sum())


def dark_part(image) -> np.ndarray:
    from skimage.filters import threshold_otsu

    return image.array < threshold_otsu(image.array)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: the packaged model")
    args = parser.parse_args(argv)

    from covid_mtl.io import read_image
    from covid_mtl.measure.analysis import analyze
    from covid_mtl.nets.packaged import packaged_model_path
    from covid_mtl.predict.predictor import Predictor

    checkpoint = args.checkpoint or packaged_model_path()
    predictor = Predictor.from_checkpoint(checkpoint, device="auto")
    decision = predictor.decision
    print(f"checkpoint {checkpoint}: {decision.as_dict()}")
    rows = []

    def run(kind: str, name: str, image, pseudo=None) -> None:
        analysis = analyze(image, predictor)
        result = analysis.result
        p = (result["probabilities"] or {}).get("covid")
        measures = result["quantification"] or {}
        row = {"kind": kind, "name": name, "shape": list(image.shape), "p_covid": p,
               "classifier_call": None if p is None else ("covid" if p >= decision.threshold else "non-covid"),
               "percent_involved": measures.get("percent_involved"), "lesion_ml": measures.get("lesion_ml"),
               "lung_ml": measures.get("lung_ml"), "label": result["label"]}
        if pseudo is not None:  # no HU, no lung mask: the dark part of the crops stands for the lungs
            dark = dark_part(image)
            row["percent_involved"] = involvement(analysis.mask(), dark)
            row["pseudo_percent_involved"] = involvement(pseudo, dark)
            held = decision.held_back({"covid": p}, row["percent_involved"]) if p is not None else False
            row["label"] = "non-covid" if held else row["classifier_call"]
        rows.append(row)
        pct = row["percent_involved"]
        print(f"{kind:<6} {name[:52]:<52} P(covid) {p if p is None else round(p, 3)!s:<6} "
              f"involved {'n/a' if pct is None else f'{pct:6.2f} %'}  "
              f"pseudo {row.get('pseudo_percent_involved') or float('nan'):6.2f} %  -> {result['label']}", flush=True)

    for rel in CLEAN_CASES:
        if (REAL_CT / rel).exists():
            run("clean", rel, read_image(REAL_CT / rel))
    if not REAL_CT.is_dir():
        print(f"{REAL_CT} absent: scans without pneumonia skipped")
    if (INFNET / "Imgs").is_dir():
        for name, image, pseudo in infnet_volumes():
            run("covid", name, image, pseudo)
    else:
        print(f"{INFNET} absent: COVID-19 scans skipped")

    print(f"\ncut-off on percent involved (classifier call at P(covid) >= {decision.threshold:.2f} as well):")
    sweep = []
    for cut in CUTOFFS:
        entry = {"cutoff_percent": cut}
        for kind in ("covid", "clean"):
            chosen = [r for r in rows if r["kind"] == kind and r["p_covid"] is not None]
            called = [r for r in chosen if r["classifier_call"] == "covid" and (r["percent_involved"] or 0) >= cut]
            entry[f"{kind}_called_covid"] = len(called)
            entry[f"{kind}_scans"] = len(chosen)
        sweep.append(entry)
        print(f"  >= {cut:4.2f} %: COVID-19 scans called COVID-19 {entry['covid_called_covid']}/{entry['covid_scans']}"
              f"   scans without pneumonia called COVID-19 {entry['clean_called_covid']}/{entry['clean_scans']}")
    save("volume_rule", {"checkpoint": str(checkpoint), "decision": decision.as_dict(), "rows": rows,
                         "sweep": sweep})
    return 0


if __name__ == "__main__":
    sys.exit(main())
