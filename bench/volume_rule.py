"""Volume-level answers of a model on whole scans: the check behind the model card's volume table.

The served model is trained on 2D slices and answers for a volume by aggregating slice probabilities
(``covid_mtl.predict.aggregate``). This prints the volume-level P(covid) and the statement for

* the real CT scans in ``../shared/data/real_ct`` (HU; no known COVID-19 findings: P(covid) should stay low),
* volumes assembled from the Inf-Net slices of each COVID-19 CT scan in ``../shared/data/train`` (8-bit
  slices in file order, resized to the scan's median slice size; every one is a COVID-19 patient), marked
  ``val`` when the manifest held that scan out of training,

and writes ``out/bench/volume_rule.json``. Usage::

    python -m bench.volume_rule [--checkpoint PATH] [--manifest out/data/manifest.csv]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.common import REAL_CT, ROOT, save

REAL_CT_CASES = [
    "totalsegmentator_example/example_ct.nii.gz",
    "totalsegmentator_example/pulmonary_report_ct_cropped.nii.gz",
    "totalsegmentator_example/example_ct_dicom",
    "pydicom_ct_small/CT_small.dcm",
]


def assembled_volumes(manifest: Path):
    """``(name, split, Image)`` for each Inf-Net scan of the manifest, slices stacked in slice-number order."""
    from PIL import Image as PILImage

    from covid_mtl.image import Image
    from covid_mtl.io.manifest import read_manifest

    scans: dict[str, list] = defaultdict(list)
    for row in read_manifest(manifest):
        if row.source == "infnet":
            stem = Path(row.image).stem
            volume, number = stem.rsplit("_", 1)
            scans[volume].append((int(number), row.image, row.split))
    for volume, slices in sorted(scans.items()):
        slices.sort()
        images = [PILImage.open(path).convert("L") for _, path, _ in slices]
        h = int(np.median([im.height for im in images]))
        w = int(np.median([im.width for im in images]))
        array = np.stack([np.asarray(im.resize((w, h), PILImage.BILINEAR), np.float32) for im in images])
        yield volume.replace("Data-1_", ""), slices[0][2], Image(array, None, None, False, volume, bit_depth=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: the packaged model")
    parser.add_argument("--manifest", default=str(ROOT / "out" / "data" / "manifest.csv"),
                        help="prepare-data manifest naming the Inf-Net slices and their split")
    args = parser.parse_args(argv)

    from covid_mtl.io import read_image
    from covid_mtl.nets.packaged import packaged_model_path
    from covid_mtl.predict.predictor import Predictor

    checkpoint = args.checkpoint or packaged_model_path()
    predictor = Predictor.from_checkpoint(checkpoint, device="auto")
    rows = []

    def run(kind: str, name: str, split: str, image) -> None:
        prediction = predictor.predict(image)
        rows.append({"kind": kind, "name": name, "split": split, "shape": list(image.shape),
                     "p_covid": round(prediction.probabilities["covid"], 3), "label": prediction.label,
                     "statement": prediction.statement,
                     "lesion_share": round(float(prediction.mask.mean()), 4) if prediction.mask is not None else None})
        print(f"{kind:<10} {name[:58]:<58} {split:<5} P(covid) {rows[-1]['p_covid']:.3f} -> {prediction.label}",
              flush=True)

    print(f"checkpoint {checkpoint} ({predictor.decision.as_dict()})")
    if REAL_CT.is_dir():
        for rel in REAL_CT_CASES:
            if (REAL_CT / rel).exists():
                run("real_ct", rel, "-", read_image(REAL_CT / rel))
    else:
        print(f"{REAL_CT} absent: real CT rows skipped")
    manifest = Path(args.manifest)
    if manifest.is_file():
        for name, split, image in assembled_volumes(manifest):
            run("infnet", name, split, image)
    else:
        print(f"{manifest} absent (run `covid-mtl prepare-data --data ../shared/data/train --out out/data`): "
              "assembled COVID-19 volumes skipped")
    covid = [r["p_covid"] for r in rows if r["kind"] == "infnet"]
    clean = [r["p_covid"] for r in rows if r["kind"] == "real_ct"]
    if covid:
        print(f"COVID-19 scans (Inf-Net): called COVID {sum(r['label'] == 'covid' for r in rows if r['kind'] == 'infnet')}"
              f" of {len(covid)}, median P(covid) {np.median(covid):.3f}")
    if clean:
        print(f"real CT without COVID findings: called COVID {sum(r['label'] == 'covid' for r in rows if r['kind'] == 'real_ct')}"
              f" of {len(clean)}, median P(covid) {np.median(clean):.3f}")
    save("volume_rule", {"checkpoint": str(checkpoint), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
