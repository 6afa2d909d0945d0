"""The one training set-up, shared by ``covid-mtl train`` (``train.loop``) and the MONAI Label train task.

Both take their settings and defaults from :class:`TrainConfig`, build the network with the one fine-tune rule
(:func:`build_training_model`), the slice datasets and samplers with :func:`data_loaders`, MONAI's ignite engines
on the one multi-task step with :func:`build_trainer` / :func:`build_evaluator` (epoch numbers as ignite metrics
named ``train_<stat>`` / ``val_<stat>``, the validation key metric ``val_score`` being the selection score of
``train.selection``), and write the same checkpoint metadata with :func:`checkpoint_meta`. Each caller adds only its
own handlers: the CLI its progress bar, files and early stopping; the train task MONAI Label's stats, early
stopping and the atomic publish of the served model.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.utils import set_determinism
from torch.utils.data import Subset

from ..errors import CovidMTLError
from ..io.manifest import read_manifest
from ..nets.checkpoint import load_checkpoint
from ..nets.config import get_config, parse_tasks
from ..nets.decision import Decision
from ..nets.factory import build_model
from ..nets.preprocessing import Preprocessing, of_model
from .augment import eval_transforms, train_transforms
from .decision import trained_classes
from .losses import MultiTaskLoss
from .distributed import gather_stats, rank as distributed_rank, world_size as distributed_world_size
from .samples import ShareOfDraws, as_records, build_dataset, count_samples, train_sampler
from .step import EpochStats, make_eval_iteration, make_train_iteration

STATS = ("loss", "loss_recon", "loss_seg", "loss_cls", "dice", "covid_auc", "accuracy", "covid_accuracy", "score")
"""The epoch numbers of ``train.step.EpochStats``; each engine reports them as ``<split>_<stat>`` metrics."""

VAL_BATCH_SIZE = 16


@dataclass
class TrainConfig:
    """Settings of one training run, and the one set of defaults for the CLI and the train task. ``config`` None
    means ``lite`` (or the ``init`` checkpoint's config); ``tasks`` None means the config's (or checkpoint's)
    tasks; ``image_size`` None keeps the config's; ``steps_per_epoch`` None: one pass over the slices;
    ``val_steps`` None: every validation slice."""

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
    val_steps: int | None = None
    replay: str | None = None
    replay_share: float = 0.5
    replay_images: int | None = None
    freeze: str | Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.replay_share < 1.0:
            raise CovidMTLError(f"replay share {self.replay_share} must be at least 0 and below 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CovidMTLError(f"validation fraction {self.val_fraction} must be at least 0 and below 1")


ROUND = TrainConfig(epochs=1, patience=1, batch_size=8, lr=1e-4, steps_per_epoch=60, val_fraction=0.0,
                    replay_images=240, freeze="norm,encoder,classifier")
"""The defaults of one round of the annotation loop (the MONAI Label train task fine-tuning the served model on
the corrections so far): a short fixed schedule (60 steps of 8 slices, under a minute on 2 CPU cores), every
correction trained on (too few to hold some back for validation; the last weights are published), the encoder,
the classifier and every batch-norm statistic kept as they are (so a round cannot make the classifier forget, and
a few corrections cannot shift what the encoder learnt from thousands of slices), and, when the server has a
``replay`` set (the manifest the served model learnt from), a seeded draw of ``replay_images`` of its training rows
taking ``replay_share`` of the draws. Chosen by measurement (README, "The annotation loop"; ``python -m
bench.annotation_loop``): with every layer free, a round's batch-norm statistics alone cost 0.035 validation
Dice; with only those frozen, the validation AUC swung down to 0.60; more steps on the same corrections lowered
the Dice (0.766 after 60, 0.738 after 360)."""


def replay_records(cfg: TrainConfig, exclude: Sequence[Any] = ()) -> list:
    """The training rows of ``cfg.replay`` (a manifest) to learn alongside, at most ``cfg.replay_images`` of
    them drawn with ``cfg.seed``; rows whose image is among ``exclude`` (the new records) are left out, so a
    corrected image is learnt once, with its correction."""
    if not cfg.replay:
        return []
    taken = {os.path.realpath(r.image) for r in as_records(exclude)}
    rows = [r for r in read_manifest(cfg.replay) if r.split in (None, "train")
            and (r.label is not None or r.mask is not None) and os.path.realpath(r.image) not in taken]
    if not rows:
        raise CovidMTLError(f"replay manifest {cfg.replay}: no labelled training rows")
    if cfg.replay_images and len(rows) > cfg.replay_images:
        chosen = np.random.default_rng(cfg.seed).choice(len(rows), cfg.replay_images, replace=False)
        rows = [rows[i] for i in sorted(chosen)]
    return rows


def build_training_model(cfg: TrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network to train: fresh from ``cfg.config``, or initialised from ``cfg.init`` (fine-tuning: the
    checkpoint's config and preprocessing are kept; weights of heads the new task set lacks are dropped, new heads
    start fresh). Seeds torch, numpy and random with ``cfg.seed`` first, so a run starts from the same weights and
    draws the same batches whoever starts it."""
    set_determinism(seed=cfg.seed)
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
    freeze_parts(model, cfg.freeze)
    return model, {"init": str(cfg.init), "init_loaded": len(loaded), "init_fresh": len(own) - len(loaded)}


FREEZABLE = ("norm", "encoder", "classifier", "seg_decoder", "recon_decoder")


def parse_freeze(freeze: str | Sequence[str] | None) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in freeze.split(",")) if isinstance(freeze, str) else tuple(freeze or ())
    unknown = [p for p in parts if p and p not in FREEZABLE]
    if unknown:
        raise CovidMTLError(f"cannot freeze {unknown}: choose among {list(FREEZABLE)}")
    return tuple(p for p in parts if p)


def freeze_parts(model: torch.nn.Module, freeze: str | Sequence[str] | None) -> None:
    """Keep parts of a fine-tuned model as they are: ``norm`` keeps every batch-norm layer's statistics, a part's
    name (``encoder``, ``classifier``, ...) its weights and statistics. ``train.step.train_mode`` keeps the frozen
    layers in evaluation mode; frozen weights get no gradient."""
    parts = parse_freeze(freeze)
    frozen = [getattr(model, p) for p in parts if p != "norm" and hasattr(model, p)]
    for module in frozen:
        module.requires_grad_(False)
    model.frozen_modules = frozen
    model.frozen_norm = "norm" in parts


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader | None
    counts: dict[str, Any]


def data_loaders(cfg: TrainConfig, model: torch.nn.Module, train_records: Sequence[Any],
                 val_records: Sequence[Any], progress: bool = False, distributed: bool = False) -> Loaders:
    """Slice datasets cut by the model's preprocessing; training draws ``steps_per_epoch`` batches with the class
    balance (seeded by ``cfg.seed``). Under DDP (``distributed``: a process group is up) ``cfg.batch_size`` is per
    process: every process computes the epoch of draws one process with ``world_size`` x the batch would make and
    takes its share (``ShareOfDraws``), so together they train on what one process would, split between them.
    Images are taken in the order of their real paths, so a manifest and a datastore listing of the same files draw
    the same batches."""
    train_records, val_records = _in_path_order(train_records), _in_path_order(val_records)
    preprocessing = of_model(model)
    rank, world = (distributed_rank(), distributed_world_size()) if distributed else (0, 1)
    # each process its own augmentation stream: one shared seed would flip and rotate every share of a step alike
    replayed = replay_records(cfg, exclude=train_records + val_records)
    train_ds = build_dataset(train_records, preprocessing, progress=progress, replay=replayed,
                             transform=train_transforms(preprocessing.augmentation, cfg.seed + rank) if cfg.augment else eval_transforms())
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = train_sampler(train_ds, cfg.batch_size * world, cfg.steps_per_epoch, cfg.balance, generator,
                            cfg.replay_share)
    if world > 1:
        sampler = ShareOfDraws(sampler, rank, world)
    val_size = max(cfg.batch_size, VAL_BATCH_SIZE)
    val_ds = build_dataset(val_records, preprocessing, transform=eval_transforms(), progress=progress) \
        if val_records else None
    counts = {"train_images": len(train_records), "val_images": len(val_records), "replay_images": len(replayed),
              "train_slices": count_samples(train_ds), "val_slices": count_samples(val_ds) if val_ds else None,
              "trained_classes": trained_classes_of(train_ds, model)}
    if val_ds is not None and cfg.val_steps and cfg.val_steps * val_size < len(val_ds):
        stride = len(val_ds) / (cfg.val_steps * val_size)  # evenly spread, the same slices every epoch
        val_ds = Subset(val_ds, [int(i * stride) for i in range(cfg.val_steps * val_size)])
    return Loaders(DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=0),
                   DataLoader(val_ds, batch_size=val_size, shuffle=False, num_workers=0) if val_ds else None, counts)


