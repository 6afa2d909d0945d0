"""``covid-mtl experiment``: train and evaluate the paper's task combinations and baselines on one split."""
from __future__ import annotations

import argparse

from ..io.manifest import SPLITS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment", description=__doc__,
        help="compare recon+seg+cls, recon+seg, seg+cls, U-Net and 8-layer CNN (results.md / results.json)")
    p.add_argument("--manifest", required=True, help="CSV with image, mask, label, split columns")
    p.add_argument("--config", default="lite", help="model size: lite, paper or tiny (default lite)")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per model + results.md/json)")
    p.add_argument("--epochs", type=int, default=50, help="maximum epochs per model (default 50)")
    p.add_argument("--max-steps", type=int, default=None, help="stop each model after this many steps")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=SPLITS, help="rows to evaluate on (default test)")
    p.add_argument("--arms", default=None,
                   help="comma-separated subset of recon-seg-cls,recon-seg,seg-cls,unet,cnn (default all)")
    p.add_argument("--resume", action="store_true", help="reuse a model already trained in OUT/<arm>/train")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.experiment import format_markdown, run_experiment  # torch / monai load only when the command runs

    results = run_experiment(args.manifest, args.config, args.out, epochs=args.epochs, max_steps=args.max_steps,
                             patience=args.patience, batch_size=args.batch_size, lr=args.lr, device=args.device,
                             seed=args.seed, split=args.split, arms=args.arms, resume=args.resume,
                             progress=not args.no_progress)
    print(format_markdown(results))
    print(f"written to {args.out}/results.md and results.json")
    return 0
