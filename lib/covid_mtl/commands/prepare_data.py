"""``covid-mtl prepare-data``: turn the public COVID-19 CT training sets (COVID-CT, MedSeg via Inf-Net, Inf-Net's
COVID volume slices) in their own folder layouts into OUT/manifest.csv with binary masks and a patient-grouped
validation split."""
from __future__ import annotations

import argparse
import warnings

MAX_NOTES_SHOWN = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare-data",
        help="build a manifest (labels, binary masks, grouped train/val split) from the public COVID-19 CT sets",
        description=__doc__ + " Layouts, groups and licences: see covid_mtl.train.prepare_data.",
    )
    parser.add_argument("--data", required=True,
                        help="folder holding any of CT_COVID/ + CT_NonCOVID/, Doctor-label/{Imgs,GT}, "
                             "MultiClassInfection-Train/{Imgs,GT}, Imgs/ + PseudoGT_model_generated/ (or a parent)")
    parser.add_argument("--out", required=True, help="output folder: manifest.csv, summary.json, masks/")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of each source's rows for validation, whole patients/groups (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation draw (default 0)")
    parser.add_argument("--pseudo-masks", action="store_true",
                        help="attach Semi-Inf-Net's predicted masks to Inf-Net training rows (masks/pseudo/)")
    parser.add_argument("--negative-scans", nargs="+", default=[], metavar="SCAN",
                        help="whole chest CT scans without pneumonia (DICOM folders, NIfTI/NRRD files in HU): "
                             "training rows with an empty lesion mask and no class")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.prepare_data import format_summary, prepare_data

    with warnings.catch_warnings():
        # prepare-data's own summary warning: its notes are printed below, in full up to a limit
        warnings.filterwarnings("ignore", message="prepare-data:")
        result = prepare_data(args.data, args.out, val_fraction=args.val_fraction, seed=args.seed,
                              pseudo_masks=args.pseudo_masks, progress=not args.no_progress,
                              negative_scans=args.negative_scans)
    for note in result.warnings[:MAX_NOTES_SHOWN]:
        print(f"warning: {note}")
    if len(result.warnings) > MAX_NOTES_SHOWN:
        print(f"warning: ... {len(result.warnings) - MAX_NOTES_SHOWN} more in {result.summary_path}")
    print(format_summary(result.summary))
    print(f"wrote {result.manifest} and {result.summary_path}")
    return 0
