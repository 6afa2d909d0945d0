"""Train task ``covid_mtl``: the core's one training set-up (``covid_mtl.train.engine``) run by MONAI Label.

MONAI Label's ``BasicTrainTask`` gives the request handling, output folders, train stats, early stopping and the
multi-GPU (DDP) path; this class turns the request into the core's ``TrainConfig`` and fills MONAI Label's hooks
with the core's network, fine-tune rule, data loaders, engines and checkpoint metadata. A plain request is one
round of the annotation loop: it fine-tunes the round base (``round_base``: the served model before the first round)
on all the corrections with the core's ``ROUND`` defaults, replaying the admin's replay set (``--conf
replay_manifest``) so the corrections do not make it forget; ``{"fine_tune": false}`` trains a new model with the
defaults of ``covid-mtl train`` (``TrainConfig()``), so both train alike. Multi-GPU (``{"multi_gpu": true}``: MONAI
Label starts one process per GPU, joins them and wraps the network in DDP) trains as ``covid-mtl train`` under
torchrun: each process its share of every step's draws (``train_batch_size`` is per GPU), training numbers gathered
from all of them, rank 0's stop decision binding all (``covid_mtl.train.distributed``); every rank validates. The
served model is only ever replaced by an atomic rename of a complete checkpoint, so infer never loads a
half-written file and a crashed run leaves it untouched.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Sequence

import torch
from ignite.engine import Events
from lib.infers.covid_mtl import LESION_LABEL
from lib.monailabel_compat import Context, EngineTrainTask
from lib.trainers.datalist import datastore_records
from lib.trainers.round_base import BASE_NAME, MADE_FROM, round_base
from monai.handlers import StatsHandler, ValidationHandler

from covid_mtl.errors import CovidMTLError
from covid_mtl.nets.checkpoint import checkpoint_digest, save_checkpoint
from covid_mtl.train.decision import validated_decision
from covid_mtl.train.distributed import stop_with_rank0
from covid_mtl.train.engine import (ROUND, TrainConfig, build_evaluator, build_optimizer, build_trainer,
                                    build_training_model, checkpoint_meta, data_loaders, epoch_metrics, epoch_stats,
                                    run_settings)
from covid_mtl.train.losses import MultiTaskLoss
from covid_mtl.train.selection import split_validation
from monailabel.interfaces.datastore import Datastore

logger = logging.getLogger(__name__)

DEFAULTS = TrainConfig()
"""A training from scratch (``{"fine_tune": false}``): the CLI's defaults."""

def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


# request key -> (TrainConfig field, type); MONAI Label's own names where it has one
REQUEST_KEYS = {"max_epochs": ("epochs", int), "early_stop_patience": ("patience", int),
                "train_batch_size": ("batch_size", int), "learning_rate": ("lr", float),
                "val_split": ("val_fraction", float), "steps_per_epoch": ("steps_per_epoch", int),
                "val_steps": ("val_steps", int), "balance": ("balance", _flag), "augment": ("augment", _flag),
                "seed": ("seed", int), "model_config": ("config", str), "replay_share": ("replay_share", float),
                "replay_images": ("replay_images", int), "freeze": ("freeze", str)}


def request_defaults(cfg: TrainConfig) -> Dict[str, Any]:
    """``cfg`` as the request keys it answers to (0 for "all" where MONAI Label wants a number)."""
    values = {key: (getattr(cfg, name), kind) for key, (name, kind) in REQUEST_KEYS.items()
              if name not in ("seed", "config")}
    return {key: ("" if kind is str else 0) if value is None else value for key, (value, kind) in values.items()}


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return network.module if hasattr(network, "module") else network


