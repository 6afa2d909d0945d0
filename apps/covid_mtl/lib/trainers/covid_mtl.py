"""Train task ``covid_mtl``: the core's multi-task step on MONAI Label's ignite engines.

MONAI Label's ``BasicTrainTask`` gives the request handling, output folders, train stats, early stopping and
the multi-GPU (DDP) path; this class plugs in the core's network, partial-label loss, slice datasets and the
one training step (``covid_mtl.train.step``). The served model is only ever replaced by an atomic rename of a
complete checkpoint, so infer never loads a half-written file and a crashed run leaves it untouched.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Sequence

import torch
from ignite.engine import Events
from ignite.metrics import Metric
from lib.trainers.datalist import datastore_records
from torch.utils.data import DataLoader, Subset

from covid_mtl.train.augment import eval_transforms, train_transforms
from covid_mtl.nets.checkpoint import load_model, save_checkpoint
from covid_mtl.nets.config import get_config
from covid_mtl.train.losses import MultiTaskLoss
from covid_mtl.nets.factory import build_model
from covid_mtl.train.decision import trained_classes, validated_decision
from covid_mtl.nets.preprocessing import Preprocessing, of_model
from covid_mtl.train.samples import build_dataset, train_sampler
from covid_mtl.train.selection import split_validation
from covid_mtl.train.step import EpochStats, make_eval_iteration, make_train_iteration
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import StatsHandler
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

logger = logging.getLogger(__name__)


class OutputStat(Metric):
    """One number of the core's ``EpochStats`` as an ignite metric (engines run with decollate=False)."""

    def __init__(self, key: str, lambdas: Dict[str, float], default: float = 0.0):
        self.key, self.default = key, default
        self.stats = EpochStats(lambdas)
        # A 1-tuple: ignite would otherwise demand y_pred/y keys in the (dict) step output.
        super().__init__(output_transform=lambda output: (output,))

    def reset(self) -> None:
        self.stats.reset()

    def update(self, output) -> None:
        self.stats.update(output[0])

    def compute(self) -> float:
        value = self.stats.compute().get(self.key)
        return float(self.default if value is None else value)


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return network.module if hasattr(network, "module") else network


