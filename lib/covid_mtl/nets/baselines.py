"""Baselines the paper compares against, with the multi-task net's forward-dict interface.

* ``UNetBaseline`` (experiment 2): a plain 2D U-Net for segmentation only — MONAI's ``BasicUNet`` (max-pool
  downsampling, four levels, ``features`` = six widths), returning ``{"seg_logits": ...}``.
* ``CNNClassifier`` (experiment 3): the 8-layer CNN — six 3x3 conv layers (8 -> 256 filters in the paper) each
  followed by ELU, 2x2 max-pool and dropout 0.25, then flatten, dense 128 (ELU, dropout 0.5) and dense 3
  logits (sigmoid -> P(covid), P(normal), P(other)). Returns ``{"cls_logits": ...}``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from .config import ModelConfig, parse_tasks
from .network import check_heads
from ..errors import CovidMTLError


class UNetBaseline(nn.Module):
    """Segmentation-only U-Net (MONAI BasicUNet, 2D, one input and one output channel)."""

    def __init__(self, config: ModelConfig, tasks: Sequence[str] | None = None):
        super().__init__()
        self.config = config
        self.tasks = parse_tasks(tasks, config)
        if len(config.features) != 6:
            raise CovidMTLError(f"config {config.name!r}: BasicUNet needs six widths, got {config.features}")
        self.unet = BasicUNet(spatial_dims=2, in_channels=config.in_channels, out_channels=1,
                              features=config.features, norm=(config.norm, {"affine": True}))

    def forward(self, x: torch.Tensor, heads: Sequence[str] | None = None) -> dict[str, torch.Tensor]:

        check_heads(self, heads)
        return {"seg_logits": self.unet(x)}


class CNNClassifier(nn.Module):
    """Six conv layers (conv, ELU, max-pool, dropout 0.25), dense layers, class logits."""

    def __init__(self, config: ModelConfig, tasks: Sequence[str] | None = None):
        super().__init__()
        self.config = config
        self.tasks = parse_tasks(tasks, config)
        pools = len(config.features)
        if config.image_size % 2 ** pools:
            raise CovidMTLError(f"config {config.name!r}: image size must be a multiple of {2 ** pools}")
        layers: list[nn.Module] = []
        previous = config.in_channels
        for width in config.features:
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ELU(), nn.MaxPool2d(2), nn.Dropout(0.25)]
            previous = width
        layers.append(nn.Flatten())
        previous *= (config.image_size // 2 ** pools) ** 2
        for width in config.cls_dense:
            layers += [nn.Linear(previous, width), nn.ELU(), nn.Dropout(config.dropout)]
            previous = width
        layers.append(nn.Linear(previous, config.num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, heads: Sequence[str] | None = None) -> dict[str, torch.Tensor]:

        check_heads(self, heads)
        if x.shape[-2:] != (self.config.image_size,) * 2:
            raise CovidMTLError(f"classifier expects {self.config.image_size}^2 slices, got {tuple(x.shape)}")
        return {"cls_logits": self.layers(x)}
