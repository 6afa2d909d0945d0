"""``covid-mtl evaluate``: metrics.json, a table and ROC / confusion / overlay figures for one split."""
from __future__ import annotations

import argparse

from ..io.manifest import SPLITS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a trained model on one split of a manifest",
                              description=__doc__)
    p.add_argument("--manifest", required=True, help="CSV with image, mask, label, split columns")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (DIR/model.pt)")
    p.add_argument("--split", default="test", choices=SPLITS + ("all",),
                   help="rows to evaluate (default: test; 'all' ignores the split column)")
    p.add_argument("--out", required=True, help="folder for metrics.json, roc.png, confusion_matrix.png, overlays.png")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate, format_table  # torch / monai load only when the command runs

    result = evaluate(args.manifest, args.checkpoint, args.out,
                      split=None if args.split == "all" else args.split,
                      device=args.device, progress=not args.no_progress)
    print(format_table(result))
    print(f"written to {args.out}")
    return 0
