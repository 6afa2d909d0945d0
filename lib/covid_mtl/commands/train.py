"""``covid-mtl train``: train the multi-task network (or a baseline) from a manifest.

Under ``torchrun --nproc_per_node=N -m covid_mtl.cli train ...`` the N processes train together
(``covid_mtl.train.distributed``): ``--batch-size`` is per process, rank 0 alone writes ``--out`` and prints.
"""
from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta

from ..nets.config import CONFIGS

DEFAULT_TIMEOUT_MIN = 30.0  # train.distributed.DEFAULT_TIMEOUT, without importing torch to build the parser


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model from a manifest CSV",
                              description="Train on the manifest's train rows, validate on its val rows (none: a "
                              "seeded 20%% of each source's labelled patients), keep the best model by the "
                              "selection score (mean of validation lesion Dice and COVID-vs-rest AUC). Several "
                              "processes: torchrun --nproc_per_node=N -m covid_mtl.cli train ... (gloo on CPU, "
                              "NCCL on GPU, one GPU per process); each trains its share of every step, rank 0 "
                              "validates and writes --out.")
    p.add_argument("--manifest", required=True, help="CSV with image, mask, label, split columns")
    p.add_argument("--out", required=True, help="output folder (model.pt, last.pt, history.json, learning_curves.png)")
    p.add_argument("--config", choices=sorted(CONFIGS), default=None,
                   help="model configuration (default: lite, or the --init checkpoint's)")
    p.add_argument("--tasks", default=None, help="comma-separated heads: recon,seg,cls (default: the config's)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=10, help="epochs without selection-score improvement")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="batches per epoch (default: one pass over the slices' number)")
    p.add_argument("--lambdas", default=None, type=_lambdas,
                   help="weights of the loss terms, e.g. recon=1,seg=1,cls=2 (default: 1 each, the paper's sum)")
    p.add_argument("--no-balance", action="store_true",
                   help="draw slices uniformly instead of balancing COVID / non-COVID / unlabelled and collections")
    p.add_argument("--batch-size", type=int, default=4,
                   help="slices per step and process: under torchrun N processes with batch B step like one "
                   "process with batch N*B")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--image-size", type=int, default=None, help="slice size the network sees (default: config's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="checkpoint to start from (fine-tuning)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimisation steps")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--replay", default=None, metavar="MANIFEST",
                   help="an earlier training set (the --init model's manifest) whose train rows are learnt "
                        "alongside, so fine-tuning does not forget it")
    p.add_argument("--freeze", default=None,
                   help="with --init: parts kept as they are, comma-separated: norm (every batch-norm layer's "
                        "statistics), encoder, classifier, seg_decoder, recon_decoder")
    p.add_argument("--replay-share", type=float, default=0.5, help="share of the draws from --replay (default 0.5)")
    p.add_argument("--replay-images", type=int, default=None,
                   help="at most this many --replay rows, drawn with --seed (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: all cores, shared among torchrun's processes on a machine)")
    p.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_MIN,
                   help="under torchrun: minutes a process waits for the others (joining, each step, rank 0's "
                   "validation) before failing instead of hanging")
    p.set_defaults(func=run)


def _lambdas(text: str) -> dict[str, float]:
    try:
        pairs = dict(item.split("=", 1) for item in text.split(",") if item)
        weights = {task.strip(): float(value) for task, value in pairs.items()}
        if not set(weights) <= {"recon", "seg", "cls"}:
            raise ValueError
        return weights
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lambdas {text!r}: expected task=weight pairs, e.g. cls=2") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from ..io.manifest import read_manifest
    from ..train.distributed import Ranks, process_device, process_group
    from ..train.loop import TrainConfig, train
    from ..train.selection import split_validation

    ranks = Ranks.from_env()  # torchrun's variables, read once; a plain start is rank 0 of 1
    # torchrun's processes on one machine share its cores
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // ranks.local_world_size))
    config = TrainConfig(config=args.config, tasks=args.tasks, epochs=args.epochs, patience=args.patience,
                         batch_size=args.batch_size, lr=args.lr, image_size=args.image_size,
                         device=process_device(args.device, ranks), seed=args.seed, init=args.init,
                         max_steps=args.max_steps, augment=not args.no_augment, balance=not args.no_balance,
                         steps_per_epoch=args.steps_per_epoch, lambdas=args.lambdas, replay=args.replay,
                         replay_share=args.replay_share, replay_images=args.replay_images,
                         freeze=args.freeze)
    train_rows, val_rows = split_validation(read_manifest(args.manifest), config.val_fraction, config.seed)
    with process_group(ranks, config.device, timedelta(minutes=args.dist_timeout)):
        result = train(config, train_rows, val_rows, args.out, progress=True)
    if not ranks.main:
        return 0
    print(json.dumps({"best_checkpoint": str(result.best_checkpoint), "best_epoch": result.best_epoch,
                      "best_score": result.best_score, "epochs": result.epochs_run, "steps": result.steps,
                      "stopped_early": result.stopped_early, "seconds": round(result.seconds, 1)}, indent=2))
    return 0
