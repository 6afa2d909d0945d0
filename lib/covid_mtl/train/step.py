"""The one multi-task step: batch -> outputs -> partial-label loss (-> backward, optimizer step).

``make_train_iteration`` and ``make_eval_iteration`` return the ``iteration_update`` callables for MONAI's ignite
engines (``SupervisedTrainer`` / ``SupervisedEvaluator``), which ``covid_mtl.train.engine`` builds for both the CLI
training loop and the MONAI Label train task, so there is one way of training. They use the engine's ``network``,
``optimizer``, ``state.device``, ``amp`` and ``scaler`` and fire MONAI's
``IterationEvents`` like MONAI's own iteration, so MONAI handlers (stats, checkpoints, decollation) keep working.

The returned ``engine.state.output`` has MONAI's keys — ``image``, ``label`` (lesion mask), ``pred`` (lesion
logits, when the model segments), ``loss`` (scalar tensor) — plus ``cls_logits``, ``cls_target``, ``cls_weight``,
``has_mask`` and per-term floats ``loss_recon`` / ``loss_seg`` / ``loss_cls`` (0.0 when the term had no labels)
with ``weight_<task>`` (1.0 or 0.0) and ``count_<task>``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from sklearn.metrics import roc_auc_score
from monai.engines.workflow import Workflow
from torch import nn

from .losses import LossResult, MultiTaskLoss
from .selection import selection_score

def to_device(batch: Mapping[str, Any], device: torch.device | str, non_blocking: bool = False) -> dict[str, torch.Tensor]:
    """The tensors a step needs, on ``device`` (missing label keys become "no label")."""
    image = torch.as_tensor(batch["image"]).float()
    n = image.shape[0]
    defaults = {
        "mask": lambda: torch.zeros_like(image),
        "has_mask": lambda: torch.zeros(n),
        "cls_target": lambda: torch.zeros(n, 3),
        "cls_weight": lambda: torch.zeros(n, 3),
    }
    out = {"image": image}
    for key, default in defaults.items():
        out[key] = torch.as_tensor(batch[key]).float() if key in batch else default()
    return {k: v.to(device, non_blocking=non_blocking) for k, v in out.items()}


def autocast(device: torch.device | str, amp: bool):
    """Mixed precision on CUDA only (CPU autocast would slow the convolutions down)."""
    device = torch.device(device)
    return torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else nullcontext()


def forward_loss(model: nn.Module, loss_fn: MultiTaskLoss, batch: Mapping[str, torch.Tensor],
                 amp: bool = False) -> tuple[dict[str, torch.Tensor], LossResult]:
    """Run the heads the loss needs on a device batch (from ``to_device``) and compute the loss."""
    with autocast(batch["image"].device, amp):
        outputs = model(batch["image"], heads=loss_fn.tasks)
    return outputs, loss_fn(outputs, batch)


def train_mode(model: nn.Module) -> None:
    """Training mode, except what ``engine.freeze_parts`` froze in a fine-tuned model: frozen parts, and with
    ``frozen_norm`` every batch-norm layer, stay in evaluation mode and keep the statistics the model learnt on its
    whole training set, which a round on a handful of corrections would otherwise overwrite (measured: that
    alone, with no weight moving, cost 0.035 validation Dice; ``bench.loop_steps``)."""
    model.train()
    inner = getattr(model, "module", model)  # DDP wraps the network
    for part in getattr(inner, "frozen_modules", ()):
        part.eval()
    if getattr(inner, "frozen_norm", False):
        for layer in inner.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()


def train_step(model: nn.Module, loss_fn: MultiTaskLoss, optimizer: torch.optim.Optimizer,
               batch: Mapping[str, torch.Tensor], scaler: torch.amp.GradScaler | None = None,
               amp: bool = False) -> tuple[dict[str, torch.Tensor], LossResult]:
    """One optimisation step on a device batch; returns outputs and the loss (before the update)."""
    train_mode(model)
    optimizer.zero_grad(set_to_none=True)
    outputs, result = forward_loss(model, loss_fn, batch, amp)
    if scaler is not None:
        scaler.scale(result.total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        result.total.backward()
        optimizer.step()
    return outputs, result


def step_output(batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor], result: LossResult) -> dict:
    """``engine.state.output`` for one iteration (keys in the module docstring)."""
    out: dict[str, Any] = {
        "image": batch["image"],
        "label": batch["mask"],
        "has_mask": batch["has_mask"],
        "cls_target": batch["cls_target"],
        "cls_weight": batch["cls_weight"],
        "loss": result.total.detach(),
    }
    if "seg_logits" in outputs:
        out["pred"] = outputs["seg_logits"].detach().float()
    if "cls_logits" in outputs:
        out["cls_logits"] = outputs["cls_logits"].detach().float()
    for task, value in result.terms.items():
        out[f"loss_{task}"] = value
        out[f"weight_{task}"] = result.weights[task]
        out[f"count_{task}"] = result.counts[task]
    return out


def _fire(engine: Any, event: IterationEvents) -> None:
    if isinstance(engine, Workflow):  # MONAI engines register IterationEvents; a bare ignite Engine does not
        engine.fire_event(event)


def make_train_iteration(loss_fn: MultiTaskLoss) -> Callable[[Any, Mapping[str, Any]], dict]:
    """``iteration_update`` for ``SupervisedTrainer``: one ``train_step`` with the engine's network/optimizer."""

    def iteration(engine: Any, batchdata: Mapping[str, Any]) -> dict:
        batch = to_device(batchdata, engine.state.device, getattr(engine, "non_blocking", False))
        amp = bool(getattr(engine, "amp", False))
        outputs, result = train_step(engine.network, loss_fn, engine.optimizer, batch,
                                     scaler=getattr(engine, "scaler", None) if amp else None, amp=amp)
        engine.state.output = step_output(batch, outputs, result)
        for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
                      IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED):
            _fire(engine, event)
        return engine.state.output

    return iteration


