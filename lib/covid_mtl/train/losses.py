"""The global multi-task loss with partial labels (Amyar et al. 2020, eq. 4: L = L_rec + L_seg + L_cls).

* ``recon``: MSE between the reconstruction and the (normalised) input — every image supervises it.
* ``seg``: soft Dice (MONAI ``DiceLoss`` on sigmoid(logits), smoothed, pooled over the batch) — only images that
  come with a lesion mask (``has_mask``); an all-zero mask of an annotated slice *is* a label ("no lesion").
* ``cls``: binary cross-entropy per sigmoid output, weighted by a per-output target mask ``cls_weight``
  (B, 3): 1 where the output is supervised. A ``covid``/``normal``/``other`` label supervises all three outputs
  (one-hot); ``non-covid`` supervises only P(covid) (target 0); unknown supervises none.

A term whose labels are all missing in the batch gets weight 0 exactly (and value 0), so a batch of unlabelled
images trains only what it can. The result carries each term's value and weight for logging.

Batch keys (see ``covid_mtl.train.samples``): ``image`` (B,1,H,W) in [0,1], ``mask`` (B,1,H,W) in {0,1}, ``has_mask`` (B,),
``cls_target`` (B,C), ``cls_weight`` (B,C).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from ..nets.config import TASKS


@dataclass
class LossResult:
    """``total`` (scalar, differentiable); ``terms`` per-task values; ``weights`` 1.0 or 0.0 per task;
    ``counts`` labelled samples (recon, seg) or supervised outputs (cls) per task."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class MultiTaskLoss(nn.Module):
    """``loss(outputs, batch) -> LossResult`` for the heads in ``tasks``; ``lambdas`` scale the terms (default 1)."""

    def __init__(self, tasks: Sequence[str] = TASKS, lambdas: Mapping[str, float] | None = None,
                 dice_smooth: float = 1.0):
        super().__init__()
        self.tasks = tuple(t for t in TASKS if t in tasks)
        self.lambdas = {t: 1.0 for t in self.tasks} | dict(lambdas or {})
        # batch=True pools the Dice over all annotated slices of the batch, so slices with an empty mask
        # do not each give a 0-or-1 loss; the smoothing keeps the gradient finite when all are empty.
        self.dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=dice_smooth, smooth_dr=dice_smooth)

    def forward(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> LossResult:
        # start from 0 * outputs so the total stays connected to the graph even when every term is off
        total = sum(o.float().sum() * 0.0 for o in outputs.values())
        result = LossResult(total=total)
        for task in self.tasks:
            value, count = getattr(self, f"_{task}")(outputs, batch)
            weight = self.lambdas[task] if count > 0 else 0.0
            if count > 0:
                result.total = result.total + weight * value
            result.terms[task] = float(value.detach()) if count > 0 else 0.0
            result.weights[task] = float(weight)
            result.counts[task] = int(count)
        return result

    def _recon(self, outputs, batch) -> tuple[torch.Tensor, int]:
        image = batch["image"]
        return F.mse_loss(outputs["recon"].float(), image.float()), image.shape[0]

    def _seg(self, outputs, batch) -> tuple[torch.Tensor, int]:
        labelled = batch["has_mask"].reshape(-1) > 0
        count = int(labelled.sum())
        if count == 0:
            return outputs["seg_logits"].new_zeros(()), 0
        return self.dice(outputs["seg_logits"][labelled].float(), batch["mask"][labelled].float()), count

    def _cls(self, outputs, batch) -> tuple[torch.Tensor, int]:
        weight = batch["cls_weight"].float()
        count = int((weight > 0).sum())
        if count == 0:
            return outputs["cls_logits"].new_zeros(()), 0
        bce = F.binary_cross_entropy_with_logits(outputs["cls_logits"].float(), batch["cls_target"].float(),
                                                 reduction="none")
        return (bce * weight).sum() / weight.sum(), count
