"""Training loop on MONAI's ignite engines: ``train(config, records_train, records_val, out_dir)``.

A ``SupervisedTrainer`` runs the one multi-task step (``covid_mtl.train.step.make_train_iteration``), a
``SupervisedEvaluator`` runs the validation step after every epoch; ignite's ``EarlyStopping`` stops when the
validation loss has not improved for ``patience`` epochs. After each epoch: ``last.pt`` and (when the validation
loss improved) ``model.pt`` are written atomically, and ``history.json`` and ``learning_curves.png`` are
rewritten, so an interrupted run leaves usable files. Adam, AMP on CUDA, progress with tqdm.

Validation loss is the lambda-weighted sum of each term's mean over the whole validation set (terms weighted by
their labelled samples), so it compares across epochs even when batches carry different labels.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from ignite.handlers import EarlyStopping
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.utils import set_determinism
from tqdm.auto import tqdm

from .augment import eval_transforms, train_transforms
from ..atomic import atomic_write
from ..device import resolve_device
from ..nets.checkpoint import load_checkpoint, save_checkpoint
from ..nets.config import get_config, parse_tasks
from ..errors import CovidMTLError
from .losses import MultiTaskLoss
from ..nets.factory import build_model
from .decision import trained_classes, validated_decision
from ..nets.preprocessing import Preprocessing, of_model
from .samples import as_records, build_dataset, count_samples, train_sampler
from .selection import is_better, split_validation
from .step import EpochStats, make_eval_iteration, make_train_iteration


@dataclass
class TrainConfig:
    """Settings of one training run. ``config`` None means ``lite`` (or the ``init`` checkpoint's config);
    ``tasks`` None means the config's (or checkpoint's) tasks; ``image_size`` None keeps the config's."""

    config: str | None = None
    tasks: str | Sequence[str] | None = None
    epochs: int = 50
    patience: int = 10
    batch_size: int = 4
    lr: float = 1e-4
    image_size: int | None = None
    device: str = "auto"
    seed: int = 0
    init: str | None = None
    max_steps: int | None = None
    augment: bool = True
    val_fraction: float = 0.2
    lambdas: dict[str, float] | None = None
    balance: bool = True
    steps_per_epoch: int | None = None


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


