"""The paper's comparison, re-run: task combinations and baselines trained and scored on one split.

Amyar et al. 2020 compare, for segmentation (their Table 2), the multi-task model with reconstruction (T1),
segmentation (T2) and classification (T3) against T1&T2, T2&T3 and a plain U-Net, and for classification
(Table 3) against an 8-layer CNN. :func:`run_experiment` trains each *arm* with the one training function
(``covid_mtl.train.loop.train``) on the manifest's train/val rows, evaluates it with the one ``Predictor`` on
the chosen split via ``covid_mtl.evaluation.evaluate``, and writes ``results.md`` + ``results.json``: one row per arm
with Dice, accuracy, sensitivity, specificity and AUC ("n/a" where the arm has no such head) next to the
numbers the paper reports.

Every arm sees the same images: the train/val split is ``covid_mtl.train.selection.split_validation`` with one seed, the
evaluation rows are ``evaluate.select_rows`` of one split.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from ..nets.config import CONFIGS, ModelConfig, get_config
from ..errors import CovidMTLError
from .evaluate import compute_metrics, evaluate_rows, select_rows, write_evaluation
from ..io.manifest import read_manifest
from ..predict.predictor import Predictor
from ..train.loop import TrainConfig, train
from ..train.selection import split_validation


@dataclass(frozen=True)
class Arm:
    """One model of the comparison: a network family and the tasks it is trained on."""

    key: str
    title: str
    arch: str  # "mtl", "unet" or "cnn" (covid_mtl.nets.config.ModelConfig.arch)
    tasks: tuple[str, ...]


ARMS: tuple[Arm, ...] = (
    Arm("recon-seg-cls", "recon+seg+cls (T1&T2&T3, ours)", "mtl", ("recon", "seg", "cls")),
    Arm("recon-seg", "recon+seg (T1&T2)", "mtl", ("recon", "seg")),
    Arm("seg-cls", "seg+cls (T2&T3)", "mtl", ("seg", "cls")),
    Arm("unet", "U-Net (segmentation baseline)", "unet", ("seg",)),
    Arm("cnn", "8-layer CNN (classification baseline)", "cnn", ("cls",)),
)
ARM_KEYS = tuple(a.key for a in ARMS)

MEASURES = ("dice", "accuracy", "sensitivity", "specificity", "auc")

PAPER: dict[str, dict[str, float]] = {
    # Amyar et al. 2020, Comput Biol Med 126:104037, abstract and Tables 2-3, multi-task model (T1&T2&T3).
    "recon-seg-cls": {"dice": 0.88, "accuracy": 0.9467, "sensitivity": 0.96, "specificity": 0.92, "auc": 0.97},
    # The other rows of Tables 2 and 3 are left empty rather than quoted from memory; fill them in from the
    # paper (same keys as above) when a copy is at hand.
}


def arm_config(arm: Arm, config: str) -> ModelConfig:
    """The model configuration of ``arm`` at the size of ``config``.

    Multi-task arms use ``config`` itself. Baselines use ``<arch>-<config>`` when defined (``unet-tiny``),
    else the full-size baseline at ``config``'s input size, so every arm sees slices of one size.
    """
    base = get_config(config)
    if arm.arch == "mtl":
        return base
    sized = f"{arm.arch}-{config}"
    if sized in CONFIGS:
        return get_config(sized)
    return get_config(arm.arch, image_size=base.image_size)


def pick_arms(keys: Sequence[str] | str | None) -> tuple[Arm, ...]:
    """Arms by key (comma-separated string or sequence); None means all, in the table's order."""
    if keys is None:
        return ARMS
    names = [k.strip() for k in keys.split(",")] if isinstance(keys, str) else list(keys)
    unknown = [k for k in names if k not in ARM_KEYS]
    if unknown or not names:
        raise CovidMTLError(f"unknown arms {unknown or names}; choose from {', '.join(ARM_KEYS)}")
    return tuple(a for a in ARMS if a.key in names)