class CovidMTLTrain(BasicTrainTask):
    def __init__(self, model_dir: str, published_path: str, init_paths: Sequence[str], model_config: str = "lite",
                 device: str = "auto"):
        self.published_path = published_path
        self.init_paths = list(init_paths)
        self.model_config = model_config
        super().__init__(
            model_dir,
            description="Multi-task training (recon + seg + cls, partial labels) on the datastore",
            config={
                "max_epochs": 10,
                "train_batch_size": 4,
                "val_batch_size": 8,
                "learning_rate": 1e-4,
                "early_stop_patience": 10,
                "val_split": 0.2,
                "steps_per_epoch": 0,  # 0 = every slice once per epoch
                "val_steps": 0,  # 0 = every validation slice
                "fine_tune": True,
                "model_config": model_config,
                "device": device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
            },
            amp=torch.cuda.is_available(),
            publish_path=None,  # MONAI Label's publisher copies non-atomically; see _publish
            key_metric_filename="model_key_metric.pt",
            labels=["covid_lesion"],
        )

    # ----- data -------------------------------------------------------------------------------------------
    def pre_process(self, request: Dict[str, Any], datastore: Datastore) -> list:
        return datastore_records(datastore)

    def partition_datalist(self, context: Context, shuffle: bool = False):
        # the core's one split, so `covid-mtl train` on the same images validates on the same ones
        return split_validation(context.datalist, float(context.request.get("val_split", 0.2)), seed=0)

    def _preprocessing(self, context: Context) -> Preprocessing:
        return of_model(_unwrap(context.network))

    def train_data_loader(self, context: Context, num_workers: int = 0, shuffle: bool = True):
        dataset = build_dataset(context.train_datalist, self._preprocessing(context), transform=train_transforms())
        context.covid_mtl_trained = trained_classes(dataset.data)
        if context.multi_gpu:  # MONAI Label's DDP path: each rank trains on its own share of the slices
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(dataset, shuffle=True)
        else:  # the CLI's draws and class balance
            steps = max(0, int(context.request.get("steps_per_epoch", 0)))
            sampler = train_sampler(dataset, context.train_batch_size, steps, bool(context.request.get("balance", True)))
        return DataLoader(dataset, batch_size=context.train_batch_size, sampler=sampler, num_workers=num_workers)

    def val_data_loader(self, context: Context, num_workers: int = 0):
        dataset = build_dataset(context.val_datalist, self._preprocessing(context), transform=eval_transforms())
        steps = int(context.request.get("val_steps", 0))
        if steps > 0 and steps * context.val_batch_size < len(dataset):
            stride = len(dataset) / (steps * context.val_batch_size)
            dataset = Subset(dataset, [int(i * stride) for i in range(steps * context.val_batch_size)])
        return DataLoader(dataset, batch_size=context.val_batch_size, shuffle=False, num_workers=num_workers)

    # ----- model, loss, steps -----------------------------------------------------------------------------
    def _init_path(self, context: Context) -> Optional[str]:
        if not context.request.get("fine_tune", True):
            return None
        return next((p for p in self.init_paths if p and os.path.isfile(p)), None)

    def network(self, context: Context) -> torch.nn.Module:
        path = self._init_path(context)
        if path:
            logger.info(f"covid_mtl: fine-tuning from {path}")
            model, _ = load_model(path, "cpu")
            return model
        name = context.request.get("model_config", self.model_config)
        logger.info(f"covid_mtl: training a new '{name}' model")
        return build_model(get_config(name))

    def optimizer(self, context: Context):
        return torch.optim.Adam(context.network.parameters(), lr=float(context.request.get("learning_rate", 1e-4)))

    def loss_function(self, context: Context) -> MultiTaskLoss:
        # One loss for the trainer, the evaluator and the metrics (they read its lambdas).
        if getattr(context, "covid_mtl_loss", None) is None:
            context.covid_mtl_loss = MultiTaskLoss(_unwrap(context.network).tasks)
        return context.covid_mtl_loss

    def _lambdas(self, context: Context) -> Dict[str, float]:
        return self.loss_function(context).lambdas

    def train_key_metric(self, context: Context):
        return {"train_dice": OutputStat("dice", self._lambdas(context))}

    def train_additional_metrics(self, context: Context):
        return {"train_loss": OutputStat("loss", self._lambdas(context))}

    def val_key_metric(self, context: Context):
        # the core's selection score (lesion Dice + COVID-vs-rest AUC), the rule `covid-mtl train` keeps its best by
        context.covid_mtl_val_stats = OutputStat("score", self._lambdas(context), default=float("-inf"))
        return {"val_score": context.covid_mtl_val_stats}

    def val_additional_metrics(self, context: Context):
        lambdas = self._lambdas(context)
        return {"val_dice": OutputStat("dice", lambdas), "val_covid_auc": OutputStat("covid_auc", lambdas),
                "val_accuracy": OutputStat("accuracy", lambdas),
                "val_covid_accuracy": OutputStat("covid_accuracy", lambdas), "val_loss": OutputStat("loss", lambdas)}

    def train_pre_transforms(self, context: Context):
        return None

    def train_post_transforms(self, context: Context):
        return None

    def val_inferer(self, context: Context):
        return None

    def train_handlers(self, context: Context):
        handlers = [StatsHandler(tag_name="train_loss", output_transform=lambda output: float(output["loss"]))]
        if context.evaluator:
            from monai.handlers import ValidationHandler

            handlers.append(ValidationHandler(self._val_interval, validator=context.evaluator, epoch_level=True))
        return handlers if context.local_rank == 0 else handlers[1:]

    def val_handlers(self, context: Context):
        return [StatsHandler(output_transform=lambda x: None, iteration_log=False)] if context.local_rank == 0 else []

    def _create_evaluator(self, context: Context):
        if not context.val_datalist:
            return None
        return SupervisedEvaluator(
            device=context.device,
            val_data_loader=self.val_data_loader(context),
            network=context.network,
            key_val_metric=self.val_key_metric(context),
            additional_metrics=self.val_additional_metrics(context),
            val_handlers=self.val_handlers(context),
            iteration_update=make_eval_iteration(self.loss_function(context)),
            amp=self._amp,
            decollate=False,
        )

    def _create_trainer(self, context: Context):
        return SupervisedTrainer(
            device=context.device,
            max_epochs=context.max_epochs,
            train_data_loader=self.train_data_loader(context),
            network=context.network,
            optimizer=context.optimizer,
            loss_function=self.loss_function(context),
            key_train_metric=self.train_key_metric(context),
            additional_metrics=self.train_additional_metrics(context),
            train_handlers=self.train_handlers(context),
            iteration_update=make_train_iteration(self.loss_function(context)),
            amp=self._amp,
            decollate=False,
        )

    # ----- publishing -------------------------------------------------------------------------------------
    def finalize(self, context: Context) -> None:
        super().finalize(context)  # train stats after every epoch + early stopping on the validation Dice
        if context.local_rank != 0:
            return
        watched = context.evaluator or context.trainer

        def publish(engine) -> None:
            if engine.state.best_metric_epoch == engine.state.epoch or context.evaluator is None:
                self._publish(context, engine)

        watched.add_event_handler(Events.EPOCH_COMPLETED, publish)

    def _publish(self, context: Context, engine) -> None:
        meta = {
            "trained_by": "monailabel",
            "run_id": context.run_id,
            "epoch": context.trainer.state.epoch,
            "metric": engine.state.key_metric_name,
            "best_metric": float(engine.state.best_metric),
            "images": len(context.datalist),
        }
        val_stats = getattr(context, "covid_mtl_val_stats", None)
        if val_stats is not None and "cls" in _unwrap(context.network).tasks:
            meta["decision"] = validated_decision(getattr(context, "covid_mtl_trained", []), val_stats.stats).as_meta()
        save_checkpoint(self.published_path, _unwrap(context.network), meta=meta)
        logger.info(f"covid_mtl: published model (epoch {meta['epoch']}, {meta['metric']}={meta['best_metric']:.4f})")

    def _load_checkpoint(self, context: Context, train_handlers) -> None:
        """Weights come from ``network()`` (our checkpoint format), not from MONAI Label's CheckpointLoader."""
