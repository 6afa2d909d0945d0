"""``covid-mtl train``: ``train(config, records_train, records_val, out_dir)`` on the one training set-up.

The network, data, engines and checkpoint metadata come from ``covid_mtl.train.engine`` (which the MONAI Label train
task uses too). This loop adds what a command-line run needs: after every epoch the validation run, ``last.pt`` and
(when the validation selection score improved, ``covid_mtl.train.selection``) ``model.pt`` written atomically,
``history.json`` and ``learning_curves.png`` rewritten, so an interrupted run leaves usable files; ignite's
``EarlyStopping`` stops when the selection score has not improved for ``patience`` epochs; progress with tqdm.

Inside a process group (``covid-mtl train`` under torchrun, ``train.distributed``) every process trains its share
of each step in DistributedDataParallel; rank 0 alone validates, writes the files and reports, and the others take
its stop decision after every epoch. Rank 0 validates alone rather than every process repeating it: the decision
then cannot differ between processes (their batch-norm statistics and, on other hardware, their rounding may), the
others need not read the validation images, and the checkpoint holds the weights that were validated.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Events
from ignite.handlers import EarlyStopping
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..device import resolve_device
from ..errors import CovidMTLError
from ..nets.checkpoint import save_checkpoint
from .decision import validated_decision
from .distributed import rank, stop_with_rank0, world_size, wrap
from .engine import (TrainConfig, build_evaluator, build_optimizer, build_trainer, build_training_model,
                     checkpoint_meta, data_loaders, epoch_stats, run_settings)
from .losses import MultiTaskLoss
from .samples import as_records
from .selection import is_better, split_validation

__all__ = ["TrainConfig", "TrainResult", "train", "build_training_model", "plot_learning_curves"]


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    history_path: Path
    curves_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None
    epochs_run: int = 0
    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def plot_learning_curves(history: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Loss, Dice, COVID-vs-rest AUC and 3-class accuracy per epoch, train vs validation, as a PNG (matplotlib
    Agg); the validation score's best epoch is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    panels = [("loss", "loss (total; dashed: terms)"), ("dice", "lesion Dice"), ("covid_auc", "COVID-vs-rest AUC"),
              ("accuracy", "3-class accuracy")]
    # a panel only for numbers the run has (3-class accuracy needs two classes among the labelled slices)
    panels = [(k, title) for k, title in panels
              if any(h.get(f"{s}_{k}") is not None for h in history for s in ("train", "val"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            values = [h.get(f"{split}_{key}") for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], "o-", color=color, label=split, ms=3)
            if key == "loss":
                for term, style in (("recon", ":"), ("seg", "--"), ("cls", "-.")):
                    values = [h.get(f"{split}_loss_{term}") for h in history]
                    if any(v is not None for v in values):
                        ax.plot(epochs, [np.nan if v is None else v for v in values], style, color=color,
                                lw=1, label=f"{split} {term}")
        scores = [h.get("val_score") for h in history]
        if any(s is not None for s in scores):
            best = epochs[int(np.nanargmax([np.nan if s is None else s for s in scores]))]
            ax.axvline(best, color="grey", ls=":", lw=1)
        ax.set_title(title)
        ax.set_xlabel("epoch (dotted: kept)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=100, format="png"))
    plt.close(fig)
    return path


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2).encode())


def train(config: TrainConfig, records_train: Sequence[Any], records_val: Sequence[Any] | None,
          out_dir: str | os.PathLike, progress: bool = True) -> TrainResult:
    """Train on ``records_train`` (manifest rows, ``VolumeRecord``s or dicts with image/mask/label), validate on
    ``records_val`` (empty or None: a seeded ``val_fraction`` of the training images; a single training image
    validates on itself). Writes into ``out_dir``; returns paths, history and the best epoch. In a process group
    (``train.distributed.process_group``) ``config.batch_size`` is per process, and only rank 0 writes, reports
    and returns a history."""
    t_start = time.perf_counter()
    distributed, main = world_size() > 1, rank() == 0
    progress = progress and main
    out = Path(out_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    records_train = as_records(records_train)
    records_val = as_records(records_val or [])
    if not records_train:
        raise CovidMTLError("no training images")
    if not records_val:
        records_train, records_val = split_validation(records_train, config.val_fraction, config.seed)
        records_val = records_val or records_train

    device = resolve_device(config.device)
    model, init_info = build_training_model(config)
    model = model.to(device)
    # only rank 0 validates, so only it reads the validation images
    loaders = data_loaders(config, model, records_train, records_val if main else [], progress=progress,
                           distributed=distributed)
    loss_fn = MultiTaskLoss(model.tasks, config.lambdas)
    amp = device.type == "cuda"
    network = wrap(model, device) if distributed else model
    trainer = build_trainer(network, loss_fn, loaders.train, build_optimizer(model, config), device, config.epochs,
                            amp)
    # the evaluator runs the bare model: DDP's forward may exchange buffers, which rank 0 alone must not start
    evaluator = build_evaluator(model, loss_fn, loaders.val, device, amp) if main else None
    train_stats = epoch_stats(trainer)
    result = TrainResult(best_checkpoint=out / "model.pt", last_checkpoint=out / "last.pt",
                         history_path=out / "history.json", curves_path=out / "learning_curves.png")
    settings = run_settings(config, model, loaders.counts, init_info)
    bar = tqdm(total=min(config.max_steps or 10**12, config.epochs * len(loaders.train)), desc="training",
               unit="step", disable=not progress)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _step(engine):
        bar.update(1)
        bar.set_postfix(epoch=engine.state.epoch, loss=f"{float(engine.state.output['loss']):.4f}")
        if config.max_steps and engine.state.iteration >= config.max_steps:
            engine.terminate_epoch()  # validate and save this partial epoch, then stop (see _epoch_end)

    if main:
        evaluator.add_event_handler(Events.COMPLETED, EarlyStopping(
            patience=config.patience, score_function=lambda e: e.state.metrics["val_score"], trainer=trainer))

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_end(engine):
        if main:
            _validate_and_save(engine)
        if config.max_steps and engine.state.iteration >= config.max_steps:
            engine.terminate()

    def _validate_and_save(engine):
        val_stats = epoch_stats(evaluator)
        evaluator.run()
        row: dict[str, Any] = {"epoch": engine.state.epoch, "steps": engine.state.iteration,
                               "seconds": round(time.perf_counter() - t_start, 2)}
        row.update({f"train_{k}": v for k, v in train_stats.compute().items()})
        row.update({f"val_{k}": v for k, v in val_stats.compute().items()})
        result.history.append(row)
        decision = validated_decision(loaders.counts["trained_classes"], val_stats) if "cls" in model.tasks else None
        meta = checkpoint_meta("covid-mtl train", row["epoch"], row["steps"], row, settings, decision)
        save_checkpoint(result.last_checkpoint, model, meta)
        if is_better(row["val_score"], result.best_score):
            result.best_score, result.best_epoch = row["val_score"], row["epoch"]
            save_checkpoint(result.best_checkpoint, model, meta)
        _write_json(result.history_path, {"settings": settings, "best_epoch": result.best_epoch,
                                          "best_score": result.best_score, "epochs": result.history})
        plot_learning_curves(result.history, result.curves_path)
        if progress:
            tqdm.write(_epoch_line(row))

    if distributed:
        stop_with_rank0(trainer)  # after _epoch_end, whose validation may have stopped rank 0

    @trainer.on(Events.TERMINATE)
    def _terminated(engine):
        reached_max = config.max_steps and engine.state.iteration >= config.max_steps
        result.stopped_early = not reached_max

    try:
        trainer.run()
    finally:
        bar.close()
    result.epochs_run = len(result.history)
    result.steps = trainer.state.iteration
    result.seconds = time.perf_counter() - t_start
    return result


def _epoch_line(row: dict[str, Any]) -> str:
    def fmt(key: str) -> str:
        value = row.get(key)
        return "-" if value is None else f"{value:.4f}"

    return (f"epoch {row['epoch']:3d}  loss {fmt('train_loss')} / val {fmt('val_loss')}  "
            f"dice {fmt('train_dice')} / {fmt('val_dice')}  covid AUC {fmt('train_covid_auc')} / "
            f"{fmt('val_covid_auc')}  score {fmt('val_score')}")