class CovidMTLTrain(EngineTrainTask):
    def __init__(self, model_dir: str, published_path: str, init_paths: Sequence[str], model_config: str = "lite",
                 device: str = "auto", replay: Optional[str] = None):
        self.published_path = published_path
        self.init_paths = list(init_paths)
        self.replay = replay
        super().__init__(
            model_dir,
            description="One round of the annotation loop: fine-tunes the round base (the served model before the "
                        "first round) on all corrections, replaying the server's replay set when it has one",
            config={
                # a plain request is a round of the annotation loop; {"fine_tune": false} trains anew with
                # DEFAULTS (see __call__)
                **request_defaults(ROUND),
                "round_from": "base",
                "replay": bool(replay),
                "fine_tune": True,
                "model_config": model_config,
                "device": device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
            },
            amp=torch.cuda.is_available(),
            publish_path=None,  # MONAI Label's publisher copies non-atomically; see _publish
            key_metric_filename="model_key_metric.pt",
            labels=[LESION_LABEL],
        )

    def __call__(self, request: Dict[str, Any], datastore: Datastore):
        if not _flag(request.get("fine_tune", True)):  # MONAI Label fills what the request lacks from ROUND
            request = {**request_defaults(DEFAULTS), **request}
        return super().__call__(request, datastore)

    # ----- the request as the core's settings ----------------------------------------------------------------------
    def train_config(self, context: Context) -> TrainConfig:
        cached = getattr(context, "covid_mtl_config", None)
        if cached is not None:
            return cached
        request = context.request
        values: Dict[str, Any] = {}
        for key, (name, kind) in REQUEST_KEYS.items():
            if request.get(key) is not None:
                values[name] = kind(request[key])
        for name in ("steps_per_epoch", "val_steps", "replay_images", "freeze"):  # 0 or "": the CLI's None
            values[name] = values.get(name) or None
        init = self._init_path(context)
        if init:
            values["config"] = None  # a fine-tuned model keeps its checkpoint's configuration
        # only the admin names the replay set (--conf replay_manifest); a request may only turn it off
        replay = self.replay if _flag(request.get("replay", True)) else None
        context.covid_mtl_config = TrainConfig(**values, init=init, device=str(context.device), replay=replay)
        return context.covid_mtl_config

    def _init_path(self, context: Context) -> Optional[str]:
        if not _flag(context.request.get("fine_tune", True)):
            return None
        served = next((p for p in self.init_paths if p and os.path.isfile(p)), None)
        round_from = str(context.request.get("round_from") or "base")
        if round_from not in ("base", "served"):
            raise CovidMTLError(f"round_from must be 'base' or 'served', not {round_from!r}")
        if served is None or round_from == "served":
            return served
        return round_base(served, os.path.dirname(self.published_path))

    # ----- MONAI Label's hooks --------------------------------------------------------------------------------------
    def pre_process(self, request: Dict[str, Any], datastore: Datastore) -> list:
        return datastore_records(datastore)

    def partition_datalist(self, context: Context, shuffle: bool = False):
        # the core's one split, so `covid-mtl train` on the same images validates on the same ones
        return split_validation(context.datalist, float(context.request.get("val_split", DEFAULTS.val_fraction)),
                                seed=0)

    def network(self, context: Context) -> torch.nn.Module:
        cfg = self.train_config(context)
        logger.info(f"covid_mtl: fine-tuning from {cfg.init}" if cfg.init else
                    f"covid_mtl: training a new '{cfg.config or 'lite'}' model")
        model, context.covid_mtl_init = build_training_model(cfg)
        return model

    def optimizer(self, context: Context):
        return build_optimizer(context.network, self.train_config(context))

    def loss_function(self, context: Context) -> MultiTaskLoss:
        if getattr(context, "covid_mtl_loss", None) is None:
            context.covid_mtl_loss = MultiTaskLoss(_unwrap(context.network).tasks, self.train_config(context).lambdas)
        return context.covid_mtl_loss

    def val_key_metric(self, context: Context):
        """Named for MONAI Label's early stopping; the engines carry the metric objects themselves."""
        return epoch_metrics(self.loss_function(context).lambdas, "val", "score")[0]

    def _loaders(self, context: Context):
        if getattr(context, "covid_mtl_loaders", None) is None:
            context.covid_mtl_loaders = data_loaders(self.train_config(context), _unwrap(context.network),
                                                     context.train_datalist, context.val_datalist,
                                                     distributed=bool(context.multi_gpu))
        return context.covid_mtl_loaders

    def train_handlers(self, context: Context):
        handlers = [StatsHandler(tag_name="train_loss", output_transform=lambda output: float(output["loss"]))]
        if context.evaluator:
            handlers.append(ValidationHandler(self.validation_interval, validator=context.evaluator, epoch_level=True))
        return handlers if context.local_rank == 0 else handlers[1:]

    def val_handlers(self, context: Context):
        return [StatsHandler(output_transform=lambda x: None, iteration_log=False)] if context.local_rank == 0 else []

    def create_evaluator(self, context: Context):
        loaders = self._loaders(context)
        if loaders.val is None:
            return None
        return build_evaluator(context.network, self.loss_function(context), loaders.val, context.device,
                               self.amp_enabled, self.val_handlers(context))

    def create_trainer(self, context: Context):
        return build_trainer(context.network, self.loss_function(context), self._loaders(context).train,
                             context.optimizer, context.device, context.max_epochs, self.amp_enabled,
                             self.train_handlers(context))

    # ----- publishing -----------------------------------------------------------------------------------------------
    def finalize(self, context: Context) -> None:
        super().finalize(context)  # train stats after every epoch + early stopping on the validation score
        if context.multi_gpu:
            # every rank validates (MONAI Label's design); rank 0's stop decision binds them all, as under torchrun
            stop_with_rank0(context.trainer)
        if context.local_rank != 0:
            return
        watched = context.evaluator or context.trainer

        def publish(engine) -> None:
            if engine.state.best_metric_epoch == engine.state.epoch or context.evaluator is None:
                self._publish(context)

        watched.add_event_handler(Events.EPOCH_COMPLETED, publish)

    def _publish(self, context: Context) -> None:
        cfg, network = self.train_config(context), _unwrap(context.network)
        loaders = self._loaders(context)
        metrics = {f"train_{k}": v for k, v in epoch_stats(context.trainer).compute().items()}
        decision = None
        if context.evaluator is not None:
            val_stats = epoch_stats(context.evaluator)
            metrics.update({f"val_{k}": v for k, v in val_stats.compute().items()})
            if "cls" in network.tasks:
                decision = validated_decision(loaders.counts["trained_classes"], val_stats)
        settings = {**run_settings(cfg, network, loaders.counts, getattr(context, "covid_mtl_init", {})),
                    "run_id": context.run_id}
        if cfg.init and os.path.basename(cfg.init) == BASE_NAME:
            settings[MADE_FROM] = checkpoint_digest(cfg.init)  # the next round starts from the same base
        meta = checkpoint_meta("monailabel", context.trainer.state.epoch, context.trainer.state.iteration, metrics,
                               settings, decision)
        save_checkpoint(self.published_path, network, meta=meta)
        logger.info(f"covid_mtl: published model (epoch {meta['epoch']}, "
                    f"val_score={metrics.get('val_score')})")
