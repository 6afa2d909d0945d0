"""The robustness table: validation Dice and AUC for the plain slices and for each display re-map.

Runs the one analysis (``covid_mtl.evaluation.evaluate_rows``) on the validation rows of a prepared manifest
(MedSeg slices with radiologist masks for Dice, COVID-CT slices for AUC), once as stored and once through each
re-map of ``covid_mtl.evaluation.robustness.REMAPS`` (gamma, contrast, noise, blur, sharpen), and prints Dice,
AUC and their change from plain. A re-map whose Dice falls by more than ``--tolerance`` (0.03) is flagged.
Writes ``out/bench/robustness.json``. The manifest is made when absent (``covid-mtl prepare-data``, seconds)::

    python -m bench.robustness [--checkpoint PATH] [--manifest PATH] [--compare PATH]

``--compare`` adds a second checkpoint's table (e.g. the previous packaged model); ``robustness.png`` beside the
JSON shows both as bars.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import ROOT, save

TRAIN = ROOT.parent / "shared" / "data" / "train"
MANIFEST = ROOT / "out" / "packaged-model" / "data" / "manifest.csv"


def manifest_path(given: str | None) -> Path | None:
    """The manifest to read: ``given``, else the packaged model's, prepared from ``../shared`` when absent."""
    if given:
        return Path(given)
    if not MANIFEST.exists():
        if not TRAIN.is_dir():
            return None
        from covid_mtl.train.prepare_data import prepare_data
        prepare_data(TRAIN, MANIFEST.parent, pseudo_masks=True, progress=False)
    return MANIFEST


def measure(checkpoint: str | None, manifest: Path) -> tuple[str, list[dict]]:
    """(model version, table rows) of one model."""
    from covid_mtl.evaluation.robustness import robustness, table_rows
    from covid_mtl.io.manifest import read_manifest
    from covid_mtl.measure.summary import model_version
    from covid_mtl.predict.predictor import Predictor

    from covid_mtl.nets.packaged import packaged_model_path

    predictor = Predictor.from_checkpoint(checkpoint or packaged_model_path())
    rows = [r for r in read_manifest(manifest) if r.split == "val" and r.source in ("medseg", "covid_ct")
            and (r.label or r.mask)]
    return model_version(predictor), table_rows(robustness(predictor, rows, progress=True))


def _f(value: float | None, signed: bool = False) -> str:
    return "  n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.robustness", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="model file (default: the packaged model)")
    parser.add_argument("--compare", help="a second model file, shown beside the first")
    parser.add_argument("--manifest", help="prepared manifest (default: out/packaged-model/data, made if absent)")
    parser.add_argument("--tolerance", type=float, default=0.03, help="largest accepted fall in Dice")
    args = parser.parse_args(argv)
    manifest = manifest_path(args.manifest)
    if manifest is None:
        print(f"bench.robustness: skipped (no training data at {TRAIN})")
        return 0
    models = {"model": args.checkpoint or "packaged"}
    if args.compare:
        models["compare"] = args.compare
    measured = {key: measure(None if path == "packaged" else path, manifest) for key, path in models.items()}
    tables = {key: rows for key, (_, rows) in measured.items()}
    names = {key: f"{version} ({key})" for key, (version, _) in measured.items()}
    print(f"\nrobustness on the validation rows of {manifest} (Dice: MedSeg, mean per slice; AUC: COVID-CT)")
    for key, path in models.items():
        print(f"\n{names[key]}: {path}")
        print(f"{'re-map':<16}{'Dice':>7}{'change':>8}{'global':>8}{'AUC':>7}{'change':>8}")
        for row in tables[key]:
            flag = ("  <- Dice falls more than the tolerance"
                    if row["dice_change"] is not None and row["dice_change"] < -args.tolerance else "")
            print(f"{row['remap']:<16}{_f(row['dice']):>7}{_f(row['dice_change'], True):>8}"
                  f"{_f(row['dice_global']):>8}{_f(row['auc']):>7}{_f(row['auc_change'], True):>8}{flag}")
        worst = min((r["dice_change"] for r in tables[key] if r["dice_change"] is not None), default=None)
        print(f"largest Dice fall: {_f(worst, True)} (tolerance {args.tolerance:.2f})")
    from covid_mtl.evaluation.plots import plot_robustness

    path = save("robustness", {"manifest": str(manifest), "models": models, "versions": names, "tables": tables,
                               "tolerance": args.tolerance})
    figure = plot_robustness({names[k]: rows for k, rows in tables.items()}, path.with_suffix(".png"),
                             tolerance=args.tolerance)
    print(f"wrote {path} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