def summary_row(result: dict[str, Any]) -> dict[str, float | None]:
    """The table's measures from an ``evaluate.compute_metrics`` result (None where the head is missing).

    Dice is the mean per image over images with a lesion (the set the paper's Dice is measured on);
    classification measures are COVID vs rest at the Youden threshold.
    """
    seg = result.get("segmentation") or {}
    binary = result.get("covid_vs_rest") or {}
    three = result.get("three_class") or {}
    return {
        "dice": seg.get("dice_mean_nonempty"),
        "dice_all": seg.get("dice_mean"),
        "dice_global": seg.get("dice_global"),
        "accuracy": binary.get("accuracy"),
        "sensitivity": binary.get("sensitivity"),
        "specificity": binary.get("specificity"),
        "auc": binary.get("auc"),
        "threshold": binary.get("threshold"),
        "accuracy_3class": three.get("accuracy"),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_markdown(results: dict[str, Any]) -> str:
    """results.md: the comparison table, then how it was measured."""
    s = results["settings"]
    lines = [
        f"# covid-mtl experiment: config `{s['config']}`, split `{s['split']}`",
        "",
        "Measured on this data (left) next to what Amyar et al. 2020 report on theirs (right, \"paper\").",
        "",
        "| model | tasks | Dice | Dice global | Acc | Sens | Spec | AUC | threshold | 3-class acc "
        "| paper Dice | paper Acc | paper Sens | paper Spec | paper AUC |",
        "|---|---|" + "---:|" * 13,
    ]
    for row in results["rows"]:
        m, p = row["measured"], row["paper"]
        cells = [row["title"], "+".join(row["tasks"]), *(_fmt(m[k]) for k in
                 ("dice", "dice_global", "accuracy", "sensitivity", "specificity", "auc", "threshold",
                  "accuracy_3class")), *(_fmt(p.get(k)) if p.get(k) is not None else "—" for k in MEASURES)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Images: {s['n_train']} train, {s['n_val']} validation, {s['n_eval']} evaluated ({s['split']}). "
        f"Training: up to {s['epochs']} epochs" + (f", at most {s['max_steps']} steps" if s["max_steps"] else "")
        + f", batch {s['batch_size']}, lr {s['lr']}, seed {s['seed']}.",
        "",
        "- Dice: mean per image over evaluated images with a ground-truth lesion; Dice global: 2|P∩T| / (|P|+|T|) "
        "over all evaluated voxels (false positives on lesion-free images count).",
        "- Acc / Sens / Spec: COVID vs rest (normal, other and non-covid are negatives) at the Youden-optimal "
        "threshold on P(covid) (shown), chosen on the evaluated images themselves, so optimistic; AUC is "
        "threshold-free. 3-class acc: argmax over covid/normal/other.",
        "- n/a: the model has no such head. —: the paper gives no number for that cell here.",
        "",
        "| model | config | params | epochs run | best epoch | train s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        t = row["train"]
        lines.append(f"| {row['title']} | {row['config']} @ {row['image_size']}px | {row['params']:,} | {t['epochs_run']} | "
                     f"{t['best_epoch']} | {t['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run_experiment(manifest: str | os.PathLike, config: str, out: str | os.PathLike, *, epochs: int = 50,
                   max_steps: int | None = None, patience: int = 10, batch_size: int = 4, lr: float = 1e-4,
                   device: str = "auto", seed: int = 0, split: str = "test", arms: Sequence[str] | str | None = None,
                   resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every arm; writes ``<out>/<arm>/train/``, ``<out>/<arm>/eval/``, results.md/json.

    ``resume`` reuses an arm's existing ``train/model.pt`` instead of training it again.
    """
    chosen = pick_arms(arms)
    get_config(config)  # an unknown name fails before any training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(manifest)
    eval_rows = select_rows(rows, split)
    train_rows, val_rows = split_validation(rows, seed=seed)
    if not train_rows:
        raise CovidMTLError(f"{manifest}: no training rows (split 'train' or empty)")
    settings = {"manifest": str(manifest), "config": config, "split": split, "epochs": epochs,
                "max_steps": max_steps, "patience": patience, "batch_size": batch_size, "lr": lr, "seed": seed,
                "device": device, "n_train": len(train_rows), "n_val": len(val_rows), "n_eval": len(eval_rows)}
    results: dict[str, Any] = {"settings": settings, "rows": []}
    for arm in tqdm(chosen, desc="experiment", unit="model", disable=not progress):
        results["rows"].append(_run_arm(arm, config, out / arm.key, train_rows, val_rows, eval_rows, settings,
                                        resume, progress))
        _write(out, results)  # after each arm, so a long run interrupted keeps what it finished
    return results


def _run_arm(arm: Arm, config: str, folder: Path, train_rows: list, val_rows: list, eval_rows: list,
             settings: dict[str, Any], resume: bool, progress: bool) -> dict[str, Any]:
    model_config = arm_config(arm, config)
    checkpoint = folder / "train" / "model.pt"
    t0 = time.perf_counter()
    if resume and checkpoint.is_file():
        train_info = {"epochs_run": 0, "best_epoch": 0, "seconds": 0.0, "resumed": True}
    else:
        cfg = TrainConfig(config=model_config.name, tasks=arm.tasks, epochs=settings["epochs"],
                          patience=settings["patience"], batch_size=settings["batch_size"], lr=settings["lr"],
                          image_size=model_config.image_size, device=settings["device"], seed=settings["seed"],
                          max_steps=settings["max_steps"])
        trained = train(cfg, train_rows, val_rows, folder / "train", progress=progress)
        checkpoint = trained.best_checkpoint
        train_info = {"epochs_run": trained.epochs_run, "best_epoch": trained.best_epoch,
                      "seconds": round(trained.seconds, 1), "steps": trained.steps,
                      "stopped_early": trained.stopped_early}
    predictor = Predictor.from_checkpoint(checkpoint, device=settings["device"])
    cases, overlays = evaluate_rows(predictor, eval_rows, progress=progress)
    metrics = compute_metrics(cases)
    metrics.update(checkpoint=str(checkpoint), split=settings["split"], arm=arm.key)
    write_evaluation(metrics, folder / "eval", overlays)
    return {
        "key": arm.key, "title": arm.title, "tasks": list(arm.tasks), "config": model_config.name,
        "image_size": model_config.image_size,
        "params": sum(p.numel() for p in predictor.model.parameters()),
        "checkpoint": str(checkpoint), "metrics": str(folder / "eval" / "metrics.json"),
        "measured": summary_row(metrics), "paper": dict(PAPER.get(arm.key, {})),
        "train": train_info, "eval_seconds": round(time.perf_counter() - t0 - train_info["seconds"], 1),
    }


def _write(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(format_markdown(results))