def _in_path_order(records: Sequence[Any]) -> list:
    return sorted(as_records(records), key=lambda r: os.path.realpath(r.image))


def trained_classes_of(dataset, model: torch.nn.Module) -> list[str]:
    return trained_classes(dataset.data) if "cls" in model.tasks else []


# ----- epoch numbers as ignite metrics --------------------------------------------------------------------------------
class EpochStatsMetric(Metric):
    """Collects the epoch's step outputs into ``EpochStats`` (engines run with decollate=False) and reports one of
    its numbers; :class:`StatView` metrics report the others from the same collection. ``across_ranks``: under DDP
    the first number asked for at the epoch's end first gathers every process's share (ignite asks in every process
    at the same point), so the training numbers are the whole epoch's, as in one process."""

    def __init__(self, lambdas: dict[str, float], key: str, default: float = 0.0, across_ranks: bool = False) -> None:
        self.key, self.default, self.across_ranks = key, default, across_ranks
        self.stats = EpochStats(lambdas)
        self.gathered = False
        # A 1-tuple: ignite would otherwise demand y_pred/y keys in the (dict) step output.
        super().__init__(output_transform=lambda output: (output,))

    def reset(self) -> None:
        self.stats.reset()
        self.gathered = False

    def update(self, output) -> None:
        self.stats.update(output[0])

    def compute(self) -> float:
        return self.value(self.key, self.default)

    def value(self, key: str, default: float) -> float:
        if self.across_ranks and not self.gathered:
            self.gathered = True
            gather_stats(self.stats)
        found = self.stats.compute().get(key)
        return float(default if found is None else found)