def build_training_model(cfg: TrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network to train: fresh from ``cfg.config``, or initialised from ``cfg.init`` (fine-tuning; weights
    of heads the new task set lacks are dropped, new heads start fresh)."""
    if not cfg.init:
        config = get_config(cfg.config or "lite", cfg.image_size)
        return build_model(config, parse_tasks(cfg.tasks, config)), {}
    checkpoint = load_checkpoint(cfg.init)
    config = checkpoint.config
    if cfg.config and cfg.config != config.name:
        raise CovidMTLError(f"--init {cfg.init} holds config {config.name!r}, not {cfg.config!r}")
    if cfg.image_size and cfg.image_size != config.image_size:
        raise CovidMTLError(f"--init {cfg.init} was trained at {config.image_size}^2, not {cfg.image_size}^2")
    model = build_model(config, parse_tasks(cfg.tasks, config) if cfg.tasks else checkpoint.tasks)
    own = model.state_dict()
    loaded = {k: v for k, v in checkpoint.state_dict.items() if k in own and own[k].shape == v.shape}
    if not any(k in loaded for k in own if k.startswith(("encoder.", "unet.", "layers."))):
        raise CovidMTLError(f"--init {cfg.init}: no weights fit the network")
    model.load_state_dict(loaded, strict=False)
    model.preprocessing = Preprocessing.from_meta(checkpoint.meta, config.image_size)  # fine-tuning keeps it
    return model, {"init": str(cfg.init), "init_loaded": len(loaded), "init_fresh": len(own) - len(loaded)}


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
    validates on itself). Writes into ``out_dir``; returns paths, history and the best epoch."""
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed=config.seed)
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
    size = model.config.image_size
    preprocessing = of_model(model)
    train_ds = build_dataset(records_train, preprocessing, transform=train_transforms(config.seed) if config.augment
                             else eval_transforms(), progress=progress)
    val_ds = build_dataset(records_val, preprocessing, transform=eval_transforms(), progress=progress)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = train_sampler(train_ds, config.batch_size, config.steps_per_epoch, config.balance, generator)
    train_loader = DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler, num_workers=0)
    val_loader = DataLoader(val_ds, batch_size=max(config.batch_size, 16), shuffle=False, num_workers=0)

    loss_fn = MultiTaskLoss(model.tasks, config.lambdas)
    amp = device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    trainer = SupervisedTrainer(device=device, max_epochs=config.epochs, train_data_loader=train_loader,
                                network=model, optimizer=optimizer, loss_function=loss_fn,
                                iteration_update=make_train_iteration(loss_fn), amp=amp, decollate=False)
    evaluator = SupervisedEvaluator(device=device, val_data_loader=val_loader, network=model,
                                    iteration_update=make_eval_iteration(loss_fn), amp=amp, decollate=False)

    train_stats, val_stats = EpochStats(loss_fn.lambdas), EpochStats(loss_fn.lambdas)
    trained = trained_classes(train_ds.data) if "cls" in model.tasks else []
    result = TrainResult(best_checkpoint=out / "model.pt", last_checkpoint=out / "last.pt",
                         history_path=out / "history.json", curves_path=out / "learning_curves.png")
    settings = asdict(config)
    settings.update(image_size=size, tasks=list(model.tasks), config=model.config.name,
                    train_images=len(records_train), val_images=len(records_val),
                    train_slices=count_samples(train_ds), val_slices=count_samples(val_ds), **init_info)
    bar = tqdm(total=min(config.max_steps or 10**12, config.epochs * len(train_loader)), desc="training", unit="step",
               disable=not progress)

    train_stats.attach(trainer, reset_on=Events.EPOCH_STARTED)
    val_stats.attach(evaluator, reset_on=Events.STARTED)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _step(engine):
        bar.update(1)
        bar.set_postfix(epoch=engine.state.epoch, loss=f"{float(engine.state.output['loss']):.4f}")
        if config.max_steps and engine.state.iteration >= config.max_steps:
            engine.terminate_epoch()  # validate and save this partial epoch, then stop (see _epoch_end)

    @evaluator.on(Events.COMPLETED)
    def _val_done(engine):
        engine.state.metrics.update({k: v for k, v in val_stats.compute().items() if v is not None})

    # registered after _val_done so it reads this epoch's score
    evaluator.add_event_handler(Events.COMPLETED, EarlyStopping(
        patience=config.patience, score_function=lambda e: e.state.metrics["score"], trainer=trainer))

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_end(engine):
        evaluator.run()
        row: dict[str, Any] = {"epoch": engine.state.epoch, "steps": engine.state.iteration,
                               "seconds": round(time.perf_counter() - t_start, 2)}
        row.update({f"train_{k}": v for k, v in train_stats.compute().items()})
        row.update({f"val_{k}": v for k, v in val_stats.compute().items()})
        result.history.append(row)
        meta = {"epoch": row["epoch"], "steps": row["steps"], "metrics": row, "train_settings": settings,
                "decision": validated_decision(trained, val_stats).as_meta()}
        save_checkpoint(result.last_checkpoint, model, meta)
        if is_better(row["val_score"], result.best_score):
            result.best_score, result.best_epoch = row["val_score"], row["epoch"]
            save_checkpoint(result.best_checkpoint, model, meta)
        _write_json(result.history_path, {"settings": settings, "best_epoch": result.best_epoch,
                                          "best_score": result.best_score, "epochs": result.history})
        plot_learning_curves(result.history, result.curves_path)
        if progress:
            tqdm.write(_epoch_line(row))
        if config.max_steps and engine.state.iteration >= config.max_steps:
            engine.terminate()

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
