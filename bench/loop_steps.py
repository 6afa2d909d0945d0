"""One fine-tuning from the annotation loop's start model, without a server: how the Dice depends on the number of
steps and on what is frozen (how ``covid_mtl.train.engine.ROUND`` and the round base were chosen).

``python -m bench.loop_steps --corrections 32 --steps 60`` fine-tunes the start model of ``bench.annotation_loop``
(run that first: it prepares the data and the start model under ``--work``) on the first N pool slices with their
masks, the other pool slices unlabelled, with ROUND's settings and replay, and prints the validation scores.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from bench.annotation_loop import medseg_pool, medseg_validation, score
from bench.common import OUT


def main(argv: list[str] | None = None) -> int:
    from covid_mtl.io.manifest import read_manifest
    from covid_mtl.train.engine import ROUND
    from covid_mtl.train.loop import train

    parser = argparse.ArgumentParser(prog="python -m bench.loop_steps", description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=OUT / "annotation_loop")
    parser.add_argument("--corrections", type=int, default=32)
    parser.add_argument("--steps", type=int, default=ROUND.steps_per_epoch)
    parser.add_argument("--lr", type=float, default=ROUND.lr)
    parser.add_argument("--freeze", default=ROUND.freeze, help='parts kept, e.g. "norm" or "" for none')
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    start, manifest = args.work / "start" / "model.pt", args.work / "data" / "manifest.csv"
    if not start.is_file():
        raise SystemExit(f"bench.loop_steps: no start model at {start}: run python -m bench.annotation_loop first")
    rows = read_manifest(manifest)
    pool, validation = medseg_pool(rows), medseg_validation(rows)
    records = [{"image": r.image, "mask": r.mask if i < args.corrections else None,
                "label": r.label if i < args.corrections else None} for i, r in enumerate(pool)]
    cfg = replace(ROUND, init=str(start), steps_per_epoch=args.steps, lr=args.lr, freeze=args.freeze or None,
                  device="cpu", replay=str(args.work / "data" / "without-medseg.csv"), seed=args.seed)
    result = train(cfg, records, [], args.work / f"steps-{args.corrections}-{args.steps}", progress=True)
    scores = score(result.last_checkpoint, validation)
    print(json.dumps({"corrections": args.corrections, "steps": args.steps, "lr": args.lr, "freeze": args.freeze,
                      **{k: scores[k] for k in ("dice", "dice_mean", "auc")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