def make_eval_iteration(loss_fn: MultiTaskLoss) -> Callable[[Any, Mapping[str, Any]], dict]:
    """``iteration_update`` for ``SupervisedEvaluator``: forward + loss in eval mode, no gradients."""

    def iteration(engine: Any, batchdata: Mapping[str, Any]) -> dict:
        batch = to_device(batchdata, engine.state.device, getattr(engine, "non_blocking", False))
        engine.network.eval()
        with torch.no_grad():
            outputs, result = forward_loss(engine.network, loss_fn, batch, bool(getattr(engine, "amp", False)))
        engine.state.output = step_output(batch, outputs, result)
        for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.MODEL_COMPLETED):
            _fire(engine, event)
        return engine.state.output

    return iteration


class EpochStats:
    """Accumulates step outputs into epoch numbers: count-weighted mean of each loss term, their
    lambda-weighted sum ``loss``, global Dice over annotated slices (threshold 0.5), ``covid_accuracy`` (at 0.5)
    and ``covid_auc`` over slices whose P(covid) is supervised, 3-class ``accuracy`` (argmax over slices with a full
    label; None unless at least two classes occur among them, where it would only count one class) and ``score``,
    the model-selection score (``covid_mtl.train.selection``). Takes the un-decollated output dict (engines built
    with ``decollate=False``)."""

    def __init__(self, lambdas: Mapping[str, float]):
        self.lambdas = dict(lambdas)
        self.reset()

    def reset(self) -> None:
        self.sums = {t: 0.0 for t in self.lambdas}
        self.counts = {t: 0 for t in self.lambdas}
        self.dice_inter = self.dice_total = 0.0
        self.annotated = 0
        self.correct = self.labelled = self.covid_correct = self.covid_labelled = 0
        self.classes_seen: set[int] = set()
        self.covid_scores: list[np.ndarray] = []
        self.covid_truth: list[np.ndarray] = []

    def attach(self, engine: Workflow, reset_on: Any) -> None:
        """Collect ``engine``'s step outputs, starting afresh at the event ``reset_on``."""
        engine.add_event_handler(reset_on, lambda _: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self.update(e.state.output))

    def update(self, output: Mapping[str, Any]) -> None:
        for task in self.lambdas:
            count = int(output.get(f"count_{task}", 0))
            if count:
                self.sums[task] += float(output[f"loss_{task}"]) * count
                self.counts[task] += count
        has_mask = output["has_mask"].reshape(-1) > 0
        if "pred" in output and bool(has_mask.any()):
            pred = (output["pred"][has_mask] > 0).float()  # logit > 0 <=> probability > 0.5
            truth = output["label"][has_mask].float()
            self.dice_inter += float((pred * truth).sum())
            self.dice_total += float(pred.sum() + truth.sum())
            self.annotated += int(has_mask.sum())
        if "cls_logits" in output:
            weight, target, logits = output["cls_weight"], output["cls_target"], output["cls_logits"]
            full = weight.min(dim=1).values > 0
            self.correct += int((logits[full].argmax(1) == target[full].argmax(1)).sum())
            self.labelled += int(full.sum())
            self.classes_seen.update(int(c) for c in target[full].argmax(1).tolist())
            covid = weight[:, 0] > 0
            self.covid_correct += int(((logits[covid, 0] > 0).float() == target[covid, 0]).sum())
            self.covid_labelled += int(covid.sum())
            self.covid_scores.append(logits[covid, 0].detach().float().cpu().numpy())
            self.covid_truth.append(target[covid, 0].detach().float().cpu().numpy())

    def merge(self, other: "EpochStats") -> None:
        """Add another collection of the same epoch (another process's share of it under DDP)."""
        for task in self.lambdas:
            self.sums[task] += other.sums[task]
            self.counts[task] += other.counts[task]
        for name in ("dice_inter", "dice_total", "annotated", "correct", "labelled", "covid_correct",
                     "covid_labelled"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.classes_seen |= other.classes_seen
        self.covid_scores += other.covid_scores
        self.covid_truth += other.covid_truth

    def compute(self) -> dict[str, float | None]:
        terms = {t: self.sums[t] / self.counts[t] if self.counts[t] else None for t in self.lambdas}
        stats: dict[str, float | None] = {f"loss_{t}": v for t, v in terms.items()}
        stats["loss"] = sum(self.lambdas[t] * v for t, v in terms.items() if v is not None)
        # no lesion predicted on annotated slices that have none is a perfect score, not an undefined one
        stats["dice"] = (2 * self.dice_inter / self.dice_total if self.dice_total else 1.0) if self.annotated else None
        stats["accuracy"] = self.correct / self.labelled if self.labelled and len(self.classes_seen) >= 2 else None
        stats["covid_accuracy"] = self.covid_correct / self.covid_labelled if self.covid_labelled else None
        stats["covid_auc"] = self.covid_auc()
        stats["score"] = selection_score(stats)
        return stats

    def covid_auc(self) -> float | None:
        """COVID-vs-rest ROC AUC of the supervised slices (logits rank like probabilities), None with one class."""
        if not self.covid_scores:
            return None
        truth, scores = np.concatenate(self.covid_truth), np.concatenate(self.covid_scores)
        if truth.size == 0 or truth.min() == truth.max():  # empty: batches came, none with P(covid) supervised
            return None
        return float(roc_auc_score(truth > 0.5, scores))

    def covid_scores_and_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """P(covid) and 0/1 truth of the supervised slices seen (for the decision threshold)."""
        if not self.covid_scores:
            return np.zeros(0), np.zeros(0)
        logits = np.concatenate(self.covid_scores)
        return 1.0 / (1.0 + np.exp(-logits)), np.concatenate(self.covid_truth)