class StatView(Metric):
    def __init__(self, owner: EpochStatsMetric, key: str, default: float = 0.0) -> None:
        self.owner, self.key, self.default = owner, key, default
        super().__init__(output_transform=lambda output: (output,))

    def reset(self) -> None:
        pass

    def update(self, output) -> None:
        pass

    def compute(self) -> float:
        return self.owner.value(self.key, self.default)


def epoch_metrics(lambdas: dict[str, float], split: str, key: str,
                  across_ranks: bool = False) -> tuple[dict[str, Metric], dict[str, Metric]]:
    """``({split_key: metric}, {split_other: metric, ...})`` over one shared collection; ``score`` defaults to
    -inf (nothing to select by yet), the others to 0."""
    owner = EpochStatsMetric(lambdas, key, float("-inf") if key == "score" else 0.0, across_ranks)
    views = {f"{split}_{s}": StatView(owner, s, float("-inf") if s == "score" else 0.0) for s in STATS if s != key}
    return {f"{split}_{key}": owner}, views


def epoch_stats(engine) -> EpochStats:
    """The ``EpochStats`` behind an engine built here (numbers with None where a split has none)."""
    return engine.covid_mtl_stats


def build_trainer(model: torch.nn.Module, loss_fn: MultiTaskLoss, loader: DataLoader, optimizer, device,
                  max_epochs: int, amp: bool = False, handlers: Sequence[Any] = ()) -> SupervisedTrainer:
    # training numbers over every process's share; validation is whole in each process that runs it
    key, others = epoch_metrics(loss_fn.lambdas, "train", "dice", across_ranks=distributed_world_size() > 1)
    trainer = SupervisedTrainer(device=device, max_epochs=max_epochs, train_data_loader=loader, network=model,
                                optimizer=optimizer, loss_function=loss_fn, key_train_metric=key,
                                additional_metrics=others, train_handlers=list(handlers),
                                iteration_update=make_train_iteration(loss_fn), amp=amp, decollate=False)
    trainer.covid_mtl_stats = next(iter(key.values())).stats
    return trainer


def build_evaluator(model: torch.nn.Module, loss_fn: MultiTaskLoss, loader: DataLoader, device, amp: bool = False,
                    handlers: Sequence[Any] = ()) -> SupervisedEvaluator:
    key, others = epoch_metrics(loss_fn.lambdas, "val", "score")
    evaluator = SupervisedEvaluator(device=device, val_data_loader=loader, network=model, key_val_metric=key,
                                    additional_metrics=others, val_handlers=list(handlers),
                                    iteration_update=make_eval_iteration(loss_fn), amp=amp, decollate=False)
    evaluator.covid_mtl_stats = next(iter(key.values())).stats
    return evaluator


# ----- what a checkpoint records about its training -------------------------------------------------------------------
def run_settings(cfg: TrainConfig, model: torch.nn.Module, counts: dict[str, Any],
                 init_info: dict[str, Any]) -> dict[str, Any]:
    settings = asdict(cfg)
    # batch_size is per process; world_size processes trained together (1: a single process)
    settings.update(image_size=model.config.image_size, tasks=list(model.tasks), config=model.config.name,
                    world_size=distributed_world_size(),
                    **{k: v for k, v in counts.items() if k != "trained_classes"}, **init_info)
    return settings


def checkpoint_meta(trained_by: str, epoch: int, steps: int, metrics: dict[str, Any], settings: dict[str, Any],
                    decision: Decision | None) -> dict[str, Any]:
    """The meta every training checkpoint carries (``save_checkpoint`` adds the preprocessing record)."""
    meta = {"trained_by": trained_by, "epoch": int(epoch), "steps": int(steps), "metrics": metrics,
            "train_settings": settings}
    if decision is not None:
        meta["decision"] = decision.as_meta()
    return meta
